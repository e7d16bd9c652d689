"""pbexp-report --compare RUN_A RUN_B on per-example test results built by hand: the paired bootstrap interval
and McNemar's test against independent computations, clear differences distinguishable, none not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pbexp import report
from pbexp.report import compare as cmp
from pbexp.rundir import RunDir


def write_run(path, **arrays):
    """A finished run dir holding ``arrays`` as its per-example test results (none: a run from before them)."""
    run = RunDir(path)
    run.write_results({"status": "completed", "task": "clf" if "pred" in arrays else "lm", "overrides": []})
    if arrays:
        np.savez(run.test_examples, **arrays)
    return path


def classifier_pair(tmp_path, both_right, only_a, only_b, both_wrong, seed=0):
    """Two classifiers on one test set: ``only_a`` examples only A gets right, ``only_b`` only B, and so on."""
    n = both_right + only_a + only_b + both_wrong
    label = np.random.default_rng(seed).integers(0, 2, n)
    right_a = np.array([1] * both_right + [1] * only_a + [0] * only_b + [0] * both_wrong, dtype=bool)
    right_b = np.array([1] * both_right + [0] * only_a + [1] * only_b + [0] * both_wrong, dtype=bool)
    pred_a = np.where(right_a, label, 1 - label)
    pred_b = np.where(right_b, label, 1 - label)
    a = write_run(tmp_path / "a", pred=pred_a.astype(np.int64), label=label.astype(np.int64))
    b = write_run(tmp_path / "b", pred=pred_b.astype(np.int64), label=label.astype(np.int64))
    return a, b


def lm_windows(windows=500, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(10, 31, windows).astype(np.int64)
    loss_sum = tokens * rng.uniform(3.5, 4.5, windows)  # about 4 nats a token: ppl about 55
    return loss_sum, tokens


def exact_mcnemar_p(only_a, only_b):
    """Two-sided exact binomial test of only_a vs only_b at p = 1/2, from the binomial coefficients."""
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def chi2_mcnemar_p(only_a, only_b):
    """Chi-square with continuity correction, 1 degree of freedom: P(X > x) = erfc(sqrt(x / 2))."""
    statistic = (abs(only_a - only_b) - 1) ** 2 / (only_a + only_b)
    return statistic, math.erfc(math.sqrt(statistic / 2))


def main(capsys, *args):
    code = report.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# Classifiers


def test_a_clear_accuracy_difference_against_a_hand_computation(tmp_path, capsys):
    a, b = classifier_pair(tmp_path, both_right=1500, only_a=300, only_b=100, both_wrong=100)
    result = cmp.compare(a, b)
    assert (result["a"], result["b"], result["difference"]) == pytest.approx((0.9, 0.8, 0.1))
    # The bootstrap mean of d = right_a - right_b over 2000 draws: about normal, mean 0.1 and standard error
    # sqrt(var(d) / N), var(d) = E[d^2] - 0.1^2 = 400/2000 - 0.01 = 0.19.
    se = math.sqrt(0.19 / 2000)
    low, high = result["interval95"]
    assert low == pytest.approx(0.1 - 1.959964 * se, abs=0.0015)
    assert high == pytest.approx(0.1 + 1.959964 * se, abs=0.0015)
    assert result["distinguishable"] and result["resamples"] == 10_000
    statistic, p = chi2_mcnemar_p(300, 100)
    m = result["mcnemar"]
    assert m["test"] == "chi-square, continuity corrected" and (m["only_a"], m["only_b"]) == (300, 100)
    assert m["statistic"] == pytest.approx(statistic) and m["p"] == pytest.approx(p, rel=1e-6)
    assert cmp.compare(a, b)["interval95"] == [low, high]  # seeded: the same figures every time

    code, out, _ = main(capsys, "--compare", a, b)
    assert code == 0
    assert "test accuracy (higher is better) over 2,000 paired test examples" in out
    assert "A - B: +0.1000" in out and f"[{low:+.4f}, {high:+.4f}]" in out and "10,000 resamples" in out
    assert "McNemar (chi-square, continuity corrected): 300 examples only A gets right, 100 only B" in out
    assert "distinguishable: the interval excludes 0" in out and "not distinguishable" not in out


def test_few_discordant_pairs_take_the_exact_binomial_test(tmp_path):
    a, b = classifier_pair(tmp_path, both_right=20, only_a=3, only_b=12, both_wrong=5)
    m = cmp.compare(a, b)["mcnemar"]
    assert m["test"] == "exact binomial" and m["statistic"] is None
    assert m["p"] == pytest.approx(exact_mcnemar_p(3, 12), rel=1e-9) == pytest.approx(2 * 576 / 2**15)
    # 24 discordant pairs: still exact; 25: chi-square.
    a, b = classifier_pair(tmp_path / "24", both_right=50, only_a=19, only_b=5, both_wrong=6)
    m = cmp.compare(a, b)["mcnemar"]
    assert m["test"] == "exact binomial" and m["p"] == pytest.approx(exact_mcnemar_p(19, 5), rel=1e-9)
    a, b = classifier_pair(tmp_path / "25", both_right=50, only_a=20, only_b=5, both_wrong=5)
    m = cmp.compare(a, b)["mcnemar"]
    assert m["test"] == "chi-square, continuity corrected"
    assert m["p"] == pytest.approx(chi2_mcnemar_p(20, 5)[1], rel=1e-6)


@pytest.mark.parametrize("only_each", [0, 10], ids=["same predictions", "as many wins as losses"])
def test_no_difference_is_not_distinguishable(tmp_path, capsys, only_each):
    a, b = classifier_pair(tmp_path, both_right=150, only_a=only_each, only_b=only_each, both_wrong=30)
    result = cmp.compare(a, b)
    low, high = result["interval95"]
    assert result["difference"] == 0 and low <= 0 <= high and not result["distinguishable"]
    assert result["mcnemar"]["p"] == 1.0
    if only_each == 0:
        assert low == high == 0  # every resample: the same examples right in both
    code, out, _ = main(capsys, "--compare", a, b)
    assert "not distinguishable: the interval covers 0" in out


# ---------------------------------------------------------------------------------------------
# Language models: perplexity exp(sum loss / sum tokens), recomputed on each resample of windows


def test_perplexity_difference_against_an_independent_bootstrap(tmp_path, capsys):
    loss_a, tokens = lm_windows()
    loss_b = loss_a + np.random.default_rng(1).normal(0.0, 2.0, len(tokens))  # noisy, no clear winner
    a = write_run(tmp_path / "a", loss_sum=loss_a, tokens=tokens)
    b = write_run(tmp_path / "b", loss_sum=loss_b, tokens=tokens)
    result = cmp.compare(a, b)
    ppl_a, ppl_b = math.exp(loss_a.sum() / tokens.sum()), math.exp(loss_b.sum() / tokens.sum())
    assert (result["a"], result["b"]) == pytest.approx((ppl_a, ppl_b), rel=1e-12)
    assert result["metric"] == "test/ppl" and result["mcnemar"] is None

    # The same bootstrap written out plainly, one resample at a time, from another random stream.
    rng = np.random.default_rng(12345)
    diffs = []
    for _ in range(10_000):
        i = rng.integers(0, len(tokens), len(tokens))
        diffs.append(math.exp(loss_a[i].sum() / tokens[i].sum()) - math.exp(loss_b[i].sum() / tokens[i].sum()))
    want_low, want_high = np.percentile(diffs, [2.5, 97.5])
    low, high = result["interval95"]
    width = want_high - want_low
    assert abs(low - want_low) < 0.05 * width and abs(high - want_high) < 0.05 * width
    assert result["distinguishable"] == (not low <= 0 <= high)

    code, out, _ = main(capsys, "--compare", a, b, "--format", "json", "--resamples", "2000")
    assert code == 0 and json.loads(out)["resamples"] == 2000 and json.loads(out)["a"] == pytest.approx(ppl_a)


def test_a_clear_perplexity_difference_is_distinguishable_and_none_is_not(tmp_path, capsys):
    loss_a, tokens = lm_windows()
    a = write_run(tmp_path / "a", loss_sum=loss_a, tokens=tokens)
    worse = write_run(tmp_path / "worse", loss_sum=loss_a + 0.1 * tokens, tokens=tokens)  # ppl x e^0.1 everywhere
    same = write_run(tmp_path / "same", loss_sum=loss_a.copy(), tokens=tokens)
    result = cmp.compare(a, worse)
    assert result["b"] == pytest.approx(result["a"] * math.exp(0.1), rel=1e-12)
    assert result["interval95"][1] < 0 and result["distinguishable"]
    result = cmp.compare(a, same)
    assert result["difference"] == 0 and result["interval95"] == [0.0, 0.0] and not result["distinguishable"]
    code, out, _ = main(capsys, "--compare", a, worse)
    assert "test perplexity (lower is better) over 500 paired test windows" in out
    assert "distinguishable: the interval excludes 0" in out and "McNemar" not in out


# ---------------------------------------------------------------------------------------------
# Bad input: one line each


def test_bad_input_is_one_line(tmp_path, capsys):
    a, b = classifier_pair(tmp_path, both_right=10, only_a=2, only_b=1, both_wrong=2)
    short = write_run(tmp_path / "short", pred=np.zeros(14, np.int64), label=np.zeros(14, np.int64))
    old = write_run(tmp_path / "old")
    loss, tokens = lm_windows(15)
    lm = write_run(tmp_path / "lm", loss_sum=loss, tokens=tokens)
    relabelled = write_run(tmp_path / "relabelled", pred=np.zeros(15, np.int64), label=np.ones(15, np.int64))
    odd = write_run(tmp_path / "odd", scores=np.zeros(15))
    corrupt = write_run(tmp_path / "corrupt")
    RunDir(corrupt).test_examples.write_bytes(b"not a zip")
    cases = {
        (a, short): f"{a} has 15 test examples and {short} has 14",
        (a, old): "predates per-example test results; write them from its best weights with: pbexp-eval",
        (a, lm): "holds classifier results and",
        (a, relabelled): "test labels differ",
        (a, odd): "holds ['scores']; expected the arrays pred+label or loss_sum+tokens",
        (a, corrupt): "is not readable",
        (a, tmp_path / "nowhere"): "is not a run dir",
    }
    for (x, y), needle in cases.items():
        code, out, err = main(capsys, "--compare", x, y)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and needle in err, err
    for args, needle in [
        (["--compare", a, b, tmp_path], "takes no other dirs"),
        (["--compare", a, b, "--resamples", "5"], "--resamples=5 is not allowed"),
        (["--compare", a, b, "--format", "csv"], "not csv"),
        (["--compare", a], "expected 2 arguments"),
        ([], "dirs are required"),
    ]:
        code, out, err = main(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
