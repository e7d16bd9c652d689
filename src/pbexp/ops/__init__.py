"""The report's maths as verified code: batch norm, convolution, pooling and t-SNE.

Each module states its formulas in its docstring; docs/MATHS.md gives the derivations and the
report's slips, and tests/test_ops_*.py check every formula against torch / scikit-learn.
"""

from pbexp.ops.batch_norm import BatchNorm1d, BatchNormFunction, batch_norm
from pbexp.ops.conv import conv2d, conv2d_input_grad, conv2d_kernel_grad, conv_output_size, dilate
from pbexp.ops.pooling import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool2d,
    lp_pool2d,
    max_pool2d,
)
from pbexp.ops.tsne import (
    TSNEResult,
    conditional_affinities,
    fit_tsne,
    joint_probabilities,
    kl_divergence,
    kl_gradient,
    squared_distances,
    student_t_affinities,
)

__all__ = [
    "BatchNorm1d",
    "BatchNormFunction",
    "batch_norm",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_kernel_grad",
    "conv_output_size",
    "dilate",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "avg_pool2d",
    "lp_pool2d",
    "max_pool2d",
    "TSNEResult",
    "conditional_affinities",
    "joint_probabilities",
    "kl_divergence",
    "kl_gradient",
    "squared_distances",
    "student_t_affinities",
    "fit_tsne",
]
