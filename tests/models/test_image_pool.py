import torch

from defectsynth.models.image_pool import ImagePool


def test_pool_returns_inputs_while_filling():
    pool = ImagePool(size=4)
    x = torch.randn(3, 3, 2, 2)
    assert torch.equal(pool.query(x), x) and len(pool) == 3


def test_full_pool_mixes_history_and_keeps_its_size():
    pool = ImagePool(size=4, seed=1)
    history = torch.arange(4.0).view(4, 1, 1, 1)
    pool.query(history)
    new = torch.full((64, 1, 1, 1), 100.0)
    out = pool.query(new)
    values = set(out.flatten().tolist())
    assert len(pool) == 4
    assert 100.0 in values and values & {0.0, 1.0, 2.0, 3.0}  # both new and stored images
    assert values <= {0.0, 1.0, 2.0, 3.0, 100.0}


def test_pool_of_size_zero_passes_through():
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(ImagePool(0).query(x), x)


def test_pool_state_round_trip_reproduces_future_draws():
    a = ImagePool(size=3, seed=5)
    a.query(torch.randn(5, 1, 2, 2))
    b = ImagePool(size=3, seed=99)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 1, 2, 2)
    assert torch.equal(a.query(x), b.query(x))


def test_fakes_of_a_rejected_batch_never_enter_the_pool():
    # the NaN guard's device flag: a poisoned batch must not come back to D in later batches
    rejected = torch.tensor(False)
    poisoned = torch.full((16, 1, 1, 1), float("nan"))
    filling = ImagePool(size=3, seed=0)
    filling.query(torch.ones(1, 1, 1, 1))
    filling.query(poisoned[:2], keep=rejected)
    full = ImagePool(size=2, seed=0)
    full.query(torch.zeros(2, 1, 1, 1))
    full.query(poisoned, keep=rejected)
    for pool in (filling, full):
        assert len(pool) == pool.size and all(torch.isfinite(i).all() for i in pool.images)
    kept = ImagePool(size=2, seed=0)
    kept.query(torch.zeros(2, 1, 1, 1))
    kept.query(torch.full((16, 1, 1, 1), 5.0), keep=torch.tensor(True))
    assert any(float(i) == 5.0 for i in kept.images)
