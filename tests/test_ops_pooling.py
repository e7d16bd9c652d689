"""pbexp.ops pooling against torch's nn pooling modules: forward and autograd backward."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pbexp.errors import ConfigError
from pbexp.ops import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, lp_pool2d, max_pool2d

TOL = dict(rtol=1e-10, atol=1e-10)


def _rand(*shape, seed=0, positive=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.abs() + 0.1 if positive else x


def _compare(ours, theirs, x):
    """Same output, and same input gradient for a random upstream gradient."""
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(a), theirs(b)
    torch.testing.assert_close(ya, yb, **TOL)
    g = _rand(*yb.shape, seed=99)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(a.grad, b.grad, **TOL)


# (kernel, stride): stride None = kernel; overlapping windows; non-square; leftover rows dropped.
WINDOWS = [(2, None), (3, 1), (3, 2), ((2, 3), (1, 2)), (3, None)]
SHAPE = (2, 3, 7, 8)


@pytest.mark.parametrize("kernel,stride", WINDOWS)
def test_max_pool(kernel, stride):
    _compare(lambda x: max_pool2d(x, kernel, stride), nn.MaxPool2d(kernel, stride), _rand(*SHAPE))


@pytest.mark.parametrize("kernel,stride", WINDOWS)
def test_avg_pool(kernel, stride):
    _compare(lambda x: avg_pool2d(x, kernel, stride), nn.AvgPool2d(kernel, stride), _rand(*SHAPE))


@pytest.mark.parametrize("p", [1, 2, 3, 2.5, 7])
@pytest.mark.parametrize("kernel,stride", WINDOWS[:4])
def test_lp_pool_on_non_negative_input(p, kernel, stride):
    _compare(lambda x: lp_pool2d(x, p, kernel, stride), nn.LPPool2d(p, kernel, stride), _rand(*SHAPE, positive=True))


@pytest.mark.parametrize("p", [2, 4])
def test_lp_pool_even_p_on_signed_input(p):
    _compare(lambda x: lp_pool2d(x, p, 2), nn.LPPool2d(p, 2), _rand(*SHAPE))


@pytest.mark.parametrize("p", [1, 3, 2.5])
def test_lp_pool_is_the_p_norm_of_each_window(p):
    """On signed input, f(v) = ||v||_p (torch's LPPool2d drops the |.| and differs here)."""
    x = _rand(2, 3, 6, 6, seed=3)
    windows = F.unfold(x.flatten(0, 1)[:, None], kernel_size=2, stride=2)  # [N*C, 4, 9]
    expected = torch.linalg.vector_norm(windows, ord=p, dim=1).view(2, 3, 3, 3)
    torch.testing.assert_close(lp_pool2d(x, p, 2), expected, **TOL)


def test_lp_pool_refuses_p_below_one():
    with pytest.raises(ConfigError, match="p=0.5"):
        lp_pool2d(_rand(1, 4, 4), 0.5, 2)


def test_kernel_larger_than_input_is_refused():
    with pytest.raises(ConfigError, match="kernel_size"):
        max_pool2d(_rand(1, 3, 3), 4)


@pytest.mark.parametrize("hw,out", [((8, 8), 4), ((7, 9), (3, 4)), ((5, 6), (5, 1)), ((6, 5), (4, 7))])
def test_adaptive_max_pool(hw, out):
    _compare(lambda x: adaptive_max_pool2d(x, out), nn.AdaptiveMaxPool2d(out), _rand(2, 3, *hw))


@pytest.mark.parametrize("hw,out", [((8, 8), 4), ((7, 9), (3, 4)), ((5, 6), (5, 1)), ((6, 5), (4, 7))])
def test_adaptive_avg_pool(hw, out):
    _compare(lambda x: adaptive_avg_pool2d(x, out), nn.AdaptiveAvgPool2d(out), _rand(2, 3, *hw))


def test_unbatched_2d_input():
    x = _rand(6, 6, seed=5)
    torch.testing.assert_close(max_pool2d(x, 2), F.max_pool2d(x[None, None], 2)[0, 0], **TOL)
    torch.testing.assert_close(avg_pool2d(x, 3), F.avg_pool2d(x[None, None], 3)[0, 0], **TOL)
