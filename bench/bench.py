"""Speed and memory benchmark (`make bench`): a table, and bench/results/<date>-<machine>.json.

Measures, through the project's real code path (DataModule → DefectGAN → Lightning Trainer):
- training step time of the proposed model (full losses, ngf 64, 9 blocks) at 256² and 128²,
  batch 1 and 4, in the default precision, on CPU and, when present, on CUDA;
- the same step in a *reference-style mode*: every image decoded from its PNG and resized on
  every step, no cache, no workers, fp32 — what the authors' code and the CycleGAN loader do;
- the share of step time spent waiting for data, data-loader samples/s, synthesis images/s,
  peak RSS and CUDA max-allocated memory.

    python bench/bench.py              # everything this machine can run (< 10 min on 2 cores)
    python bench/bench.py --quick      # 128² only, a minute
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lightning as L
import torch

from defectsynth.config import fast_precision
from defectsynth.data.datamodule import DefectDataModule
from defectsynth.models.defect_gan import DefectGAN

RESULTS = Path(__file__).resolve().parent / "results"
# procedural tiles at MVTec's resolution, so decoding costs what it costs on real data
SPEC = {"image_size": 1024, "n_train_good": 12, "n_test_good": 8, "n_defect": 6}


@dataclass
class StepResult:
    name: str
    device: str
    size: int
    batch: int
    precision: str
    data: str
    seconds_per_step: float
    steps_per_second: float
    data_wait_fraction: float
    samples_per_second: float
    extra: dict = field(default_factory=dict)


class StepTimer(L.Callback):
    """Wall time of each training batch and of the wait for it (data loading + transfer)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.waits: list[float] = []
        self._end: float | None = None
        self._start = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()
        if self._end is not None:
            self.waits.append(self._start - self._end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._end = time.perf_counter()
        self.steps.append(self._end - self._start)


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def datamodule(cache_dir: Path, size: int, batch: int, reference: bool, workers: int):
    dm = DefectDataModule(
        "tile",
        "crack",
        image_size=size,
        batch_size=batch,
        num_workers=0 if reference else workers,
        cache_dir=str(cache_dir),
        procedural_spec=SPEC,
        cache_images=not reference,
        persistent_workers=True,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def train_steps(
    cache_dir: Path,
    device: str,
    size: int,
    batch: int,
    precision: str,
    reference: bool,
    steps: int,
    workers: int,
    compile: bool = False,
) -> StepResult:
    torch.manual_seed(0)
    dm = datamodule(cache_dir, size, batch, reference, workers)
    model = DefectGAN(compile=compile)
    warmup = 3 if compile else 1  # compiled graphs: one per call signature, then recompiles
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        precision=precision,
        max_epochs=100,
        # global_step counts optimizer steps: 4 per batch (G, D_X, D_Y, D_C)
        max_steps=4 * (steps + warmup),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    measured = timer.steps[warmup:]  # warm-up: one-off allocations, kernel choice, compiling
    seconds = median(measured)
    wait = median(timer.waits[warmup:]) if len(timer.waits) > warmup else 0.0
    return StepResult(
        name="reference-style" if reference else "defectsynth" + (" compiled" if compile else ""),
        device=device,
        size=size,
        batch=batch,
        precision=precision,
        data="decode every step, no workers" if reference else f"cached, {workers} workers",
        seconds_per_step=seconds,
        steps_per_second=1 / seconds,
        data_wait_fraction=wait / (seconds + wait),
        samples_per_second=batch / seconds,
    )


def loader_throughput(cache_dir: Path, size: int, workers: int, reference: bool) -> float:
    dm = datamodule(cache_dir, size, 4, reference, workers)
    loader = dm.train_dataloader()
    n, start = 0, None
    for epoch in range(6):
        loader.sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if start is None and i == 1:
                start, n = time.perf_counter(), 0
            n += batch["normal"].shape[0]
    return n / (time.perf_counter() - start)


def synthesis_throughput(device: str, size: int, precision: str, n: int = 16) -> float:
    model = DefectGAN().to(device).eval()
    x = torch.rand(8, 3, size, size, device=device) * 2 - 1
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    with torch.inference_mode(), autocast:
        model.synthesize(x[:2])
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n // 8):
            model.synthesize(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return n // 8 * 8 / (time.perf_counter() - start)


def plan(device: str, quick: bool) -> list[dict]:
    fast = fast_precision("gpu" if device == "cuda" else "cpu")
    sizes = (128,) if quick else (256, 128)
    steps = 30 if device == "cuda" else 3
    runs = []
    for size in sizes:
        runs.append(dict(size=size, batch=1, precision="32-true", reference=True, steps=steps))
        runs.append(dict(size=size, batch=1, precision="32-true", reference=False, steps=steps))
        if fast != "32-true":
            runs.append(dict(size=size, batch=1, precision=fast, reference=False, steps=steps))
        runs.append(dict(size=size, batch=4, precision=fast, reference=False, steps=steps))
    if not quick:  # torch.compile: one-off compile time, then faster steps
        runs.append(
            dict(size=256, batch=1, precision=fast, reference=False, steps=steps, compile=True)
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128² only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    started = time.perf_counter()
    results: list[StepResult] = []
    extra: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="defectsynth-bench-") as tmp:
        cache_dir = Path(tmp)
        datamodule(cache_dir, 128, 1, False, 0)  # generate the 1024 px procedural data once
        for device in devices:
            for run in plan(device, args.quick):
                result = train_steps(
                    cache_dir,
                    device,
                    run["size"],
                    run["batch"],
                    run["precision"],
                    run["reference"],
                    run["steps"],
                    args.workers,
                    run.get("compile", False),
                )
                results.append(result)
                print(
                    f"  {result.device:4s} {result.size}² b{result.batch} {result.precision:10s} "
                    f"{result.name:15s} {result.seconds_per_step:7.3f} s/step",
                    flush=True,
                )
            fast = fast_precision("gpu" if device == "cuda" else "cpu")
            extra[f"synthesis_images_per_s_{device}_256_{fast}"] = synthesis_throughput(
                device, 256, fast
            )
        for workers in (0, args.workers):
            extra[f"loader_samples_per_s_256_cached_{workers}w"] = loader_throughput(
                cache_dir, 256, workers, False
            )
        extra["loader_samples_per_s_256_decode_every_step_0w"] = loader_throughput(
            cache_dir, 256, 0, True
        )
    extra["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        extra["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    report = summarise(results, extra, time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{dt.date.today().isoformat()}-{machine_name()}.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"written to {args.out / name}")


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return f"cpu{os.cpu_count()}-{platform.machine()}"


def summarise(results: list[StepResult], extra: dict, seconds: float) -> dict:
    ratios = {}
    for ref in (r for r in results if r.name == "reference-style"):
        ours = [
            r
            for r in results
            if r.name.startswith("defectsynth")
            and r.device == ref.device
            and r.size == ref.size
            and r.batch == 1
        ]
        best = min(ours, key=lambda r: r.seconds_per_step)
        ratios[f"{ref.device}_{ref.size}_b1"] = {
            "ratio": ref.seconds_per_step / best.seconds_per_step,
            "reference_s": ref.seconds_per_step,
            "ours_s": best.seconds_per_step,
            "ours": f"{best.name}, {best.precision}",
        }
    gpu = [
        r
        for r in results
        if r.device == "cuda"
        and r.size == 256
        and r.batch == 1
        and r.name.startswith("defectsynth")
    ]
    full_run = None
    if gpu:
        best = min(gpu, key=lambda r: r.seconds_per_step)
        full_run = {"steps": 69_000, "minutes": 69_000 * best.seconds_per_step / 60}
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "bench_seconds": round(seconds, 1),
        "steps": [asdict(r) for r in results],
        "speedup_vs_reference": ratios,
        "full_tile_run_estimate": full_run,
        **extra,
    }


def table(report: dict) -> str:
    lines = [
        "| mode | device | size | batch | precision | data | s/step | steps/s | data wait |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["steps"]:
        lines.append(
            f"| {r['name']} | {r['device']} | {r['size']}² | {r['batch']} | {r['precision']} | "
            f"{r['data']} | "
            f"{r['seconds_per_step']:.3f} | {r['steps_per_second']:.2f} | "
            f"{100 * r['data_wait_fraction']:.1f} % |"
        )
    lines.append("")
    for key, r in report["speedup_vs_reference"].items():
        lines.append(
            f"speed-up vs reference-style mode ({key}): {r['ratio']:.2f}× "
            f"({r['reference_s']:.2f} s → {r['ours_s']:.2f} s, {r['ours']})"
        )
    for key, value in report.items():
        if key.startswith(("synthesis", "loader", "peak", "cuda_max")):
            lines.append(f"{key}: {value:.1f}")
    if report["full_tile_run_estimate"]:
        lines.append(
            f"full 300-epoch tile run (~69k steps): "
            f"{report['full_tile_run_estimate']['minutes']:.1f} min"
        )
    lines.append(f"benchmark wall time: {report['bench_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
