"""Batch normalisation with a hand-written backward pass (report, Problem 1, corrected).

For each feature k, over the m values it takes in a batch (the batch axis, plus the length
axis for [N, C, L] input):

    mu      = 1/m sum_i x_i
    var     = 1/m sum_i (x_i - mu)^2            (biased; the report forgot the "- mu")
    x_hat_i = (x_i - mu) / sqrt(var + eps)       (the report subtracted var, not mu)
    y_i     = gamma * x_hat_i + beta

Backward, with g_i = dE/dy_i and sigma = sqrt(var + eps):

    dE/dbeta  = sum_i g_i
    dE/dgamma = sum_i g_i x_hat_i
    dE/dx_i   = gamma / sigma * (g_i - mean(g) - x_hat_i * mean(g * x_hat))

The last line is the report's three-step chain rule (through var, mu, then x) collapsed:
its dE/dmu term carrying sum_i (x_i - mu) is zero, and the rest simplifies to the above.

Eval mode uses the running statistics instead, so mu and sigma are constants:
    y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta,   dE/dx = g * gamma / sigma.

Running statistics are updated as nn.BatchNorm1d does: r <- (1 - momentum) r + momentum * stat,
with the *unbiased* batch variance (m / (m - 1) * var) going into running_var.
"""

from __future__ import annotations

import torch
from torch import nn


def _feature_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-feature vector [C] so it broadcasts against x ([N, C] or [N, C, L])."""
    return t.view(1, -1, *([1] * (x.dim() - 2)))


def _reduce_dims(x: torch.Tensor) -> list[int]:
    """Every axis but the feature axis 1: statistics are per feature."""
    return [0] + list(range(2, x.dim()))


class BatchNormFunction(torch.autograd.Function):
    """y = gamma * x_hat + beta with the gradients of the module docstring written out."""

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, training, momentum, eps):
        dims = _reduce_dims(x)
        if training:
            m = x.numel() // x.shape[1]
            if m < 2:
                raise ValueError(
                    f"batch_norm needs more than 1 value per feature when training, got input shape {list(x.shape)}"
                )
            mu = x.mean(dim=dims)
            var = ((x - _feature_view(mu, x)) ** 2).mean(dim=dims)
            if running_mean is not None:
                # In-place, outside autograd: running stats are state, not parameters.
                running_mean.mul_(1 - momentum).add_(momentum * mu)
            if running_var is not None:
                running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))
        else:
            if running_mean is None or running_var is None:
                raise ValueError("batch_norm in eval mode needs running_mean and running_var")
            mu, var = running_mean, running_var
        inv_std = 1.0 / torch.sqrt(var + eps)
        x_hat = (x - _feature_view(mu, x)) * _feature_view(inv_std, x)
        ctx.save_for_backward(x_hat, gamma, inv_std)
        ctx.training = training
        return _feature_view(gamma, x) * x_hat + _feature_view(beta, x)

    @staticmethod
    def backward(ctx, g):
        x_hat, gamma, inv_std = ctx.saved_tensors
        dims = _reduce_dims(g)
        grad_beta = g.sum(dim=dims)
        grad_gamma = (g * x_hat).sum(dim=dims)
        scale = _feature_view(gamma * inv_std, g)
        if ctx.training:
            # mu and var depend on every x_i in the batch, hence the two mean terms.
            g_mean = _feature_view(g.mean(dim=dims), g)
            gx_mean = _feature_view((g * x_hat).mean(dim=dims), g)
            grad_x = scale * (g - g_mean - x_hat * gx_mean)
        else:
            grad_x = scale * g
        return grad_x, grad_gamma, grad_beta, None, None, None, None, None


def batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch-normalise x ([N, C] or [N, C, L]) per feature C; see the module docstring for the formulas.

    In training mode the batch statistics are used and running_mean / running_var (if given)
    are updated in place; in eval mode the running statistics are used.
    """
    if x.dim() not in (2, 3):
        raise ValueError(f"batch_norm expects [N, C] or [N, C, L] input, got shape {list(x.shape)}")
    return BatchNormFunction.apply(
        x, gamma, beta, running_mean, running_var, bool(training), float(momentum), float(eps)
    )


class BatchNorm1d(nn.Module):
    """A drop-in for nn.BatchNorm1d (affine, tracking running stats) built on :func:`batch_norm`."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.training, self.momentum, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
