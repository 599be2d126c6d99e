"""The study's splits: sizes, disjointness and the leakage rules of both protocols."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from defectsynth.data.mvtec import index_category
from defectsynth.errors import ConfigError, DataError
from defectsynth.inspection.splits import (
    check_synthetic_sources,
    make_split,
    split_pool,
    split_synthetic,
)
from tests.inspection.conftest import CATEGORY, DEFECT


@pytest.fixture(scope="module")
def gan_split(study_root: Path):
    # 7 train/good + 3 test/good; 10 defects → round(0.8 · 10) = 8 train the GAN, 2 held out
    return index_category(study_root, CATEGORY, DEFECT)


def test_pool_split_sizes_match_the_papers_trivial_accuracies():
    # the paper's "always defect-free" accuracies: ⌈0.2·n⌉ defect-free test images next to all
    # real defects; n = train/good + test/good, defects = every real defect image
    for n_pool, n_defects, accuracy in ((263, 17, 75.71), (266, 10, 84.37), (273, 10, 84.61)):
        paths = [Path(f"/x/{i:03d}.png") for i in range(n_pool)]
        train, val, test = split_pool(paths, (0.6, 0.2, 0.2), seed=0)
        # the paper truncates to two decimals (54/64 = 84.375 % is printed 84.37)
        assert int(10000 * len(test) / (len(test) + n_defects)) / 100 == accuracy
        assert len(val) == len(test) and len(train) + len(val) + len(test) == n_pool


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_split_sizes_and_disjointness(gan_split, protocol):
    split = make_split(gan_split, protocol, seed=3)
    pool = set(gan_split.normal_train) | set(gan_split.normal_test)
    parts = [set(split.normal_train), set(split.normal_val), set(split.normal_test)]
    assert [len(p) for p in parts] == [6, 2, 2]  # 10 defect-free: 60/20/20
    for a, b in combinations(parts, 2):
        assert not a & b  # no image in two splits
    assert set().union(*parts) == pool
    donors = {s.image for s in split.donors}
    tested = {s.image for s in split.defect_test}
    sources = set(split.synthesis_sources)
    assert donors == {s.image for s in gan_split.defect_train} and len(donors) == 8
    assert sources <= set(gan_split.normal_test)  # the default: test/good, as in the paper
    if protocol == "clean":
        assert tested == {s.image for s in gan_split.defect_test} and len(tested) == 2
        assert not tested & donors  # never a defect the GAN (or cut-paste) was trained on
        assert not sources & set(split.normal_test)  # nothing synthesised from a test image
        assert sources == set(gan_split.normal_test) - set(split.normal_test)
    else:
        assert len(tested) == 10 and donors <= tested  # the authors' leakage, on purpose
        assert sources == set(gan_split.normal_test)


def test_split_is_seeded(gan_split):
    assert make_split(gan_split, "clean", seed=1) == make_split(gan_split, "clean", seed=1)
    tests = {make_split(gan_split, "clean", seed=s).normal_test for s in range(6)}
    assert len(tests) > 1


def test_clean_sources_never_enter_the_test_pool_for_any_seed(gan_split):
    for seed in range(20):
        split = make_split(gan_split, "clean", seed=seed, sources="pool")
        assert not set(split.synthesis_sources) & set(split.normal_test)
        assert len(split.synthesis_sources) == 8


def test_clean_protocol_needs_held_out_defects(study_root):
    everything = index_category(study_root, CATEGORY, DEFECT, train_fraction=1.0)
    with pytest.raises(DataError, match="protocol=paper"):
        make_split(everything, "clean", seed=0)
    assert len(make_split(everything, "paper", seed=0).defect_test) == 10


def test_bad_options_are_config_errors(gan_split):
    with pytest.raises(ConfigError, match="protocol"):
        make_split(gan_split, "leaky", seed=0)
    with pytest.raises(ConfigError, match=r"split\.normal"):
        make_split(gan_split, "clean", seed=0, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="synthetic_sources"):
        make_split(gan_split, "clean", seed=0, sources="defects")


def test_synthetic_sources_are_checked_under_clean_only(gan_split):
    clean = make_split(gan_split, "clean", seed=0)
    leaked = [str(clean.normal_test[0]), str(clean.synthesis_sources[0])]
    with pytest.raises(DataError, match="protocol=clean forbids"):
        check_synthetic_sources(leaked, clean, "samples=x")
    with pytest.raises(DataError, match="test set"):  # a real test defect as source
        check_synthetic_sources([str(clean.defect_test[0].image)], clean, "samples=x")
    check_synthetic_sources([str(clean.synthesis_sources[0]), ""], clean, "samples=x")
    check_synthetic_sources(leaked, make_split(gan_split, "paper", seed=0), "samples=x")


def test_synthetic_split_keeps_the_variants_of_a_source_together():
    sources = [f"s{i // 4}" for i in range(40)]  # 10 sources × 4 flip variants
    train, val = split_synthetic(sources, 0.2, seed=0)
    assert sorted(train + val) == list(range(40))
    assert len(val) == 2 * 4  # ⌈0.2 · 10⌉ sources
    assert not {sources[i] for i in train} & {sources[i] for i in val}
    assert split_synthetic(sources, 0.2, seed=0) == (train, val)
    # latent samples (no source) are their own groups; a single group stays in training
    train, val = split_synthetic([""] * 10, 0.2, seed=0)
    assert len(val) == 2
    assert split_synthetic(["a", "a"], 0.2, seed=0) == ([0, 1], [])
