"""Max, Lp and average pooling written from their formulas (report, Problem 3).

Each output value pools one window v of the input (the last two axes):

    max:      f(v) = max_i v_i
    Lp:       f(v) = (sum_i |v_i|^p)^(1/p),  p >= 1
    average:  f(v) = 1/P sum_{i=1}^{P} v_i,   P = window size

Fixed windows are kH x kW slices every (sH, sW) (stride defaults to the kernel size, as in
torch). Adaptive pooling instead fixes the output size (oH, oW) and lets output cell i cover
input rows floor(i*H/oH) .. ceil((i+1)*H/oH) - 1 (windows may differ in size and overlap).

Gradients come from autograd through these formulas (max: to the arg-max; average: 1/P to
each element; Lp: |v_i|^(p-1) sign(v_i) / f(v)^(p-1)).

Note: torch's nn.LPPool2d computes (sum_i v_i^p)^(1/p) without the absolute value (as the report
writes it), so the two agree on non-negative inputs (e.g. after a ReLU) or for even integer p;
for negative windows and odd p torch's version is not a norm (and can be NaN).
"""

from __future__ import annotations

import math

import torch

from pbexp.errors import ConfigError


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _windows(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    """[..., H, W] -> [..., H2, W2, kH*kW]: every pooling window, flattened (H2 = (H - kH) // sH + 1)."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else (kh, kw))
    if kh > x.shape[-2] or kw > x.shape[-1]:
        raise ConfigError("kernel_size", (kh, kw), f"at most the input size {tuple(x.shape[-2:])}")
    w = x.unfold(-2, kh, sh).unfold(-2, kw, sw)  # [..., H2, W2, kh, kw]
    return w.flatten(-2)


def max_pool2d(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    """f(v) = max_i v_i over each kH x kW window."""
    return _windows(x, kernel_size, stride).max(dim=-1).values


def avg_pool2d(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    """f(v) = 1/P sum_i v_i over each kH x kW window (P = kH * kW)."""
    return _windows(x, kernel_size, stride).mean(dim=-1)


def _lp(v: torch.Tensor, p: float) -> torch.Tensor:
    if p < 1:
        raise ConfigError("p", p, "p >= 1 (below 1 the 'norm' is not a norm)")
    return v.abs().pow(p).sum(dim=-1).pow(1.0 / p)


def lp_pool2d(x: torch.Tensor, p: float, kernel_size, stride=None) -> torch.Tensor:
    """f(v) = (sum_i |v_i|^p)^(1/p) over each kH x kW window; p = 1 sums |v|, p -> inf tends to max |v|."""
    return _lp(_windows(x, kernel_size, stride), p)


def _adaptive(x: torch.Tensor, output_size, reduce) -> torch.Tensor:
    """Apply reduce (flattened window -> value) to adaptive window (i, j) for every output cell."""
    oh, ow = _pair(output_size)
    h, w = x.shape[-2:]
    rows = []
    for i in range(oh):
        h0, h1 = (i * h) // oh, math.ceil((i + 1) * h / oh)
        cells = []
        for j in range(ow):
            w0, w1 = (j * w) // ow, math.ceil((j + 1) * w / ow)
            cells.append(reduce(x[..., h0:h1, w0:w1].flatten(-2)))
        rows.append(torch.stack(cells, dim=-1))
    return torch.stack(rows, dim=-2)


def adaptive_max_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """Max over adaptive windows: cell i spans rows floor(i*H/oH) .. ceil((i+1)*H/oH) - 1 (same for columns)."""
    return _adaptive(x, output_size, lambda v: v.max(dim=-1).values)


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """Mean over adaptive windows (see :func:`adaptive_max_pool2d` for the window bounds)."""
    return _adaptive(x, output_size, lambda v: v.mean(dim=-1))
