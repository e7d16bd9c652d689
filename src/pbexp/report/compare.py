"""``pbexp-report --compare RUN_A RUN_B``: is run A's headline test metric really different from run B's?

Both runs' per-example test results (``RunDir.test_examples``: classifiers ``pred`` and ``label``, language
models ``loss_sum`` and ``tokens`` per test window) give:

* the difference A - B of the metric (accuracy; perplexity exp(sum loss_sum / sum tokens) for a language model);
* a paired bootstrap 95 % interval of that difference: the test examples (windows) are resampled with
  replacement, the same indices for both runs, the metric recomputed on each resample (``--resamples``, 10,000
  by default, seed 0), and the interval is the 2.5th and 97.5th percentiles of the differences. It covers 0:
  "not distinguishable";
* for two classifiers, McNemar's test on the examples exactly one of them gets right: exact (two-sided binomial,
  p = 0.5) when there are fewer than 25 such examples, else chi-square with continuity correction (1 df).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pbexp.report.runs import ReportError
from pbexp.rundir import RunDir

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
EXACT_BELOW = 25  # discordant pairs: the exact binomial test below this, chi-square (continuity corrected) from it
CHUNK_ELEMENTS = 4_000_000  # resampled indices held at once (32 MB): 25,000 examples -> 160 resamples a chunk
KINDS = {"clf": ("pred", "label"), "lm": ("loss_sum", "tokens")}


@dataclass
class Examples:
    """One run's per-example test results."""

    run: Path
    kind: str  # clf | lm
    arrays: dict

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def metric(self, idx: np.ndarray) -> np.ndarray:
        """The metric on each row of indices [resamples, N]: accuracy, or perplexity over the windows taken."""
        if self.kind == "clf":
            correct = self.arrays["pred"] == self.arrays["label"]
            return correct[idx].mean(axis=-1)
        return np.exp(self.arrays["loss_sum"][idx].sum(axis=-1) / self.arrays["tokens"][idx].sum(axis=-1))

    def value(self) -> float:
        return float(self.metric(np.arange(len(self))[None, :])[0])


def load_examples(run: Path) -> Examples:
    """A run's test_examples.npz, checked: one kind's two arrays, one dimension, the same length."""
    run_dir = RunDir(run)
    if not run.is_dir() or not RunDir.is_run(run):
        raise ReportError(f"--compare: {run} is not a run dir (it holds no {run_dir.results.name} or .hydra/)")
    path = run_dir.test_examples
    if not path.is_file():
        raise ReportError(
            f"--compare: {run} has no {path.name}: the run predates per-example test results; write them from "
            f"its best weights with: pbexp-eval {run} --write-examples"
        )
    arrays = run_dir.read_test_examples()
    if arrays is None:
        raise ReportError(f"--compare: {path} is not readable (not an npz archive): rerun the run to write it again")
    kind = next((k for k, keys in KINDS.items() if set(keys) <= set(arrays)), None)
    if kind is None:
        wanted = " or ".join(f"{a}+{b}" for a, b in KINDS.values())
        raise ReportError(f"--compare: {path} holds {sorted(arrays)}; expected the arrays {wanted}")
    arrays = {k: arrays[k] for k in KINDS[kind]}
    shapes = {k: a.shape for k, a in arrays.items()}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ReportError(f"--compare: {path}: the arrays must be one-dimensional and of one length, got {shapes}")
    if kind == "lm" and (np.any(arrays["tokens"] <= 0) or not np.all(np.isfinite(arrays["loss_sum"]))):
        raise ReportError(f"--compare: {path}: every window needs tokens > 0 and a finite loss_sum")
    if len(arrays[KINDS[kind][0]]) == 0:
        raise ReportError(f"--compare: {path} holds no test examples")
    return Examples(run, kind, arrays)


def paired_bootstrap(a: Examples, b: Examples, resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The difference metric(A) - metric(B) on each of ``resamples`` resamples of the test examples, the same
    indices for both runs (drawn in chunks of a size fixed by N, so the result depends only on N and the seed)."""
    n = len(a)
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ELEMENTS // n)
    diffs = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        diffs.append(a.metric(idx) - b.metric(idx))
    return np.concatenate(diffs)


def mcnemar(a: Examples, b: Examples) -> dict:
    """McNemar's test on the examples exactly one classifier gets right (only_a, only_b): the exact two-sided
    binomial test when only_a + only_b < EXACT_BELOW, else chi-square (|only_a - only_b| - 1)^2 / (only_a + only_b)."""
    from scipy.stats import binom, chi2  # imported here: scipy takes a while to load

    right_a = a.arrays["pred"] == a.arrays["label"]
    right_b = b.arrays["pred"] == b.arrays["label"]
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    discordant = only_a + only_b
    if discordant < EXACT_BELOW:
        p = 1.0 if discordant == 0 else min(1.0, 2 * float(binom.cdf(min(only_a, only_b), discordant, 0.5)))
        return {"test": "exact binomial", "only_a": only_a, "only_b": only_b, "statistic": None, "p": p}
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    p = float(chi2.sf(statistic, 1))
    test = "chi-square, continuity corrected"
    return {"test": test, "only_a": only_a, "only_b": only_b, "statistic": statistic, "p": p}


def compare(run_a: Path, run_b: Path, resamples: int = RESAMPLES) -> dict:
    """Everything --compare prints, as data."""
    a, b = load_examples(run_a), load_examples(run_b)
    if a.kind != b.kind:
        words = {"clf": "classifier", "lm": "language-model"}
        raise ReportError(
            f"--compare: {run_a} holds {words[a.kind]} results and {run_b} {words[b.kind]} results: compare one task"
        )
    if len(a) != len(b):
        raise ReportError(
            f"--compare: {run_a} has {len(a)} test examples and {run_b} has {len(b)}: a paired comparison needs "
            "the same test set"
        )
    if a.kind == "clf" and not np.array_equal(a.arrays["label"], b.arrays["label"]):
        differ = int(np.sum(a.arrays["label"] != b.arrays["label"]))
        raise ReportError(f"--compare: the runs' test labels differ at {differ} examples: not the same test set")
    diffs = paired_bootstrap(a, b, resamples)
    low, high = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
    value_a, value_b = a.value(), b.value()
    return {
        "metric": "test/acc" if a.kind == "clf" else "test/ppl",
        "better": "higher" if a.kind == "clf" else "lower",
        "run_a": str(run_a),
        "run_b": str(run_b),
        "examples": len(a),
        "a": value_a,
        "b": value_b,
        "difference": value_a - value_b,
        "interval95": [low, high],
        "resamples": resamples,
        "seed": BOOTSTRAP_SEED,
        "distinguishable": not (low <= 0.0 <= high),
        "mcnemar": mcnemar(a, b) if a.kind == "clf" else None,
    }


def as_text(result: dict) -> str:
    d = 4 if result["metric"] == "test/acc" else 3
    what = "test accuracy" if result["metric"] == "test/acc" else "test perplexity"
    unit = "examples" if result["metric"] == "test/acc" else "windows"
    low, high = result["interval95"]
    lines = [
        f"{what} ({result['better']} is better) over {result['examples']:,} paired test {unit}",
        f"  A {result['run_a']}: {result['a']:.{d}f}",
        f"  B {result['run_b']}: {result['b']:.{d}f}",
        f"  A - B: {result['difference']:+.{d}f}, paired bootstrap 95% interval [{low:+.{d}f}, {high:+.{d}f}] "
        f"({result['resamples']:,} resamples of the test {unit}, seed {result['seed']})",
    ]
    m = result["mcnemar"]
    if m:
        statistic = f"chi2 = {m['statistic']:.3f}, " if m["statistic"] is not None else ""
        lines.append(
            f"  McNemar ({m['test']}): {m['only_a']} examples only A gets right, {m['only_b']} only B; "
            f"{statistic}p = {m['p']:.4g}"
        )
    verdict = (
        "distinguishable: the interval excludes 0"
        if result["distinguishable"]
        else ("not distinguishable: the interval covers 0")
    )
    lines.append(f"  {verdict}")
    return "\n".join(lines) + "\n"
