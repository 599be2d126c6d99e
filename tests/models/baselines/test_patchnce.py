"""PatchNCE against hand-computed values, and the negative generator's adversarial direction."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from defectsynth.models.baselines.patchnce import (
    NegativeGenerator,
    ProjectionHead,
    gather_patches,
    negative_generator_loss,
    patchnce_loss,
    sample_locations,
)

# three unit vectors in 2-d, one per location
PATCHES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])


def by_hand(query: list[list[float]], key: list[list[float]], tau: float) -> float:
    """Mean over locations p of −log softmax(q_p·k_p / τ against q_p·k_j / τ, j ≠ p)."""
    total = 0.0
    for p, q in enumerate(query):
        dots = [sum(a * b for a, b in zip(q, k, strict=True)) / tau for k in key]
        total += -dots[p] + math.log(sum(math.exp(d) for d in dots))
    return total / len(query)


def test_patchnce_matches_the_softmax_cross_entropy_computed_by_hand():
    tau = 0.5
    query = PATCHES[None]  # q0 = (1, 0), q1 = (0, 1), q2 = (0.6, 0.8)
    key = torch.tensor([[[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]])
    e = math.exp
    # q_p·k_j for j = 0, 1, 2; the positive of q_p is k_p
    # q0: 0.8, 0.0, 1.0   q1: 0.6, 1.0, 0.0   q2: 0.96, 0.8, 0.6
    per_location = [
        -0.8 / tau + math.log(e(0.8 / tau) + e(0.0 / tau) + e(1.0 / tau)),
        -1.0 / tau + math.log(e(0.6 / tau) + e(1.0 / tau) + e(0.0 / tau)),
        -0.6 / tau + math.log(e(0.96 / tau) + e(0.8 / tau) + e(0.6 / tau)),
    ]
    expected = sum(per_location) / 3
    assert expected == pytest.approx(by_hand(query[0].tolist(), key[0].tolist(), tau))
    assert patchnce_loss(query, key, temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_each_image_of_the_batch_draws_negatives_from_itself_only():
    tau = 0.07
    query = torch.stack([PATCHES, PATCHES.flip(0)])
    key = torch.stack([PATCHES, PATCHES.roll(1, 0)])
    expected = [by_hand(q.tolist(), k.tolist(), tau) for q, k in zip(query, key, strict=True)]
    assert patchnce_loss(query, key, temperature=tau).item() == pytest.approx(
        sum(expected) / 2, rel=1e-5
    )


def test_the_positive_is_the_key_at_the_same_location():
    query = key = PATCHES[None]
    aligned = patchnce_loss(query, key, temperature=0.07)
    for order in itertools.permutations(range(3)):
        if order == (0, 1, 2):
            continue
        shuffled = patchnce_loss(query, key[:, list(order)], temperature=0.07)
        assert shuffled > aligned + 1.0, order  # any other pairing is a much worse fit


def test_one_location_has_no_negative_and_no_loss():
    assert patchnce_loss(PATCHES[None, :1], PATCHES[None, :1]).item() == pytest.approx(0.0)


def test_generated_negatives_replace_the_in_image_ones():
    tau = 0.5
    query, key = PATCHES[None, :2], PATCHES[None, :2]
    negatives = torch.tensor([[[0.6, 0.8], [-1.0, 0.0]]])
    expected = 0.0
    for q, k in zip(query[0].tolist(), key[0].tolist(), strict=True):
        pos = sum(a * b for a, b in zip(q, k, strict=True)) / tau
        negs = [sum(a * b for a, b in zip(q, n, strict=True)) / tau for n in negatives[0].tolist()]
        expected += -pos + math.log(math.exp(pos) + sum(math.exp(n) for n in negs))
    got = patchnce_loss(query, key, negatives, temperature=tau)
    assert got.item() == pytest.approx(expected / 2, rel=1e-6)


def test_keys_are_constants_and_queries_get_the_gradient():
    query = PATCHES[None].clone().requires_grad_(True)
    key = PATCHES[None].flip(1).clone().requires_grad_(True)
    patchnce_loss(query, key).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert key.grad is None


def test_queries_and_keys_are_sampled_at_the_same_locations():
    torch.manual_seed(0)
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    where = sample_locations(20, 6, features.device)
    assert len(set(where.tolist())) == 6
    patches = gather_patches(features, where)
    assert patches.shape == (2, 6, 3)
    y, x = divmod(int(where[2]), 5)
    assert torch.equal(patches[1, 2], features[1, :, y, x])
    assert len(sample_locations(20, 256, features.device)) == 20  # capped by the map size


def test_projection_head_is_a_two_layer_mlp_with_unit_outputs():
    head = ProjectionHead(3, width=8)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "ReLU", "Linear"]
    out = head(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 5), atol=1e-5)


def test_negative_generator_makes_unit_negatives_per_image():
    torch.manual_seed(0)
    net = NegativeGenerator(in_channels=6, out_dim=8, n_negatives=5, noise_dim=4, width=16)
    condition = torch.randn(2, 6)
    negatives = net(condition)
    assert negatives.shape == (2, 5, 8)
    assert torch.allclose(negatives.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    assert not torch.allclose(negatives[:, 0], negatives[:, 1])  # the noise makes them differ
    noise = torch.randn(2, 5, 4)
    assert torch.equal(net(condition, noise), net(condition, noise))


def test_negative_generator_loss_is_minus_the_nce_and_a_step_increases_the_nce():
    torch.manual_seed(0)
    net = NegativeGenerator(in_channels=6, out_dim=8, n_negatives=16, noise_dim=4, width=16)
    query = torch.nn.functional.normalize(torch.randn(2, 10, 8), dim=-1)
    key = torch.nn.functional.normalize(query + 0.3 * torch.randn(2, 10, 8), dim=-1)
    condition, noise = torch.randn(2, 6), torch.randn(2, 16, 4)

    def nce() -> torch.Tensor:
        return patchnce_loss(query, key, net(condition, noise))

    loss = negative_generator_loss(query, key, net(condition, noise))
    assert torch.equal(loss, -nce())
    before = nce().item()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert nce().item() > before
