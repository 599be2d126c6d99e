"""Start-up decoding at scale (`make bench-decode`): thousands of large defect-free images.

Writes ``--n`` procedural defect-free JPEGs of ``--size``² (plus four defect images and their
masks, so it is a complete ``data=folder`` product), then runs ``DefectDataModule.setup()`` on
them in fresh subprocesses, as a training run starts:

- cold: an empty cache, every image decoded and resized (``data.decode_workers`` threads);
- warm: a second run, every array read back from the disk cache;
- optionally (``--serial``) a cold run with one thread, for the speed-up.

Each run reports its wall time, images/s and peak RSS (the subprocess's VmHWM, and its RSS
once torch/lightning are imported, before any image is decoded). The images are written just
before the cold run, so they are read from the page cache: the numbers measure decoding, not
the disk.

    python bench/decode_scale.py                          # 5,000 images of 2048²
    python bench/decode_scale.py --n 200 --dir /tmp/dec   # a quick check (images kept, reused)
    python bench/decode_scale.py --out    # and into bench/results/<date>-decode-scale.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
N_DEFECT = 4
# the image set is reused when a folder holds one made with the same settings
STAMP = "images.json"


# ----------------------------------------------------------------------------- images
def texture(size: int, seed: int) -> Image.Image:
    """A smooth shaded surface with fine grain and a few hundred specks: JPEG-compressible
    like a product photo, so files and decode times are realistic. Made from low-resolution
    noise upscaled in C, so one 2048² image costs tens of milliseconds, mostly the encoding."""
    rng = np.random.default_rng(seed)
    shading = rng.integers(70, 190, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(shading).resize((size, size), Image.Resampling.BICUBIC)
    grain = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    grain_image = Image.fromarray(grain).resize((size, size), Image.Resampling.BILINEAR)
    image = Image.blend(image, grain_image, 0.15)
    draw = ImageDraw.Draw(image)
    # 3x3 specks: big enough to survive the JPEG; drawn in C, no full-size numpy copy
    ys, xs = rng.integers(0, size - 3, (2, 300))
    for y, x, value in zip(ys, xs, rng.integers(0, 256, 300), strict=True):
        draw.rectangle((int(x), int(y), int(x) + 2, int(y) + 2), fill=(int(value),) * 3)
    return image


def write_normal(job: tuple[Path, int, int]) -> int:
    path, size, seed = job
    texture(size, seed).save(path, quality=90)
    return path.stat().st_size


def write_defect(folder: Path, size: int, index: int) -> None:
    image = np.array(texture(size, 10**6 + index))
    mask = np.zeros((size, size), np.uint8)
    top, left = size // 4 + 40 * index, size // 3
    mask[top : top + size // 8, left : left + size // 20] = 255
    image[mask > 0] = 30
    Image.fromarray(image).save(folder / "defect" / f"d{index:02d}.jpg", quality=90)
    Image.fromarray(mask).save(folder / "mask" / f"d{index:02d}_mask.png")


def make_images(folder: Path, n: int, size: int, processes: int) -> dict:
    """The product under ``folder`` (reused when already made with these settings)."""
    settings = {"n": n, "size": size, "quality": 90, "version": 1}
    stamp = folder / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("settings") == settings:
        made = json.loads(stamp.read_text())
        return {**made, "reused": True}
    for sub in ("normal", "defect", "mask"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True)
    start = time.perf_counter()
    jobs = [(folder / "normal" / f"{i:05d}.jpg", size, i) for i in range(n)]
    # processes, not threads: the numpy part of the texture holds the GIL
    with ProcessPoolExecutor(max_workers=processes) as pool:
        total_bytes = sum(pool.map(write_normal, jobs, chunksize=16))
    for index in range(N_DEFECT):
        write_defect(folder, size, index)
    made = {
        "settings": settings,
        "seconds": round(time.perf_counter() - start, 2),
        "mib_on_disk": round(total_bytes / 2**20, 1),
        "processes": processes,
    }
    stamp.write_text(json.dumps(made))
    return {**made, "reused": False}


# ----------------------------------------------------------------------------- one run
def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: the peak is all there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One start-up in this (fresh) process: print a JSON line of what it cost."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.path.insert(0, str(ROOT / "src"))
    from defectsynth.data.datamodule import DefectDataModule

    rss_import = rss_mib("VmRSS")
    folder = Path(args.dir)
    # image_size a multiple of 4 that load_scale brings back to exactly --load-size
    image_size = min(256, args.load_size) // 4 * 4
    dm = DefectDataModule(
        category="bench",
        defect="defect",
        folders={kind: str(folder / kind) for kind in ("normal", "defect", "mask")},
        image_size=image_size,
        load_scale=(args.load_size + 0.5) / image_size,
        num_workers=0,
        cache_dir=str(args.child),
        decode_workers=args.workers if args.workers == "auto" else int(args.workers),
    )
    start = time.perf_counter()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    assert dm.load_size == args.load_size and dm.split is not None
    arrays = list(dm.cache._memory.values())
    n_images = len(dm.split.normal_train) + len(dm.split.normal_test)
    # files: the defect-free images (train at --load-size, the last 10 % as test images at
    # image_size) plus the four defect images and their masks: n + 8
    result = {
        "seconds": round(seconds, 2),
        "files": len(arrays),
        "images_per_second": round(len(arrays) / seconds, 1),
        "decode_workers": dm.decode_workers,
        "normal_images": n_images,
        "cached_arrays_mib": round(sum(a.nbytes for a in arrays) / 2**20, 1),
        "rss_after_import_mib": round(rss_import, 1),
        "peak_rss_mib": round(rss_mib("VmHWM"), 1),
    }
    print(json.dumps(result), flush=True)


def run(args: argparse.Namespace, cache: Path, workers: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(cache)]
    command += ["--dir", str(args.dir), "--load-size", str(args.load_size)]
    command += ["--workers", workers]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"the decoding run failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="defect-free images (5000)")
    parser.add_argument("--size", type=int, default=2048, help="their side in pixels (2048)")
    parser.add_argument("--load-size", type=int, default=286, help="decoded shorter side (286)")
    parser.add_argument("--workers", default="auto", help="data.decode_workers (auto)")
    parser.add_argument("--dir", type=Path, help="image folder, kept and reused (default: temp)")
    parser.add_argument("--serial", action="store_true", help="also a cold run on one thread")
    parser.add_argument(
        "--out",
        type=Path,
        nargs="?",
        const=RESULTS / f"{dt.date.today().isoformat()}-decode-scale.json",
        help="write the JSON here too (no value: bench/results/<date>-decode-scale.json)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    if args.workers != "auto" and not args.workers.isdigit():
        parser.error(f"--workers {args.workers}: expected auto or a number")
    temporary = args.dir is None
    args.dir = Path(tempfile.mkdtemp(prefix="decode-scale-")) if temporary else args.dir
    args.dir.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        images = make_images(args.dir, args.n, args.size, cpus or 1)
        print(f"images: {json.dumps(images)}", file=sys.stderr)
        cache = args.dir / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        runs = {"cold": run(args, cache, args.workers)}
        print(f"cold: {json.dumps(runs['cold'])}", file=sys.stderr)
        runs["warm"] = run(args, cache, args.workers)
        print(f"warm: {json.dumps(runs['warm'])}", file=sys.stderr)
        if args.serial:
            shutil.rmtree(cache, ignore_errors=True)
            runs["cold_one_thread"] = run(args, cache, "1")
            print(f"cold_one_thread: {json.dumps(runs['cold_one_thread'])}", file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)
    finally:
        if temporary:
            shutil.rmtree(args.dir, ignore_errors=True)
    report = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"cpu{cpus}-{platform.machine()}",
        "n": args.n,
        "size": args.size,
        "load_size": args.load_size,
        "images": images,
        **runs,
    }
    if "cold_one_thread" in runs:
        report["speedup"] = round(runs["cold_one_thread"]["seconds"] / runs["cold"]["seconds"], 2)
    line = json.dumps(report)
    print(line)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
