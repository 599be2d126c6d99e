"""Does synthetic data help? Rows trained on the *real* training defects (issue 14).

The question an engineer asks before adopting synthetic defects is not Table 4's (a classifier
trained on synthetic defects only) but: *I have a dozen real defective parts — if I add
synthetic ones, does my inspection model get better?* So next to Table 4's rows the studies
train, with the same defect-free images, budget, augmentation, class balancing and model
selection:

``Real defects (reference)``   the real training defects only (no synthetic image);
``Real + <generator> ×r``      the same real defects plus N = r · n synthetic ones of one
                               generator (n: the real training defects), N limited by what the
                               generator can make (an image-to-image model makes at most 4
                               distinct images per source, its flips) — never by repeating one;
``Real defects (k=…)``         with fewer real defects (``real.counts``): the generator retrained
``Real (k=…) + <generator> ×r`` on exactly those k defects (the data-efficiency curve).

Which real defects (``split_real``): the GAN's training defects (``split.donors``) — under
protocol=clean never a test defect. Sorted by name, the last ⌈val · n⌉ validate every real row
(the defect half of the fixed validation set: early stopping sees the same images in every real
row), the rest train; a reduced set takes the first k of those. ``check_real_rows`` stops a run
whose real defects include a test image or an image the generator was not trained on.

Under protocol=paper the test set holds every real defect, so a real row would be tested on its
own training images: the rows are not made there (the tables say so).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectsynth.data.mvtec import DefectSample
from defectsynth.errors import DataError
from defectsynth.inspection.metrics import format_interval, seed_interval
from defectsynth.inspection.sources import SyntheticSet, slug
from defectsynth.inspection.splits import InspectionSplit

REFERENCE = "Real defects (reference)"
REAL_ONLY = "Real defects only"  # the curve's line of the reference rows
PANELS = {
    "synthetic": "synthetic defects added to all real training defects",
    "real": "real training defects (generator retrained on them)",
}


@dataclass(frozen=True)
class RealDefects:
    """The real defects of the real rows: ``train`` (in the training set) and ``val`` (in the
    validation set of every real row)."""

    train: tuple[DefectSample, ...]
    val: tuple[DefectSample, ...]

    def names(self) -> dict[str, list[str]]:
        return {
            "real.train": [str(s.image) for s in self.train],
            "real.val": [str(s.image) for s in self.val],
        }


def split_real(donors: Sequence[DefectSample], val_fraction: float) -> RealDefects:
    """The GAN's training defects sorted by name: the last ⌈val_fraction · n⌉ validate (none
    when n = 1; at least one training defect stays), the rest train."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"real.val={val_fraction}; expected a fraction in [0, 1)")
    ordered = sorted(donors, key=lambda s: str(s.image))
    n = len(ordered)
    if n == 0:
        raise DataError("the generator has no real training defect: no real row can be made")
    n_val = min(math.ceil(round(val_fraction * n, 9)), n - 1)
    return RealDefects(tuple(ordered[: n - n_val]), tuple(ordered[n - n_val :]))


def reduced(real: RealDefects, k: int) -> RealDefects:
    """The first ``k`` real training defects (by name), with the same validation defects: what
    a generator trained with ``data.defect_train_limit=k`` saw."""
    return RealDefects(real.train[:k], real.val)


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def check_real_rows(
    real: RealDefects, split: InspectionSplit, where: str, trained: Sequence[DefectSample]
) -> None:
    """Stop when a real row's defects include a test image (a real test defect or a
    defect-free test image), a training defect its generator was not trained on (``trained``:
    the generator's training defects), a validation defect that is not one of the GAN's
    training defects (``split.donors``), or one image on both sides."""
    forbidden = {_resolved(s.image) for s in split.defect_test}
    forbidden |= {_resolved(p) for p in split.normal_test}
    train = [_resolved(s.image) for s in real.train]
    val = [_resolved(s.image) for s in real.val]
    leaked = sorted({p for p in (*train, *val) if p in forbidden})
    if leaked:
        raise DataError(
            f"{where}: {len(leaked)} test image(s) would train or validate a real-defect row "
            f"(e.g. {leaked[0]}): the real rows may only use the GAN's training defects, never "
            "a test image. This is a bug in the study; please report it."
        )
    allowed = {_resolved(s.image) for s in trained}
    donors = {_resolved(s.image) for s in split.donors}
    foreign = sorted({p for p in train if p not in allowed} | {p for p in val if p not in donors})
    if foreign:
        raise DataError(
            f"{where}: {len(foreign)} real defect(s) of a real row are not training defects of "
            f"its generator (e.g. {foreign[0]}), so real and synthetic rows would not rest on "
            "the same information."
        )
    both = sorted(set(train) & set(val))
    if both:
        raise DataError(f"{where}: {both[0]} is both a training and a validation defect")


def distinct_first(sources: Sequence[str]) -> list[int]:
    """Item order in which every source image comes once before any comes twice (its flip
    variants, further codes): the first N items are as varied as N items of the set can be.
    Items without a source (latent samples) are each their own."""
    seen: dict[str, int] = {}
    keyed = []
    for index, source in enumerate(sources):
        name = source or f"#item{index}"
        keyed.append((seen.get(name, 0), index))
        seen[name] = seen.get(name, 0) + 1
    return [index for _, index in sorted(keyed)]


@dataclass
class RealMix:
    """One real row: ``real.train`` plus the items ``items`` of ``synthetic`` (none for the
    reference), validated on the defect-free validation images and ``real.val``."""

    title: str
    line: str  # the curve's line: REAL_ONLY or the generator's title
    real: RealDefects
    synthetic: SyntheticSet | None = None
    items: tuple[int, ...] = ()
    ratio: int = 0
    requested: int = 0  # ratio · n real training defects
    k: int | None = None  # a reduced real set (None: all real training defects)
    # the training defects of the generator(s) the row is compared with: the real defects
    # must be among them (``check_real_rows``)
    trained: tuple[DefectSample, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # e.g. why fewer synthetic items than requested

    @property
    def key(self) -> str:
        return slug(self.title)

    @property
    def n_real(self) -> int:
        return len(self.real.train)

    @property
    def n_synthetic(self) -> int:
        return len(self.items)


def mix_title(generator: str | None, ratio: int, k: int | None) -> str:
    if generator is None:
        return REFERENCE if k is None else f"Real defects (k={k})"
    real = "Real" if k is None else f"Real (k={k})"
    return f"{real} + {generator} ×{ratio}"


def make_mixes(
    real: RealDefects,
    pools: Sequence[tuple[SyntheticSet, str]],
    ratios: Sequence[int],
    base: Mapping[str, Any],
    trained: Sequence[DefectSample],
    k: int | None = None,
) -> list[RealMix]:
    """The reference row and, per pool (its set and what limits its size, for the note), one
    row per positive ratio: the first ``ratio · n`` items in ``distinct_first`` order. A ratio
    the pool cannot fill takes every item it has, says so, and is left out when a smaller
    ratio already took them all. ``trained``: the generators' training defects."""
    names = real.names()
    trained = tuple(trained)
    mixes = [
        RealMix(
            mix_title(None, 0, k),
            REAL_ONLY,
            real,
            k=k,
            trained=trained,
            settings={**base, **names, "real.k": k, "real.ratio": 0, "real.synthetic": None},
        )
    ]
    n = len(real.train)
    for pool, limit_text in pools:
        order = distinct_first(pool.sources)
        taken = -1
        for ratio in sorted({int(r) for r in ratios if int(r) > 0}):
            requested = ratio * n
            items = tuple(order[:requested])
            if len(items) == taken:  # a smaller ratio already took every item there is
                continue
            taken = len(items)
            note = ""
            if len(items) < requested:
                note = (
                    f"{len(items)} of the {requested} requested: {limit_text or 'all there are'}"
                    "; no image is repeated"
                )
            mixes.append(
                RealMix(
                    mix_title(pool.title, ratio, k),
                    pool.title,
                    real,
                    pool,
                    items,
                    ratio,
                    requested,
                    k,
                    trained,
                    {
                        **pool.settings,
                        **names,
                        "real.k": k,
                        "real.ratio": ratio,
                        "real.synthetic": str(pool.folder),
                        "real.items": len(items),
                    },
                    note,
                )
            )
    return mixes


# ------------------------------------------------------------------------------ curve
@dataclass(frozen=True)
class CurvePoint:
    network: str
    product: str
    panel: str  # "synthetic" (x: synthetic defects added) or "real" (x: real defects)
    line: str
    x: int
    title: str  # the row it comes from
    mean: float | None
    interval: list[float] | None  # over seeds (Student t)
    values: tuple[float | None, ...]  # per seed


def _entry(summary: Mapping[str, Any], key: str) -> tuple[float | None, list[Any]]:
    entry = summary.get(key)
    if not isinstance(entry, dict) or entry.get("mean") is None:
        return None, []
    return float(entry["mean"]), list(entry.get("values", []))


def curve_points(
    mixes: Sequence[RealMix],
    summaries: Mapping[str, Mapping[str, Any]],
    network: str,
    product: str,
    metric: str,
    level: float,
    count_ratio: int,
) -> list[CurvePoint]:
    """The plotted points of one network and product: ``summaries`` maps a row title to its
    summary over seeds. Panel "synthetic": every generator's line from the reference (x = 0)
    through its ratios at all real defects; panel "real" (when reduced sets ran): the reference
    and each generator at ``count_ratio`` against the number of real training defects."""
    points = []

    def point(mix: RealMix, panel: str, line: str, x: int) -> None:
        summary = summaries.get(mix.title)
        if summary is None:
            return
        mean, values = _entry(summary, metric)
        points.append(
            CurvePoint(
                network,
                product,
                panel,
                line,
                x,
                mix.title,
                mean,
                seed_interval(values, level),
                tuple(values),
            )
        )

    full = [m for m in mixes if m.k is None]
    reference = next((m for m in full if m.synthetic is None), None)
    lines = list(dict.fromkeys(m.line for m in full if m.synthetic is not None))
    for line in lines:
        if reference is not None:
            point(reference, "synthetic", line, 0)
        for mix in full:
            if mix.line == line:
                point(mix, "synthetic", line, mix.n_synthetic)
    if any(m.k is not None for m in mixes):
        for mix in mixes:
            if mix.synthetic is None:
                point(mix, "real", REAL_ONLY, mix.n_real)
            elif mix.ratio == count_ratio:
                point(mix, "real", f"Real + {mix.line} ×{count_ratio}", mix.n_real)
    return points


def plot_curves(
    points: Sequence[CurvePoint],
    path: Path,
    title: str,
    metric_title: str,
    baselines: Mapping[tuple[str, str], float] | None = None,
) -> Path:
    """One PNG: a row of panels per network ("synthetic", then "real" when it has points),
    every line with its mean over seeds and a band of the seed interval; ``baselines`` adds,
    per (network, generator), the synthetic-only row of Table 4 as a dotted level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(dict.fromkeys(p.network for p in points))
    panels = [k for k in PANELS if any(p.panel == k for p in points)]
    if not networks or not panels:
        raise ValueError("no curve points to plot")
    fig, axes = plt.subplots(
        len(networks),
        len(panels),
        figsize=(5.2 * len(panels), 3.8 * len(networks)),
        squeeze=False,
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, network in enumerate(networks):
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            chosen = [p for p in points if p.network == network and p.panel == panel]
            lines = list(dict.fromkeys(p.line for p in chosen))
            reference = next((p for p in chosen if p.x == 0 and p.mean is not None), None)
            if panel == "synthetic" and reference is not None:
                # the level every generator's line must beat: the real defects alone
                assert reference.mean is not None
                ax.axhline(
                    reference.mean, color="black", linestyle="--", linewidth=1, label=REAL_ONLY
                )
                if reference.interval is not None:
                    ax.axhspan(*reference.interval, color="black", alpha=0.06, linewidth=0)
            for i, line in enumerate(lines):
                colour = colours[i % len(colours)]
                ordered = sorted((p for p in chosen if p.line == line), key=lambda p: p.x)
                xs = [p.x for p in ordered if p.mean is not None]
                ys = [p.mean for p in ordered if p.mean is not None]
                ax.plot(xs, ys, marker="o", color=colour, label=line)
                banded = [p for p in ordered if p.mean is not None and p.interval is not None]
                if banded:
                    ax.fill_between(
                        [p.x for p in banded],
                        [p.interval[0] for p in banded if p.interval],
                        [p.interval[1] for p in banded if p.interval],
                        color=colour,
                        alpha=0.15,
                        linewidth=0,
                    )
                level = (baselines or {}).get((network, line)) if panel == "synthetic" else None
                if level is not None:
                    ax.axhline(
                        level,
                        color=colour,
                        linestyle=":",
                        linewidth=1,
                        label=f"{line} only (no real defect)",
                    )
            if panel == "real":
                ax.set_xscale("log", base=2)
                ticks = sorted({p.x for p in chosen})
                ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.set(
                xlabel=PANELS[panel].capitalize(),
                ylabel=metric_title,
                title=f"{network}",
                ylim=(-0.02, 1.02),
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("\n".join(textwrap.wrap(title, 60 * len(panels))), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def interval_cell(mean: float | None, values: Sequence[Any], level: float, digits: int) -> str:
    """``mean [low, high]`` over seeds (the Student-t interval; just the mean for one seed)."""
    return format_interval(mean, seed_interval(values, level), 1.0, digits)


def spread(values: Sequence[float]) -> str:
    """A compact ``low–high`` of per-split counts."""
    low, high = int(np.min(values)), int(np.max(values))
    return str(low) if low == high else f"{low}–{high}"
