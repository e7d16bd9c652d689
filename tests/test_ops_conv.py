"""pbexp.ops conv2d / its input and kernel gradients against F.conv2d, autograd, scipy and the report."""

import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from pbexp.errors import ConfigError, PbexpError
from pbexp.ops import conv2d, conv2d_input_grad, conv2d_kernel_grad, conv_output_size

TOL = dict(rtol=0, atol=1e-10)

# The report's Problem 2: a 3x3 kernel, a 5x5 input, an upstream gradient of ones.
REPORT_KERNEL = [[3, 8, 3], [2, 7, 9], [5, 0, 2]]
REPORT_INPUT_GRAD = [
    [3, 11, 14, 11, 3],
    [5, 20, 32, 27, 12],
    [10, 25, 39, 29, 14],
    [7, 14, 25, 18, 11],
    [5, 5, 7, 2, 2],
]


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_report_worked_example_input_gradient():
    k = torch.tensor(REPORT_KERNEL, dtype=torch.float64)
    dx = conv2d_input_grad(torch.ones(3, 3, dtype=torch.float64), k)
    assert dx.tolist() == REPORT_INPUT_GRAD  # exact: small integers are exact in float64
    # ...and the same matrix is what autograd gives through torch's own convolution,
    x = _rand(1, 1, 5, 5).requires_grad_(True)
    F.conv2d(x, k[None, None]).backward(torch.ones(1, 1, 3, 3, dtype=torch.float64))
    assert x.grad[0, 0].tolist() == REPORT_INPUT_GRAD
    # ...and a *true* full convolution with the unrotated kernel (rotating twice = not at all).
    assert scipy.signal.convolve2d(torch.ones(3, 3).numpy(), REPORT_KERNEL, mode="full").tolist() == REPORT_INPUT_GRAD


def test_report_output_count():
    assert conv_output_size(5, 3, stride=1) == 3  # 3 x 3 = 9 values, as the report says
    assert conv2d(_rand(5, 5), torch.tensor(REPORT_KERNEL, dtype=torch.float64)).shape == (3, 3)


@pytest.mark.parametrize(
    "size,kernel,stride,padding",
    [(5, 3, 1, 0), (7, 3, 2, 0), (6, 2, 2, 0), (5, 3, 1, 1), (7, 3, 2, 1), (9, 5, 2, 2), (8, 4, 4, 0), (4, 4, 1, 0)],
)
def test_output_size_rule_matches_torch(size, kernel, stride, padding):
    expected = F.conv2d(
        torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding
    ).shape[-1]
    assert conv_output_size(size, kernel, stride, padding) == expected
    if padding:  # the report's rule (W1 - k)/s + 1 has no padding term and is wrong here
        assert (size - kernel) // stride + 1 != expected


@pytest.mark.parametrize(
    "size,kernel,stride,padding,bad",
    [
        (6, 3, 2, 0, "stride"),
        (5, 2, 2, 0, "stride"),
        (3, 5, 1, 0, "kernel"),
        (5, 3, 0, 0, "stride"),
        (5, 3, 1, -1, "padding"),
    ],
)
def test_output_size_rule_refuses_bad_shapes(size, kernel, stride, padding, bad):
    with pytest.raises(ConfigError) as err:
        conv_output_size(size, kernel, stride, padding)
    assert err.value.key == bad and isinstance(err.value, PbexpError)
    if bad == "stride" and stride:
        assert str(size - kernel + 2 * padding) in str(err.value)  # names the span that does not divide


def test_conv2d_refuses_a_stride_that_does_not_divide():
    with pytest.raises(ConfigError, match="stride"):
        conv2d(_rand(6, 6), _rand(3, 3), stride=2)


@pytest.mark.parametrize(
    "size,k,stride,padding", [(5, 3, 1, 0), (7, 3, 2, 0), (7, 3, 2, 1), (9, 2, 3, 1), (6, 6, 1, 0)]
)
def test_single_channel_forward_and_gradients(size, k, stride, padding):
    x, kernel = _rand(size, size, seed=1), _rand(k, k, seed=2)
    xr, kr = x[None, None].clone().requires_grad_(True), kernel[None, None].clone().requires_grad_(True)
    y = F.conv2d(xr, kr, stride=stride, padding=padding)
    torch.testing.assert_close(conv2d(x, kernel, stride, padding), y[0, 0].detach(), **TOL)
    g = _rand(*y.shape, seed=3)
    y.backward(g)
    torch.testing.assert_close(conv2d_input_grad(g[0, 0], kernel, stride, padding), xr.grad[0, 0], **TOL)
    torch.testing.assert_close(conv2d_kernel_grad(x, g[0, 0], stride, padding), kr.grad[0, 0], **TOL)


def test_single_channel_forward_is_scipy_valid_correlation():
    x, kernel = _rand(6, 7, seed=4), _rand(3, 2, seed=5)
    expected = scipy.signal.correlate2d(x.numpy(), kernel.numpy(), mode="valid")
    torch.testing.assert_close(conv2d(x, kernel), torch.from_numpy(expected), **TOL)


@pytest.mark.parametrize("size,stride,padding", [(7, 1, 0), (7, 2, 1), (9, 3, 0)])
def test_batched_multichannel_forward_and_gradients(size, stride, padding):
    n, c, o, k = 2, 3, 4, 3
    x, kernel = _rand(n, c, size, size, seed=6), _rand(o, c, k, k, seed=7)
    xr, kr = x.clone().requires_grad_(True), kernel.clone().requires_grad_(True)
    y = F.conv2d(xr, kr, stride=stride, padding=padding)
    torch.testing.assert_close(conv2d(x, kernel, stride, padding), y.detach(), **TOL)
    g = _rand(*y.shape, seed=8)
    y.backward(g)
    torch.testing.assert_close(conv2d_input_grad(g, kernel, stride, padding), xr.grad, **TOL)
    torch.testing.assert_close(conv2d_kernel_grad(x, g, stride, padding), kr.grad, **TOL)


def test_mismatched_ranks_are_refused():
    with pytest.raises(ValueError, match="expected"):
        conv2d(_rand(1, 1, 5, 5), _rand(3, 3))
