"""pbexp-tsne: a labelled t-SNE picture of a run's learned word embeddings (the report's plot).

    pbexp-tsne <run dir> [--words 100] [--impl pbexp|sklearn] [--perplexity 30] [--seed 0]

Reads ``<run>/vocab.txt`` and ``<run>/checkpoints/best.pt`` (else ``last.pt``), takes the
embedding rows of the first N vocabulary words, runs exact t-SNE with the report's settings
(learning rate 30, early exaggeration 10), writes ``<run>/tsne_<impl>.png``, prints the final
KL divergence and the iteration count, and adds the embeddings (words as metadata) to the
TensorBoard projector under ``<run>/tb``.

Perplexity defaults to 30 (scikit-learn's default, and what the report's plot used): for 100
points each word's Gaussian then spans about 30 effective neighbours, within the usual rule
3 * perplexity < N - 1. For fewer words it is lowered to (N - 1) / 3 so the rule still holds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pbexp.errors import ConfigError, DataError, PbexpError

LEARNING_RATE = 30.0       # the report's settings
EARLY_EXAGGERATION = 10.0
MIN_WORDS = 5              # perplexity must exceed 1 and stay below (N - 1) / 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a one-line PbexpError instead of usage + exit."""

    def error(self, message):
        raise PbexpError(f"pbexp-tsne: {message}")


def _parse(argv) -> argparse.Namespace:
    p = _Parser(prog="pbexp-tsne", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="run directory holding vocab.txt and checkpoints/")
    p.add_argument("--words", type=int, default=100, help="embed the first N vocabulary words (default 100)")
    p.add_argument("--impl", default="pbexp", help="pbexp (pbexp.ops.tsne, default) or sklearn (TSNE, exact)")
    p.add_argument("--perplexity", type=float, default=30.0, help="default 30, capped at (N - 1) / 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=1000, help="iteration cap, at least 250 (default 1000)")
    return p.parse_args(argv)


def load_embeddings(run_dir: Path) -> tuple[list[str], np.ndarray, Path]:
    """(vocabulary words, embedding matrix [vocab, emb], checkpoint path) of a run directory."""
    if not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} does not exist")
    vocab_path = run_dir / "vocab.txt"
    if not vocab_path.is_file():
        raise DataError(f"{vocab_path} is missing: the run dir must hold the vocabulary, one word per line")
    words = vocab_path.read_text(encoding="utf-8").splitlines()
    ckpt = next((c for c in (run_dir / "checkpoints" / n for n in ("best.pt", "last.pt")) if c.is_file()), None)
    if ckpt is None:
        raise DataError(f"no checkpoint in {run_dir / 'checkpoints'}: expected best.pt or last.pt")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / unsafe pickle: all "unusable checkpoint"
        raise DataError(f"cannot load checkpoint {ckpt}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or "embedding.weight" not in model:
        keys = sorted(model)[:8] if isinstance(model, dict) else sorted(state)[:8] if isinstance(state, dict) else []
        raise DataError(f"checkpoint {ckpt} has no model['embedding.weight'] (found keys: {keys})")
    emb = model["embedding.weight"].detach().to(torch.float64).numpy()
    if emb.ndim != 2:
        raise DataError(f"checkpoint {ckpt}: embedding.weight should be [vocab, emb], got shape {list(emb.shape)}")
    return words, emb, ckpt


def run_tsne(X: np.ndarray, impl: str, perplexity: float, seed: int, max_iter: int) -> tuple[np.ndarray, float, int, float]:
    """(2-D embedding, final KL divergence, iterations, seconds) with the report's lr and
    exaggeration and PCA initialisation; the seconds cover the fit only, not the imports."""
    if impl == "pbexp":
        from pbexp.ops.tsne import fit_tsne

        t0 = time.perf_counter()
        r = fit_tsne(X, perplexity=perplexity, learning_rate=LEARNING_RATE, early_exaggeration=EARLY_EXAGGERATION,
                     max_iter=max_iter, init="pca", random_state=seed)
        return r.embedding, r.kl_divergence, r.n_iter, time.perf_counter() - t0
    from sklearn.manifold import TSNE

    t0 = time.perf_counter()
    t = TSNE(n_components=2, method="exact", perplexity=perplexity, learning_rate=LEARNING_RATE,
             early_exaggeration=EARLY_EXAGGERATION, max_iter=max_iter, init="pca", random_state=seed)
    Y = t.fit_transform(X)
    # sklearn's n_iter_ is the last 0-based index; +1 counts steps, as its own verbose log does
    return Y, float(t.kl_divergence_), int(t.n_iter_) + 1, time.perf_counter() - t0


def _overlap(a, b) -> float:
    """Area shared by two display-space boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def plot(Y: np.ndarray, words: list[str], path: Path, title: str) -> None:
    """Scatter + one label per point, each nudged to the first nearby spot that covers no other
    label or point (greedy, in display coordinates), with a leader line when moved further out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no GUI
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    fig = Figure(figsize=(13, 13), dpi=110)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.96)
    ax = fig.add_subplot()
    ax.scatter(Y[:, 0], Y[:, 1], s=10, c="tab:blue")
    ax.set_title(title, fontsize=11)
    ax.set_xticks([]), ax.set_yticks([])
    pad = 0.08 * np.ptp(Y, axis=0)  # room for labels at the edges
    ax.set_xlim(Y[:, 0].min() - pad[0], Y[:, 0].max() + pad[0])
    ax.set_ylim(Y[:, 1].min() - pad[1], Y[:, 1].max() + pad[1])
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(Y)
    taken = [(x - 3, y - 3, x + 3, y + 3) for x, y in pts]  # the markers themselves
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for i in np.argsort(-pts[:, 1]):  # top to bottom
        best = None
        for radius in (4, 10, 18, 28, 40, 60, 85, 115, 150):  # far-out spots (with a leader line) for dense clusters
            for dx, dy in directions:
                text = ax.annotate(
                    words[i], Y[i], xytext=(dx * radius, dy * radius), textcoords="offset points", fontsize=8,
                    ha={1: "left", -1: "right", 0: "center"}[dx], va={1: "bottom", -1: "top", 0: "center"}[dy],
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="0.5") if radius > 4 else None,
                )
                # The label's own box: an Annotation's extent also spans its leader line.
                text.update_positions(renderer)
                box = tuple(Text.get_window_extent(text, renderer).extents)
                cost = sum(_overlap(box, t) for t in taken)
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, text, box)
                else:
                    text.remove()
                if cost == 0:
                    break
            if best[0] == 0:
                break
        taken.append(best[2])
    fig.savefig(path)


def add_to_projector(run_dir: Path, X: np.ndarray, words: list[str]) -> Path:
    """Embeddings + words as metadata in the TensorBoard projector under <run>/tb."""
    from torch.utils.tensorboard import SummaryWriter

    tb = run_dir / "tb"
    # A rerun replaces our previous entry (same step and tag) instead of warning about it.
    shutil.rmtree(tb / "00000" / "word_embeddings", ignore_errors=True)
    writer = SummaryWriter(str(tb))
    try:
        writer.add_embedding(torch.from_numpy(X), metadata=words, tag="word_embeddings")
    finally:
        writer.close()
    return tb


def main(argv=None) -> int:
    try:
        args = _parse(argv)
        if args.impl not in ("pbexp", "sklearn"):
            raise ConfigError("--impl", args.impl, "'pbexp' or 'sklearn'")
        if args.max_iter < 250:
            raise ConfigError("--max-iter", args.max_iter, "at least 250 (the early-exaggeration phase)")
        if args.perplexity <= 1:
            raise ConfigError("--perplexity", args.perplexity, "a number above 1")
        words, emb, ckpt = load_embeddings(args.run_dir)
        n_max = min(len(words), emb.shape[0])
        if not MIN_WORDS <= args.words <= n_max:
            raise ConfigError("--words", args.words, f"an integer from {MIN_WORDS} to the vocabulary size {n_max}")
        n = args.words
        words, X = words[:n], emb[:n]
        if not np.isfinite(X).all():
            raise DataError(f"{ckpt}: the embeddings of the first {n} words contain NaN or inf")
        perplexity = min(args.perplexity, (n - 1) / 3)

        Y, kl, n_iter, secs = run_tsne(X, args.impl, perplexity, args.seed, args.max_iter)
        print(f"t-SNE ({args.impl}) of the first {n} words of {ckpt}: perplexity {perplexity:g}, "
              f"learning rate {LEARNING_RATE:g}, early exaggeration {EARLY_EXAGGERATION:g}")
        print(f"KL divergence {kl:.6f} after {n_iter} iterations ({secs:.2f} s)")

        png = args.run_dir / f"tsne_{args.impl}.png"
        plot(Y, words, png, f"t-SNE ({args.impl}) of the first {n} words — KL {kl:.4f}, {n_iter} iterations, "
                            f"perplexity {perplexity:g}")
        print(f"wrote {png}")
        tb = add_to_projector(args.run_dir, X, words)
        print(f"embeddings added to the TensorBoard projector: tensorboard --logdir {tb} (PROJECTOR tab)")
        return 0
    except PbexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
