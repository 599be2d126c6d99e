import pytest
import torch

from defectsynth.models.schedule import LinearDecay


@pytest.mark.parametrize(
    ("epoch", "factor"), [(0, 1.0), (99, 1.0), (100, 1.0), (199, 0.505), (299, 0.005), (300, 0.0)]
)
def test_paper_schedule_constant_100_then_linear_to_zero_over_200(epoch, factor):
    assert LinearDecay(100, 200)(epoch) == pytest.approx(factor)


def test_lambda_lr_stepped_per_epoch_gives_the_paper_learning_rates():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, LinearDecay(100, 200))
    lrs = []
    for _ in range(300):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs[0] == lrs[99] == lrs[100] == pytest.approx(2e-4)
    assert lrs[199] == pytest.approx(1.01e-4)
    assert lrs[299] == pytest.approx(1e-6)
    assert scheduler.state_dict()["lr_lambdas"] == [{"n_epochs": 100, "n_epochs_decay": 200}]
