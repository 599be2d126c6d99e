"""Evaluation metrics: FID / KID on Inception features, LPIPS diversity and distance to the
training set, intra-cluster LPIPS, and image/mask coherence.

Metrics take tensors (images (B, 3, H, W) in [-1, 1], masks (B, 1, H, W) in [0, 1]) and return
plain floats or dicts. Feature networks are passed in, so tests run with tiny random networks and
users get the pretrained ones from :func:`load_inception` and :func:`load_lpips`.
"""

from defectsynth.metrics.fid import (
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid_from_features,
)
from defectsynth.metrics.inception import (
    INCEPTION_FILE,
    InceptionFeatures,
    find_inception_file,
    load_inception,
)
from defectsynth.metrics.masks import (
    changed_outside_mask,
    changed_outside_statistics,
    changed_region,
    coherence_from_statistics,
    mask_coherence,
    mask_overlap,
    mask_statistics,
    pairwise_mask_iou,
    placement_statistics,
    pooled_ratio,
)
from defectsynth.metrics.perceptual import (
    LPIPS_NETS,
    LpipsDistance,
    as_lpips_input,
    backbone_file,
    dist_to_train,
    ic_lpips,
    load_lpips,
    lpips_diversity,
    pairwise_distances,
    pairwise_within,
    read_numpy_pickle,
)
from defectsynth.metrics.weights import MissingWeightsError, find_weight_file, hub_checkpoints_dir

__all__ = [
    "INCEPTION_FILE",
    "LPIPS_NETS",
    "InceptionFeatures",
    "LpipsDistance",
    "MissingWeightsError",
    "as_lpips_input",
    "backbone_file",
    "changed_outside_mask",
    "changed_outside_statistics",
    "changed_region",
    "coherence_from_statistics",
    "dist_to_train",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "find_inception_file",
    "find_weight_file",
    "frechet_distance",
    "hub_checkpoints_dir",
    "ic_lpips",
    "kid_from_features",
    "load_inception",
    "load_lpips",
    "lpips_diversity",
    "mask_coherence",
    "mask_overlap",
    "mask_statistics",
    "pairwise_distances",
    "pairwise_mask_iou",
    "pairwise_within",
    "placement_statistics",
    "pooled_ratio",
    "read_numpy_pickle",
]
