"""Exact t-SNE in numpy float64 (report, Problem 4 and its t-SNE plot).

Input affinities. For point i a Gaussian over squared distances D_ij = ||x_i - x_j||^2,

    p_{j|i} = exp(-beta_i D_ij) / sum_{k != i} exp(-beta_i D_ik),     beta_i = 1 / (2 sigma_i^2),

with beta_i found by binary search so that the perplexity exp(H_i), H_i = -sum_j p_{j|i} log p_{j|i}
(natural log), equals the requested perplexity. Then P is symmetrised: p_ij = (p_{j|i} + p_{i|j}) / 2n.

Output affinities (Student t, one degree of freedom), w_ij = (1 + ||y_i - y_j||^2)^-1:

    q_ij = w_ij / sum_{k != l} w_kl

Cost and gradient:

    C = KL(P || Q) = sum_{i != j} p_ij log(p_ij / q_ij)
    dC/dy_i = 4 sum_j (p_ij - q_ij) w_ij (y_i - y_j)

Optimiser (van der Maaten's reference implementation as scikit-learn's exact method runs it):
gradient descent with momentum 0.5 for the first 250 iterations (fewer if that phase stops
early, below), during which P is multiplied by the early exaggeration, then momentum 0.8
(velocity and gains restart at the switch). Each coordinate's step is scaled by a gain that grows
by 0.2 while the descent direction -grad agrees with the last step and shrinks x0.8 when it flips
(floor 0.01). Every 50 iterations it checks the cost (and reports it to ``progress``) and stops
the current phase if the gradient norm is tiny or the cost has not improved for
n_iter_without_progress iterations.

Stopping ends the phase, not the fit: on data without well-separated clusters (word vectors, say)
the exaggerated attraction outweighs the repulsion in every direction, so the early-exaggeration
phase shrinks the whole map geometrically (x~0.9 a step) and its gradient with it; a tiny gradient
there means "collapsed", not "converged". The second phase, with P no longer exaggerated, expands
the map again from its collapsed shape, as scikit-learn's run does after the same early stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPS = np.finfo(np.float64).eps  # floor for probabilities, so log(p/q) stays finite


def squared_distances(X: np.ndarray) -> np.ndarray:
    """D_ij = ||x_i - x_j||^2, clipped at 0 against round-off."""
    X = np.asarray(X, dtype=np.float64)
    sq = (X * X).sum(axis=1)
    D = sq[:, None] + sq[None, :] - 2.0 * X @ X.T
    np.fill_diagonal(D, 0.0)
    return np.maximum(D, 0.0)


def conditional_affinities(D: np.ndarray, perplexity: float, tol: float = 1e-5, max_steps: int = 100) -> np.ndarray:
    """p_{j|i} from squared distances D, beta_i per row by bisection until |H_i - log(perplexity)| <= tol.

    H_i grows as beta_i shrinks (wider Gaussian); so too high an entropy means beta must grow.
    All rows are searched at once. Distances are shifted by each row's smallest off-diagonal
    value before exp(): p_{j|i} does not change, but exp() no longer underflows to 0.
    """
    n = D.shape[0]
    if not 1.0 < perplexity < n:
        raise ValueError(f"perplexity must be in (1, n_points={n}), got {perplexity}")
    off = ~np.eye(n, dtype=bool)
    D = np.where(off, D - np.where(off, D, np.inf).min(axis=1, keepdims=True), 0.0)
    target = np.log(perplexity)
    beta = np.ones(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    for _ in range(max_steps):
        E = np.exp(-D * beta[:, None]) * off  # a point is not its own neighbour
        Z = E.sum(axis=1)
        P = E / Z[:, None]
        H = np.log(Z) + beta * (D * P).sum(axis=1)  # = -sum_j p_{j|i} log p_{j|i}
        diff = H - target
        todo = np.abs(diff) > tol
        if not todo.any():
            break
        up = todo & (diff > 0)  # too flat -> sharpen: larger beta
        down = todo & (diff < 0)
        lo[up] = beta[up]
        beta[up] = np.where(np.isinf(hi[up]), beta[up] * 2.0, (beta[up] + hi[up]) / 2.0)
        hi[down] = beta[down]
        beta[down] = np.where(np.isinf(lo[down]), beta[down] / 2.0, (beta[down] + lo[down]) / 2.0)
    return P


def joint_probabilities(X: np.ndarray, perplexity: float) -> np.ndarray:
    """p_ij = (p_{j|i} + p_{i|j}) / 2n, floored at machine epsilon off the diagonal, 0 on it."""
    Pc = conditional_affinities(squared_distances(X), perplexity)
    n = Pc.shape[0]
    P = np.maximum((Pc + Pc.T) / (2.0 * n), EPS)
    np.fill_diagonal(P, 0.0)
    return P


def student_t_affinities(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, W): w_ij = (1 + ||y_i - y_j||^2)^-1 with w_ii = 0, q_ij = w_ij / sum W."""
    W = 1.0 / (1.0 + squared_distances(Y))
    np.fill_diagonal(W, 0.0)
    return W / W.sum(), W


def kl_divergence(P: np.ndarray, Q: np.ndarray) -> float:
    """C = sum_{i != j} p_ij log(p_ij / q_ij) (diagonal entries are 0 and skipped)."""
    off = ~np.eye(P.shape[0], dtype=bool)
    p, q = P[off], np.maximum(Q[off], EPS)
    return float(np.sum(p * np.log(np.maximum(p, EPS) / q)))


def kl_gradient(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """dC/dy_i = 4 sum_j (p_ij - q_ij) w_ij (y_i - y_j), as a matrix product: 4 (diag(M 1) - M) Y."""
    Q, W = student_t_affinities(Y)
    M = (P - Q) * W
    return 4.0 * (M.sum(axis=1)[:, None] * Y - M @ Y)


@dataclass
class TSNEResult:
    embedding: np.ndarray  # [n, n_components]
    kl_divergence: float  # KL(P || Q) of the final embedding, without exaggeration
    n_iter: int  # gradient steps taken


def initial_embedding(X: np.ndarray, n_components: int, init: str | np.ndarray, random_state: int) -> np.ndarray:
    """Tiny start so the early-exaggeration phase can shape it: std 1e-4 ("random"), or the top
    principal components rescaled to std 1e-4 along the first ("pca"), as scikit-learn does."""
    if isinstance(init, np.ndarray):
        return np.array(init, dtype=np.float64)
    if init == "random":
        return 1e-4 * np.random.default_rng(random_state).standard_normal((X.shape[0], n_components))
    if init == "pca":
        Xc = X - X.mean(axis=0)
        U, S, _ = np.linalg.svd(Xc, full_matrices=False)
        Y = U[:, :n_components] * S[:n_components]
        Y *= np.sign(Y[np.abs(Y).argmax(axis=0), range(n_components)])  # deterministic sign
        std = Y[:, 0].std()
        if std == 0:  # all points identical: no principal direction, start from noise instead
            return initial_embedding(X, n_components, "random", random_state)
        return Y / std * 1e-4
    raise ValueError(f"init must be 'random', 'pca' or an array, got {init!r}")


def fit_tsne(
    X: np.ndarray,
    n_components: int = 2,
    perplexity: float = 30.0,
    learning_rate: float = 30.0,
    early_exaggeration: float = 10.0,
    max_iter: int = 1000,
    exaggeration_iter: int = 250,
    init: str | np.ndarray = "pca",
    random_state: int = 0,
    min_grad_norm: float = 1e-7,
    n_iter_without_progress: int = 300,
    check_every: int = 50,
    progress: Callable[[int, float, bool], None] | None = None,
) -> TSNEResult:
    """Embed X ([n, d]) in n_components dimensions by minimising KL(P || Q) (see module docstring).

    ``progress(iterations done, KL, exaggerating)`` is called at every check; the KL is that of
    the exaggerated P during the first phase.
    """
    X = np.asarray(X, dtype=np.float64)
    P = joint_probabilities(X, perplexity)
    Y = initial_embedding(X, n_components, init, random_state)
    update, gains = np.zeros_like(Y), np.ones_like(Y)
    best_kl, best_iter = np.inf, 0
    exaggeration_end = exaggeration_iter  # moved earlier if the first phase stops early
    it = -1  # so that max_iter = 0 reports 0 steps
    for it in range(max_iter):
        exaggerating = it < exaggeration_end
        if it == exaggeration_end:
            # The cost changed (P no longer exaggerated): start the second phase afresh, as
            # scikit-learn does -- zero velocity, unit gains, new progress check.
            update, gains = np.zeros_like(Y), np.ones_like(Y)
            best_kl, best_iter = np.inf, it
        P_eff = P * early_exaggeration if exaggerating else P
        grad = kl_gradient(P_eff, Y)
        # A coordinate whose gradient opposes its last step is still heading downhill at a
        # steady pace: speed it up (+0.2); otherwise it overshot or just started: slow it (x0.8).
        gains = np.where(update * grad < 0.0, gains + 0.2, gains * 0.8)
        gains = np.maximum(gains, 0.01)
        update = (0.5 if exaggerating else 0.8) * update - learning_rate * gains * grad
        Y = Y + update
        if (it + 1) % check_every == 0:
            kl = kl_divergence(P_eff, student_t_affinities(Y)[0])
            if progress is not None:
                progress(it + 1, kl, exaggerating)
            patience = exaggeration_iter if exaggerating else n_iter_without_progress
            stalled = kl >= best_kl and it - best_iter > patience
            if kl < best_kl:
                best_kl, best_iter = kl, it
            if stalled or np.linalg.norm(gains * grad) <= min_grad_norm:
                if not exaggerating:
                    break
                exaggeration_end = it + 1  # see the module docstring: end this phase only
    return TSNEResult(Y, kl_divergence(P, student_t_affinities(Y)[0]), it + 1)
