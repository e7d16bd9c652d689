"""pbexp-tsne: a labelled t-SNE picture of a run's learned word embeddings (the report's plot).

    pbexp-tsne <run dir> [--words 100] [--order frequency|vocab] [--impl pbexp|sklearn|barnes-hut]
               [--perplexity 30] [--seed 0] [--max-iter 1000] [--out DIR]

Reads the run's vocabulary file and its best checkpoint (else the last; see pbexp.rundir) and takes
the embedding rows of N words: by default the N most frequent in the run's training split
(``--order frequency``; the vocabulary itself is in order of first appearance, so its first words
are arbitrary, often rare names), or the first N of the vocabulary file (``--order vocab``). The
counts come from the training data named by the config the run was started with, read by the
project's own dataset loader (never downloaded here). It then runs t-SNE with the report's settings (learning
rate 30, early exaggeration 10), printing the KL divergence every 50 iterations, writes
``<out>/tsne_<impl>.png`` (labels on the first 1000 of the words), prints the final KL divergence
and the iteration count, and adds the embeddings (words as metadata) to the TensorBoard projector
in ``<out>``'s TensorBoard folder. ``--out`` defaults to the run directory.

``pbexp`` (pbexp.ops.tsne, the default) and ``sklearn`` (scikit-learn's exact method) are exact
t-SNE, O(N^2) time and memory a step, so they take at most 2000 words; ``barnes-hut``
(scikit-learn's O(N log N) approximation) takes the whole vocabulary.

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
from pbexp.rundir import RunDir

LEARNING_RATE = 30.0  # the report's settings
EARLY_EXAGGERATION = 10.0
MIN_WORDS = 5  # perplexity must exceed 1 and stay below (N - 1) / 3
EXACT_IMPLS = ("pbexp", "sklearn")
IMPLS = (*EXACT_IMPLS, "barnes-hut")
EXACT_MAX_WORDS = 2000  # exact t-SNE: ~45 ms a step at 2000 words on one core, and it grows as N^2
ORDERS = ("frequency", "vocab")
MAX_LABELS = 1000  # more labels than this cover a 13-inch picture; the rest stay unlabelled points
CHECK_EVERY = 50  # iterations between progress lines (scikit-learn's verbose log has the same)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a one-line PbexpError instead of usage + exit."""

    def error(self, message):
        raise PbexpError(f"pbexp-tsne: {message}")


def _parse(argv) -> argparse.Namespace:
    p = _Parser(prog="pbexp-tsne", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="run directory holding the run's vocabulary file and checkpoints")
    p.add_argument("--words", type=int, default=100, help="embed N words (default 100)")
    p.add_argument(
        "--order",
        default="frequency",
        help="which N words: frequency (the most frequent in the training split, default) or vocab "
        "(the first N of the run's vocabulary file)",
    )
    p.add_argument(
        "--impl",
        default="pbexp",
        help=f"pbexp (pbexp.ops.tsne, default) or sklearn: exact, at most {EXACT_MAX_WORDS} words; "
        "barnes-hut: scikit-learn's Barnes-Hut approximation, any N",
    )
    p.add_argument("--perplexity", type=float, default=30.0, help="default 30, capped at (N - 1) / 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=1000, help="iteration cap, at least 250 (default 1000)")
    p.add_argument(
        "--out", type=Path, help="folder for the PNG and the projector's TensorBoard files (default: the run dir)"
    )
    return p.parse_args(argv)


def load_embeddings(run_dir: Path) -> tuple[list[str], np.ndarray, Path]:
    """(vocabulary words, embedding matrix [vocab, emb], checkpoint path) of a run directory."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise DataError(f"run directory {run_dir} does not exist")
    if not run.vocab.is_file():
        raise DataError(f"{run.vocab} is missing: the run dir must hold the vocabulary, one word per line")
    words = run.vocab.read_text(encoding="utf-8").splitlines()
    ckpt = run.weights()
    if ckpt is None:
        raise DataError(f"no checkpoint in {run.checkpoints}: expected {run.best.name} or {run.last.name}")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / unsafe pickle: all "unusable checkpoint"
        raise DataError(
            f"cannot load checkpoint {ckpt}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or "embedding.weight" not in model:
        keys = sorted(model)[:8] if isinstance(model, dict) else sorted(state)[:8] if isinstance(state, dict) else []
        raise DataError(f"checkpoint {ckpt} has no model['embedding.weight'] (found keys: {keys})")
    emb = model["embedding.weight"].detach().to(torch.float64).numpy()
    if emb.ndim != 2:
        raise DataError(f"checkpoint {ckpt}: embedding.weight should be [vocab, emb], got shape {list(emb.shape)}")
    return words, emb, ckpt


def training_counts(run_dir: Path, words: list[str]) -> np.ndarray:
    """How often each vocabulary word occurs in the run's training split: the data named by the
    config the run was started with, read by the project's dataset loader, as the model saw it."""
    from omegaconf import OmegaConf

    from pbexp.config import instantiate

    run = RunDir(run_dir)
    config = run.config
    dataset = OmegaConf.load(config).get("dataset") if config.is_file() else None
    if dataset is None:
        raise DataError(
            f"--order frequency counts words in the run's training data, named by the dataset in "
            f"{config}, which is missing; use --order vocab for {run.vocab.name}'s order"
        )
    try:
        data = instantiate(dataset, download=False)  # counting words is no reason to download a corpus
    except DataError as e:
        raise DataError(
            f"--order frequency counts words in the run's training data: {e} Or use --order vocab."
        ) from None
    if data.vocab.itos != words:
        raise DataError(
            f"the training data named by {config} has another vocabulary than {run.vocab}; use --order vocab"
        )
    ids = data.train if data.task == "lm" else data.train_x[data.train_x != data.pad_idx]  # padding is no word
    return torch.bincount(ids.flatten(), minlength=len(words)).numpy()


def run_tsne(
    X: np.ndarray, impl: str, perplexity: float, seed: int, max_iter: int, progress: bool = False
) -> tuple[np.ndarray, float, int, float]:
    """(2-D embedding, final KL divergence, iterations, seconds) with the report's lr and
    exaggeration and PCA initialisation; the seconds cover the fit only, not the imports.
    With ``progress``, a line with the KL every CHECK_EVERY iterations (scikit-learn's own log
    for its implementations)."""
    # The report's settings, the same for every implementation.
    settings = dict(
        perplexity=perplexity,
        learning_rate=LEARNING_RATE,
        early_exaggeration=EARLY_EXAGGERATION,
        max_iter=max_iter,
        init="pca",
        random_state=seed,
    )
    if impl == "pbexp":
        from pbexp.ops.tsne import fit_tsne

        t0 = time.perf_counter()

        def report(done: int, kl: float, exaggerating: bool) -> None:
            phase = " (P exaggerated)" if exaggerating else ""
            print(f"  iteration {done}/{max_iter}: KL {kl:.4f}{phase}, {time.perf_counter() - t0:.1f} s", flush=True)

        r = fit_tsne(X, **settings, check_every=CHECK_EVERY, progress=report if progress else None)
        return r.embedding, r.kl_divergence, r.n_iter, time.perf_counter() - t0
    from sklearn.manifold import TSNE

    t0 = time.perf_counter()
    method = "exact" if impl == "sklearn" else "barnes_hut"
    t = TSNE(n_components=2, method=method, **settings, verbose=2 if progress else 0)
    Y = t.fit_transform(X)
    # sklearn's n_iter_ is the last 0-based index; +1 counts steps, as its own verbose log does
    return Y, float(t.kl_divergence_), int(t.n_iter_) + 1, time.perf_counter() - t0


# Candidate label spots, in the order tried: offsets in points (far-out ones, with a leader line,
# for dense clusters) times the 8 directions around the point.
LABEL_SPOTS = [
    (radius, dx, dy)
    for radius in (4, 10, 18, 28, 40, 60, 85, 115, 150)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
]
MARKER_HALF = 3.0  # pixels: the box a marker keeps free of labels


def place_labels(points: np.ndarray, sizes: np.ndarray, px_per_pt: float) -> tuple[list[int], int]:
    """Greedy label placement in display pixels, for the first len(sizes) points (taken top to
    bottom): the index into LABEL_SPOTS of the first spot whose box overlaps no marker and no
    label placed before, else of the least overlapping one; and the work done, counted as
    overlaps computed (candidate spots x boxes within reach).

    The work is bounded: each label compares its len(LABEL_SPOTS) spots with the boxes within its
    reach (one vectorised pass over the boxes finds them), so at most len(LABEL_SPOTS) *
    (len(points) + len(sizes)) overlaps a label; plot() labels at most MAX_LABELS points.
    points: [N, 2] markers; sizes: [L, 2] label widths and heights, L <= N."""
    spots = np.array(LABEL_SPOTS, dtype=np.float64)
    offsets = spots[:, :1] * px_per_pt * spots[:, 1:]  # [spots, 2] anchor offsets in pixels
    align = (1.0 - spots[:, 1:]) / 2.0  # the share of a label left of / below its anchor: 0, 1/2 or 1
    boxes = np.empty((len(points) + len(sizes), 4))  # x0, y0, x1, y1 of every marker, then of each label placed
    boxes[: len(points)] = np.hstack([points - MARKER_HALF, points + MARKER_HALF])
    n_boxes, work = len(points), 0
    choice = [0] * len(sizes)
    for i in np.argsort(-points[: len(sizes), 1], kind="stable"):  # top to bottom
        low = points[i] + offsets - align * sizes[i]
        cand = np.hstack([low, low + sizes[i]])  # [spots, 4]
        taken = boxes[:n_boxes]
        near = taken[((taken[:, 2:] > cand[:, :2].min(axis=0)) & (taken[:, :2] < cand[:, 2:].max(axis=0))).all(axis=1)]
        w = np.minimum(cand[:, None, 2], near[:, 2]) - np.maximum(cand[:, None, 0], near[:, 0])
        h = np.minimum(cand[:, None, 3], near[:, 3]) - np.maximum(cand[:, None, 1], near[:, 1])
        cost = (np.clip(w, 0, None) * np.clip(h, 0, None)).sum(axis=1)
        work += len(cand) * len(near)
        choice[i] = int(np.argmin(cost))  # the first free spot if there is one: argmin takes the first minimum
        boxes[n_boxes] = cand[choice[i]]
        n_boxes += 1
    return choice, work


def plot(Y: np.ndarray, words: list[str], path: Path, title: str) -> int:
    """Scatter of all points, a label on the first MAX_LABELS (see place_labels); returns how many
    were labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no GUI
    from matplotlib.collections import LineCollection
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
    probe = Text(fontsize=8, figure=fig)  # measures each label once: its size does not depend on where it goes
    sizes = np.zeros((min(len(words), MAX_LABELS), 2))
    for i in range(len(sizes)):
        probe.set_text(words[i])
        box = probe.get_window_extent(renderer)
        sizes[i] = box.width, box.height
    pts = ax.transData.transform(Y)
    choice, _ = place_labels(pts, sizes, fig.dpi / 72)
    leaders = []  # (point, label anchor: the label's corner or edge facing the point), in pixels
    for i, spot in enumerate(choice):
        radius, dx, dy = LABEL_SPOTS[spot]
        ax.annotate(
            words[i],
            Y[i],
            xytext=(dx * radius, dy * radius),
            textcoords="offset points",
            fontsize=8,
            ha={1: "left", -1: "right", 0: "center"}[dx],
            va={1: "bottom", -1: "top", 0: "center"}[dy],
        )
        if radius > 4:  # moved away from its point: a leader line says whose label it is
            leaders += [pts[i], pts[i] + np.array([dx, dy]) * radius * fig.dpi / 72]
    # One collection for all leader lines: an annotation's own arrow is clipped to its text box
    # at draw time, which took most of the drawing time with a thousand labels.
    if leaders:
        segments = ax.transData.inverted().transform(np.array(leaders)).reshape(-1, 2, 2)
        ax.add_collection(LineCollection(segments, lw=0.4, colors="0.5"), autolim=False)
    fig.savefig(path)
    return len(choice)


def add_to_projector(out: Path, X: np.ndarray, words: list[str]) -> Path:
    """Embeddings + words as metadata in the TensorBoard projector, in ``out``'s TensorBoard folder (the run
    layout's, so a run dir's TensorBoard shows them beside its scalars)."""
    from torch.utils.tensorboard import SummaryWriter

    tb = RunDir(out).tb
    # A rerun replaces our previous entry (same step and tag) instead of warning about it.
    shutil.rmtree(tb / "00000" / "word_embeddings", ignore_errors=True)
    writer = SummaryWriter(str(tb))
    try:
        writer.add_embedding(torch.from_numpy(X), metadata=words, tag="word_embeddings")
    finally:
        writer.close()
    return tb


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
        if args.impl not in IMPLS:
            raise ConfigError("--impl", args.impl, " or ".join(repr(i) for i in IMPLS))
        if args.order not in ORDERS:
            raise ConfigError("--order", args.order, " or ".join(repr(o) for o in ORDERS))
        if args.max_iter < 250:
            raise ConfigError("--max-iter", args.max_iter, "at least 250 (the early-exaggeration phase)")
        if args.perplexity <= 1:
            raise ConfigError("--perplexity", args.perplexity, "a number above 1")
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise ConfigError("--out", str(args.out), "a folder (this is a file)")
        if args.impl in EXACT_IMPLS and args.words > EXACT_MAX_WORDS:
            raise ConfigError(
                "--words",
                args.words,
                f"at most {EXACT_MAX_WORDS} with the exact --impl {args.impl} "
                "(its time and memory grow as N^2); --impl barnes-hut takes more",
            )
        words, emb, ckpt = load_embeddings(args.run_dir)
        n_max = min(len(words), emb.shape[0])
        if not MIN_WORDS <= args.words <= n_max:
            raise ConfigError("--words", args.words, f"an integer from {MIN_WORDS} to the vocabulary size {n_max}")
        n = args.words
        if args.order == "frequency":
            counts = training_counts(args.run_dir, words)[:n_max]
            chosen = np.argsort(-counts, kind="stable")[:n]  # ties keep the vocabulary file's order
            which = f"the {n} most frequent words"
        else:
            chosen = np.arange(n)
            which = f"the first {n} words of {RunDir(args.run_dir).vocab.name}"
        words, X = [words[i] for i in chosen], emb[chosen]
        if not np.isfinite(X).all():
            raise DataError(f"{ckpt}: the embeddings of {which} contain NaN or inf")
        perplexity = min(args.perplexity, (n - 1) / 3)

        print(
            f"t-SNE ({args.impl}) of {which} of {ckpt}: perplexity {perplexity:g}, "
            f"learning rate {LEARNING_RATE:g}, early exaggeration {EARLY_EXAGGERATION:g}",
            flush=True,
        )
        Y, kl, n_iter, secs = run_tsne(X, args.impl, perplexity, args.seed, args.max_iter, progress=True)
        print(f"KL divergence {kl:.6f} after {n_iter} iterations ({secs:.2f} s)")

        out = args.out or args.run_dir
        out.mkdir(parents=True, exist_ok=True)
        png = out / f"tsne_{args.impl}.png"
        labelled = plot(
            Y,
            words,
            png,
            f"t-SNE ({args.impl}) of {which} — KL {kl:.4f}, {n_iter} iterations, perplexity {perplexity:g}",
        )
        print(f"wrote {png}" + (f" (labels on the first {labelled} of the {n} words)" if labelled < n else ""))
        tb = add_to_projector(out, X, words)
        print(f"embeddings added to the TensorBoard projector: tensorboard --logdir {tb} (PROJECTOR tab)")
        return 0
    except PbexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
