"""2-D convolution forward and backward as the report's Problem 2 describes them.

Deep-learning "convolution" is cross-correlation (the kernel is not flipped):

    forward, "valid":   y[i, j] = sum_{a, b} x[s*i + a, s*j + b] * K[a, b]
    output size:        W2 = (W1 - k + 2p) / s + 1       (the report's rule omits the padding p)

Backward, with G = dE/dy:

    input gradient:     dE/dx = "full" cross-correlation of G, dilated by the stride
                        (s - 1 zeros between its entries), with K rotated by 180 degrees;
                        equivalently a full *true* convolution of the dilated G with K itself.
    kernel gradient:    dE/dK = "valid" cross-correlation of the input x with the dilated G.

Tensors are either a single 2-D image [H, W] with a kernel [kH, kW] (the report's case), or a
batch [N, C, H, W] with kernels [O, C, kH, kW] as in ``torch.nn.functional.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pbexp.errors import ConfigError


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """W2 = (W1 - k + 2p) / s + 1, refusing (ConfigError) a stride that does not divide W1 - k + 2p.

    Frameworks silently floor the division, dropping the last rows/columns of the input;
    here that is treated as a configuration mistake, as the report's formula assumes it divides.
    """
    if stride < 1:
        raise ConfigError("stride", stride, "a positive integer")
    if padding < 0:
        raise ConfigError("padding", padding, "a non-negative integer")
    span = size - kernel + 2 * padding
    if span < 0:
        raise ConfigError("kernel", kernel, f"at most the padded input size W1 + 2p = {size + 2 * padding}")
    if span % stride:
        raise ConfigError(
            "stride",
            stride,
            f"a divisor of W1 - k + 2p = {size} - {kernel} + 2*{padding} = {span}, "
            f"so that W2 = (W1 - k + 2p)/s + 1 is a whole number",
        )
    return span // stride + 1


def _as_batch(x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Lift the single-image case [H, W] / [kH, kW] to [1, 1, H, W] / [1, 1, kH, kW]."""
    if x.dim() == 2 and k.dim() == 2:
        return x[None, None], k[None, None], True
    if x.dim() == 4 and k.dim() == 4:
        return x, k, False
    raise ValueError(
        f"expected [H, W] with a [kH, kW] kernel or [N, C, H, W] with [O, C, kH, kW], "
        f"got {list(x.shape)} and {list(k.shape)}"
    )


def _correlate(x: torch.Tensor, k: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid cross-correlation of [N, C, H, W] with [O, C, kH, kW]: one shifted, strided slice per tap."""
    kh, kw = k.shape[-2:]
    h2 = (x.shape[-2] - kh) // stride + 1
    w2 = (x.shape[-1] - kw) // stride + 1
    out = x.new_zeros(x.shape[0], k.shape[0], h2, w2)
    for a in range(kh):
        for b in range(kw):
            patch = x[:, :, a : a + stride * (h2 - 1) + 1 : stride, b : b + stride * (w2 - 1) + 1 : stride]
            out = out + torch.einsum("nchw,oc->nohw", patch, k[:, :, a, b])
    return out


def dilate(g: torch.Tensor, stride: int) -> torch.Tensor:
    """Insert stride - 1 zeros between neighbouring entries of the last two axes."""
    if stride == 1:
        return g
    h, w = g.shape[-2:]
    out = g.new_zeros(*g.shape[:-2], stride * (h - 1) + 1, stride * (w - 1) + 1)
    out[..., ::stride, ::stride] = g
    return out


def conv2d(input: torch.Tensor, kernel: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """y[i, j] = sum_{a,b} x_pad[s*i + a, s*j + b] K[a, b] (summed over input channels too); "valid" mode."""
    x, k, single = _as_batch(input, kernel)
    for dim in (-2, -1):
        conv_output_size(x.shape[dim], k.shape[dim], stride, padding)
    if padding:
        x = F.pad(x, (padding,) * 4)
    y = _correlate(x, k, stride)
    return y[0, 0] if single else y


def conv2d_input_grad(
    grad_output: torch.Tensor, kernel: torch.Tensor, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """dE/dx = full cross-correlation of the stride-dilated G with the 180-degree-rotated kernel.

    "Full" means G is zero-padded by k - 1 on every side, so every input pixel sees every kernel
    tap that touched it. Channels swap roles: kernel [O, C, kH, kW] becomes [C, O, kH, kW].
    With padding p the result covers the padded input, so p rows/columns are cropped off each side.
    """
    g, k, single = _as_batch(grad_output, kernel)
    kh, kw = k.shape[-2:]
    g = F.pad(dilate(g, stride), (kw - 1, kw - 1, kh - 1, kh - 1))
    rotated = torch.flip(k, dims=(-2, -1)).transpose(0, 1)
    dx = _correlate(g, rotated, 1)
    if padding:
        dx = dx[..., padding:-padding, padding:-padding]
    return dx[0, 0] if single else dx


def conv2d_kernel_grad(
    input: torch.Tensor, grad_output: torch.Tensor, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """dE/dK[a, b] = sum_{i,j} G[i, j] x_pad[s*i + a, s*j + b]: valid cross-correlation of x with dilated G.

    For batches the sum also runs over N: the batch axis plays the role of the channel axis,
    so x is viewed as [C, N, H, W] and G as kernels [O, N, h, w], giving [C, O, kH, kW] -> [O, C, kH, kW].
    """
    x, g, single = _as_batch(input, grad_output)
    if padding:
        x = F.pad(x, (padding,) * 4)
    dk = _correlate(x.transpose(0, 1), dilate(g, stride).transpose(0, 1), 1).transpose(0, 1)
    return dk[0, 0] if single else dk
