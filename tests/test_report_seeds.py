"""Seeds as an axis in pbexp-report: runs that differ only in ``seed`` are one row, mean ± sample std with n
(and the 95 % t interval with --ci). Real sweeps (a tiny model over 3 seeds; a dataset config of one's own,
which gets the generic table) and fake run dirs for the failure cases."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml

from helpers.cli import run_cli
from helpers.configs import TINY_LM
from pbexp import report
from pbexp.rundir import RunDir

T_975_DF2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (from a t table)
SHORT = ["trainer.epochs=1", "trainer.limit_batches=10"]


def run_report(capsys, *args) -> str:
    code = report.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def markdown_rows(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in ln.strip("|").split(" | ")]  # noqa: E731
    return [dict(zip(split(lines[0]), split(ln))) for ln in lines[2:]]


def sweep(tmp_path, tiny_ptb, args, options=(), name="sweep"):
    out = tmp_path / name
    overrides = [*TINY_LM, f"dataset.root={tiny_ptb}", *SHORT, *args, f"hydra.sweep.dir={out}"]
    proc = run_cli([*options, "-m", *overrides], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# ---------------------------------------------------------------------------------------------
# Real sweeps


def test_a_sweep_over_three_seeds_reports_mean_and_std_of_its_runs(tmp_path, tiny_ptb, capsys):
    out = sweep(tmp_path, tiny_ptb, ["model=lstm,gru", "seed=1,2,3"])
    results = [RunDir(job).read_results() for job in sorted(out.iterdir()) if job.name.isdigit()]
    assert len(results) == 6 and all(r["status"] == "completed" for r in results)
    test_ppl = {
        cell: [r["test/ppl"] for r in results if f"model={model}" in r["overrides"]]
        for cell, model in (("LSTM", "lstm"), ("GRU", "gru"))
    }
    assert all(len(v) == 3 and len(set(v)) == 3 for v in test_ppl.values())  # the seeds made three runs

    text = run_report(capsys, out)  # --table auto: the seeds are not what the rows vary
    assert text.startswith("**Problem 6 - RNN types (PTB): 6 run(s) in 2 setting(s) over seeds")
    rows = {r["RNN type"]: r for r in markdown_rows(text)}
    assert set(rows) == {"LSTM", "GRU"}
    for cell, values in test_ppl.items():
        mean, std = statistics.mean(values), statistics.stdev(values)  # stdev: the sample std (n - 1)
        assert rows[cell]["Test ppl"] == f"{mean:.2f} ± {std:.2f} (n=3)"
        assert rows[cell]["Status"] == "completed" and rows[cell]["Run"].count("sweep/") == 3

    rows = {r["RNN type"]: r for r in json.loads(run_report(capsys, out, "--format", "json", "--ci"))}
    for cell, values in test_ppl.items():
        mean, std = statistics.mean(values), statistics.stdev(values)
        row = rows[cell]
        assert (row["Test ppl"], row["Test ppl std"], row["Test ppl n"]) == (
            pytest.approx(mean, rel=1e-12),
            pytest.approx(std, rel=1e-9),
            3,
        )
        assert sorted(row["Test ppl values"]) == sorted(values)
        half = T_975_DF2 * std / math.sqrt(3)
        assert row["Test ppl ci95 low"] == pytest.approx(mean - half, rel=1e-9)
        assert row["Test ppl ci95 high"] == pytest.approx(mean + half, rel=1e-9)

    # Two of the runs, paired on their test windows: the same perplexities as their results.
    text = run_report(capsys, "--compare", out / "0", out / "1", "--format", "json")
    compared = json.loads(text)
    assert (compared["a"], compared["b"]) == pytest.approx((results[0]["test/ppl"], results[1]["test/ppl"]), rel=1e-9)


def test_a_dataset_of_ones_own_gets_the_generic_table_named_after_it(tmp_path, tiny_ptb, capsys):
    """Before: model=lstm,gru on any language data was 'Problem 6 - RNN types (PTB)' with PTB's reference marks."""
    own = tmp_path / "my_configs" / "dataset"
    own.mkdir(parents=True)
    (own / "tinytext.yaml").write_text("_target_: pbexp.data.ptb.load_ptb\nroot: data\ndownload: false\n")
    out = sweep(tmp_path, tiny_ptb, ["dataset=tinytext", "model=lstm,gru"], options=["--config-dir", own.parent])
    text = run_report(capsys, out, "--with-report")
    assert text.startswith("**Runs (tinytext): 2 run(s)")
    rows = markdown_rows(text)
    assert {"train/ppl", "valid/ppl", "test/ppl"} <= set(rows[0])
    for row, job in zip(rows, ("0", "1")):
        assert row["test/ppl"] == f"{RunDir(out / job).read_results()['test/ppl']:.2f}"
    assert "Zaremba" not in text and "Published reference marks" not in text  # PTB's marks are not its


# ---------------------------------------------------------------------------------------------
# Fake run dirs


def lm_config(seed, cell="LSTM", emb=200, threads=0) -> dict:
    return {
        "seed": seed,
        "dataset": {"_target_": "pbexp.data.ptb.load_ptb", "root": "data"},
        "model": {"_target_": "pbexp.models.lm.RNNLanguageModel", "cell": cell, "emb_size": emb, "init": "io_uniform"},
        "trainer": {"lr": 20.0, "epochs": 2, "num_threads": threads},
    }


def write_run(path, overrides, config, results=None, metrics=(), model="lstm"):
    run = RunDir(path)
    run.hydra.mkdir(parents=True)
    run.config.write_text(yaml.safe_dump(config))
    run.overrides.write_text(yaml.safe_dump(list(overrides)))
    run.hydra_config.write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": model, "dataset": "ptb"}}}}))
    if results is not None:
        run.write_results(results)
    for m in metrics:
        run.append_metrics(m)
    return path


def completed(overrides, test_ppl, **extra) -> dict:
    return {
        "status": "completed",
        "task": "lm",
        "model": "RNNLanguageModel",
        "overrides": overrides,
        "train/ppl": test_ppl - 10,
        "valid/ppl": test_ppl + 5,
        "test/ppl": test_ppl,
        **extra,
    }


def lm_sweep(root, cells_and_ppls, threads=(0, 0, 0)):
    """Jobs model=<m> seed=<s>, one per (cell, [test ppl per seed, None = that seed diverged])."""
    sweep, job = root / "sweep", 0
    for model, cell, ppls in cells_and_ppls:
        for seed, (ppl, t) in enumerate(zip(ppls, threads), start=1):
            ovr = [f"model={model}", f"seed={seed}"]
            results = (
                completed(ovr, ppl)
                if ppl is not None
                else {"status": "diverged", "error": "diverged: loss became nan", "overrides": ovr}
            )
            write_run(sweep / str(job), ovr, lm_config(seed, cell, threads=t), results, model=model)
            job += 1
    return sweep


def test_failed_seeds_are_counted_and_one_seed_shows_no_spread(tmp_path, capsys):
    sweep = lm_sweep(
        tmp_path,
        [
            ("lstm", "LSTM", [150.0, 154.0, None]),
            ("gru", "GRU", [None, 170.0, None]),
            ("rnn_tanh", "RNN_TANH", [160.0]),
        ],
    )
    rows = {r["RNN type"]: r for r in markdown_rows(run_report(capsys, sweep))}
    assert rows["LSTM"]["Test ppl"] == f"152.00 ± {statistics.stdev([150.0, 154.0]):.2f} (n=2)"
    assert rows["LSTM"]["Status"] == "2 of 3 runs; 1 diverged (seed 3)"
    assert rows["GRU"]["Test ppl"] == "170.00 (n=1)"  # no "± nan"
    assert rows["GRU"]["Status"] == "1 of 3 runs; 2 diverged (seeds 1, 3)"
    assert rows["RNN-tanh"]["Test ppl"] == "160.00" and rows["RNN-tanh"]["Run"] == "sweep/6"  # one seed: as before

    rows = {r["RNN type"]: r for r in json.loads(run_report(capsys, sweep, "--format", "json"))}
    assert (rows["LSTM"]["Test ppl"], rows["LSTM"]["Test ppl n"], rows["LSTM"]["Test ppl values"]) == (
        152.0,
        2,
        [150.0, 154.0],
    )
    assert (rows["GRU"]["Test ppl std"], rows["RNN-tanh"]["Test ppl"], rows["RNN-tanh"]["Test ppl n"]) == (
        None,
        160.0,
        1,
    )


def test_a_sweep_without_seeds_looks_as_before(tmp_path, capsys):
    sweep = lm_sweep(tmp_path, [("lstm", "LSTM", [150.0]), ("gru", "GRU", [170.0])])
    text = run_report(capsys, sweep, "--ci")
    assert "±" not in text and "n=" not in text and "over seeds" not in text
    rows = json.loads(run_report(capsys, sweep, "--format", "json", "--ci"))
    assert list(rows[0]) == ["RNN type", "Train ppl", "Valid ppl", "Test ppl", "Run", "Status"]


def test_the_generic_table_groups_seeds_and_ignores_how_a_run_ran(tmp_path, capsys):
    # Seed 2 ran with other threads: still the same setting (what it trained is the same).
    sweep = lm_sweep(tmp_path, [("lstm", "LSTM", [150.0, 154.0, 158.0])], threads=(0, 1, 0))
    rows = json.loads(run_report(capsys, sweep, "--table", "generic", "--format", "json", "--ci"))
    assert len(rows) == 1 and rows[0]["Run"] == "sweep/0, sweep/1, sweep/2"
    assert rows[0]["Overrides"] == "model=lstm seed=1,2,3"
    assert (rows[0]["test/ppl"], rows[0]["test/ppl std"], rows[0]["test/ppl n"]) == (154.0, 4.0, 3)
    assert rows[0]["test/ppl ci95 high"] == pytest.approx(154.0 + T_975_DF2 * 4.0 / math.sqrt(3))
    text = run_report(capsys, sweep, "--table", "generic", "--ci")
    half = T_975_DF2 * 4.0 / math.sqrt(3)
    assert f"154.00 ± 4.00 (n=3; 95% CI [{154 - half:.2f}, {154 + half:.2f}])" in text


def test_pretrained_table_and_plot_over_seeds(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "pre"
    job = 0
    for pretrained in (None, "glove.txt"):
        for seed in (1, 2):
            ovr = [f"model.pretrained={pretrained or 'null'}", f"seed={seed}"]
            cfg = lm_config(seed)
            cfg["model"]["pretrained"] = pretrained
            metrics = [
                {
                    "epoch": e,
                    "step": 10 * e,
                    "train/ppl": 300.0 / e + seed + bool(pretrained),
                    "valid/ppl": 100.0 + seed * e,
                }
                for e in (1, 2)
            ]
            write_run(sweep / str(job), ovr, cfg, completed(ovr, 100.0), metrics)
            job += 1
    rows = json.loads(run_report(capsys, sweep, "--format", "json"))
    assert [r["Epoch"] for r in rows] == [1, 2, "status"]
    assert rows[0]["trained LSTM"] == 301.5 and rows[1]["pretrained (GloVe)"] == 152.5  # means of seeds 1, 2
    assert rows[0]["trained LSTM n"] == 2 and rows[0]["trained LSTM values"] == [301.0, 302.0]

    import matplotlib.axes

    bands = []
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", lambda ax, x, lo, hi, **kw: bands.append((lo, hi)))
    run_report(capsys, sweep, "--plot", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert bands == [([101.0, 102.0], [102.0, 104.0])] * 2  # per group of seeds, valid ppl from min to max
