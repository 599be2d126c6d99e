"""Data splits of the inspection study and its two protocols. Pure functions, no torch.

The paper (Sec. 3, "Defect inspection analysis"): defect-free images 60/20/20 (train/val/test),
synthetic defective images 80/20/0, real defects 0/0/100. Its "always defect-free" accuracies
(75.71 % tile, 84.37 % wood, 84.61 % transistor) are exactly what a test pool of ⌈0.2·n⌉ of
train/good + test/good gives next to *all* real defect images (53/70, 54/64, 55/65), so:

* the defect-free pool is train/good + test/good of the product;
* test = ⌈f_test·n⌉ and val = ⌈f_val·n⌉ images of a seeded permutation, train = the rest.

Protocols:

``paper``  what the authors did: the real-defect test set is every defect image, including the
           ones the GAN was trained on, and synthetic defects are made from test/good images
           (the paper's Table 1 counts), whether or not they are in the classifier's test pool.
``clean``  (default) the real-defect test set is only the GAN's held-out defects
           (``defect_test``), and no synthetic image is made from a defect-free image of the
           classifier's test pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectsynth.data.mvtec import DefectSample, MVTecSplit
from defectsynth.errors import ConfigError, DataError

PROTOCOLS = ("clean", "paper")
# which defect-free images synthetic defects are made from (filtered by the protocol)
SOURCE_CHOICES = ("test_good", "train_good", "pool")
PROTOCOL_TEXT = {
    "clean": (
        "real-defect test set = the GAN's held-out defect images only; synthetic defects "
        "made only from defect-free images outside the classifier's test pool"
    ),
    "paper": (
        "the authors': real-defect test set = all real defect images, including the "
        "GAN's training ones; synthetic defects made from any defect-free image"
    ),
}


@dataclass(frozen=True)
class InspectionSplit:
    """Who is used where. Real defects appear only in ``defect_test`` (test) and ``donors``
    (the GAN's training defects, which the cut-paste baseline copies)."""

    protocol: str
    seed: int
    normal_train: tuple[Path, ...]
    normal_val: tuple[Path, ...]
    normal_test: tuple[Path, ...]
    defect_test: tuple[DefectSample, ...]
    donors: tuple[DefectSample, ...]
    synthesis_sources: tuple[Path, ...]

    def counts(self) -> dict[str, int]:
        return {
            "normal_train": len(self.normal_train),
            "normal_val": len(self.normal_val),
            "normal_test": len(self.normal_test),
            "defect_test": len(self.defect_test),
            "donors": len(self.donors),
            "synthesis_sources": len(self.synthesis_sources),
        }

    def to_json(self) -> dict:
        """Every file of every part, for ``splits.json`` (what exactly each number rests on)."""
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "counts": self.counts(),
            "normal_train": [str(p) for p in self.normal_train],
            "normal_val": [str(p) for p in self.normal_val],
            "normal_test": [str(p) for p in self.normal_test],
            "defect_test": [str(s.image) for s in self.defect_test],
            "donors": [str(s.image) for s in self.donors],
            "synthesis_sources": [str(p) for p in self.synthesis_sources],
        }


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r}; expected one of {list(PROTOCOLS)}")
    return protocol


def _ceil(fraction: float, n: int) -> int:
    # round first: 0.2 · 10 must give 2, not 3 through floating-point noise
    return math.ceil(round(fraction * n, 9))


def split_pool(
    paths: Sequence[Path], fractions: Sequence[float], seed: int
) -> tuple[tuple[Path, ...], tuple[Path, ...], tuple[Path, ...]]:
    """(train, val, test) of ``paths``: a seeded permutation of the name-sorted list, test and
    val ⌈f·n⌉ images each, train the rest. Independent of the order ``paths`` come in."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"split.normal={list(fractions)}; expected three fractions (train, val, test) that "
            "sum to 1, e.g. [0.6, 0.2, 0.2]"
        )
    ordered = sorted(dict.fromkeys(Path(p) for p in paths))
    n = len(ordered)
    n_test, n_val = _ceil(fractions[2], n), _ceil(fractions[1], n)
    if n - n_test - n_val < 1:
        raise DataError(
            f"{n} defect-free image(s) cannot be split {list(fractions)} with at least one "
            "training image; the study needs more defect-free images."
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ordered[i] for i in order]
    test = tuple(sorted(shuffled[:n_test]))
    val = tuple(sorted(shuffled[n_test : n_test + n_val]))
    train = tuple(sorted(shuffled[n_test + n_val :]))
    return train, val, test


def make_split(
    data: MVTecSplit,
    protocol: str,
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    sources: str = "test_good",
) -> InspectionSplit:
    """The study's split of one product whose GAN split is ``data`` (see the module doc)."""
    check_protocol(protocol)
    if sources not in SOURCE_CHOICES:
        raise ConfigError(f"split.synthetic_sources={sources!r}; expected one of {SOURCE_CHOICES}")
    pool = tuple(dict.fromkeys((*data.normal_train, *data.normal_test)))
    train, val, test = split_pool(pool, fractions, seed)
    if protocol == "clean":
        defect_test = data.defect_test
        if not defect_test:
            raise DataError(
                f"protocol=clean tests on the defect images the GAN was not trained on, but the "
                f"split of {data.category}/{data.defect} holds none (all {len(data.defect_train)} "
                "trained the GAN; data.train_fraction < 1 keeps some out). Use protocol=paper "
                "to test on the GAN's training defects."
            )
    else:
        defect_test = (*data.defect_train, *data.defect_test)
    candidates = {"test_good": data.normal_test, "train_good": data.normal_train, "pool": pool}
    chosen = candidates[sources]
    if protocol == "clean":
        held_out = set(test)
        chosen = tuple(p for p in chosen if p not in held_out)
    if not chosen:
        raise DataError(
            f"no defect-free images are left to synthesise defects from (split.synthetic_sources="
            f"{sources}, protocol={protocol}); try split.synthetic_sources=pool."
        )
    return InspectionSplit(
        protocol=protocol,
        seed=seed,
        normal_train=train,
        normal_val=val,
        normal_test=test,
        defect_test=tuple(defect_test),
        donors=tuple(data.defect_train),
        synthesis_sources=tuple(sorted(chosen)),
    )


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def check_synthetic_sources(sources: Sequence[str], split: InspectionSplit, where: str) -> None:
    """Under protocol=clean, fail when a synthetic image was made from an image the classifier
    is tested on (its defect-free test pool or a real test defect). Empty names (images sampled
    from a latent code) have no source and pass."""
    if split.protocol != "clean":
        return
    forbidden = {_resolved(p) for p in split.normal_test}
    forbidden |= {_resolved(s.image) for s in split.defect_test}
    named = [s for s in sources if s]
    leaked = sorted({s for s in named if _resolved(s) in forbidden})
    if leaked:
        raise DataError(
            f"{where}: {len(leaked)} source image(s) of its synthetic defects are in the "
            f"classifier's test set (e.g. {leaked[0]}), which protocol=clean forbids. Give "
            "ckpt=<generator checkpoint> instead (the study then picks the source images), "
            "or run the authors' protocol with protocol=paper. The test pool is listed in "
            "splits.json of the run folder."
        )


def split_synthetic(
    groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, val) of synthetic items, split 80/20 by *source image*: the flip variants
    of one source are near-duplicates and must not sit on both sides. Items without a source
    (latent samples) are their own group."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"split.synthetic_val={val_fraction} must be in [0, 1)")
    keys = [g if g else f"#item{i}" for i, g in enumerate(groups)]
    unique = sorted(set(keys))
    n_val = _ceil(val_fraction, len(unique)) if len(unique) > 1 else 0
    n_val = min(n_val, len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    val_groups = {unique[i] for i in order[:n_val]}
    train = [i for i, k in enumerate(keys) if k not in val_groups]
    val = [i for i, k in enumerate(keys) if k in val_groups]
    return train, val
