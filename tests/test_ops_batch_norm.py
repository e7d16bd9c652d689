"""pbexp.ops.batch_norm against nn.BatchNorm1d (forward, backward, running stats) and gradcheck."""

import pytest
import torch
from torch import nn

from pbexp.ops import BatchNorm1d, batch_norm

TOL = dict(rtol=0, atol=1e-10)


def _pair(num_features, momentum=0.1, eps=1e-5, seed=0):
    """An nn.BatchNorm1d and our module with the same random affine parameters and running stats."""
    g = torch.Generator().manual_seed(seed)
    ref = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.copy_(torch.randn(num_features, generator=g, dtype=torch.float64))
        ref.bias.copy_(torch.randn(num_features, generator=g, dtype=torch.float64))
        ref.running_mean.copy_(torch.randn(num_features, generator=g, dtype=torch.float64))
        ref.running_var.copy_(torch.rand(num_features, generator=g, dtype=torch.float64) + 0.5)
    ours = BatchNorm1d(num_features, eps=eps, momentum=momentum, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict(), strict=False)  # ours has no num_batches_tracked
    return ref, ours


def _forward_backward(module, x, upstream):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(upstream)
    return y.detach(), x.grad, module.weight.grad, module.bias.grad


@pytest.mark.parametrize("shape", [(8, 3), (5, 4, 6)], ids=["NC", "NCL"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_nn_batchnorm1d(shape, training):
    ref, ours = _pair(shape[1], momentum=0.3)
    ref.train(training), ours.train(training)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # several steps, so running statistics accumulate
        x = 3 * torch.randn(shape, generator=g, dtype=torch.float64) + 2  # not centred, not unit
        upstream = torch.randn(shape, generator=g, dtype=torch.float64)
        ref.zero_grad(), ours.zero_grad()
        for a, b in zip(_forward_backward(ref, x, upstream), _forward_backward(ours, x, upstream)):
            torch.testing.assert_close(b, a, **TOL)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)


def test_functional_updates_running_stats_with_unbiased_variance():
    x = torch.tensor([[1.0], [2.0], [6.0]], dtype=torch.float64)  # mean 3, biased var 14/3, unbiased 7
    rm, rv = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    gamma, beta = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    y = batch_norm(x, gamma, beta, rm, rv, training=True, momentum=0.5, eps=0.0)
    assert rm.item() == pytest.approx(0.5 * 0 + 0.5 * 3)
    assert rv.item() == pytest.approx(0.5 * 1 + 0.5 * 7)
    # ...while the normalisation itself uses the biased variance
    torch.testing.assert_close(y, (x - 3) / (14 / 3) ** 0.5, **TOL)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3)], ids=["NC", "NCL"])
def test_gradcheck(training, shape):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    c = shape[1]
    gamma = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    rm = torch.randn(c, generator=g, dtype=torch.float64)
    rv = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    # Running stats are only read in eval mode; in train mode pass None so gradcheck's
    # repeated calls do not drift them (and check that None is accepted).
    stats = (None, None) if training else (rm, rv)
    f = lambda x, gamma, beta: batch_norm(x, gamma, beta, *stats, training=training)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, gamma, beta))


def test_one_value_per_feature_is_refused_in_training_like_torch():
    x = torch.randn(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError):
        nn.BatchNorm1d(3).double()(x)
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchNorm1d(3, dtype=torch.float64)(x)


def test_report_formulas_are_wrong_on_uncentred_data():
    """MATHS.md, Problem 1: the report's variance (1/m sum x^2) and x_hat ((x - var)/...) are slips."""
    x = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
    report_var = (x**2).mean()  # 41/3
    report_xhat = (x - report_var) / torch.sqrt(report_var)
    gamma, beta = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    ours = batch_norm(x[:, None], gamma, beta, None, None, training=True, eps=0.0)[:, 0]
    assert report_var.item() == pytest.approx(41 / 3) and x.var(unbiased=False).item() == pytest.approx(14 / 3)
    assert not torch.allclose(report_xhat, ours)
    assert ours.mean().abs() < 1e-12 and (ours.var(unbiased=False) - 1).abs() < 1e-12
