"""pbexp-report on fake but realistic run and sweep directories (nothing is trained here)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pbexp import report
from pbexp.rundir import RunDir

REPORT_TXT = Path(__file__).resolve().parents[2] / "shared" / "report.txt"

# ---------------------------------------------------------------------------------------------
# Fake run directories, laid out as pbexp-train writes them


def lm_config(cell="LSTM", emb=200, hidden=200, layers=2, init="uniform", pretrained=None) -> dict:
    return {
        "seed": 1111,
        "preset": "full",
        "dataset": {"_target_": "pbexp.data.ptb.load_ptb", "root": "data", "download": True},
        "model": {
            "_target_": "pbexp.models.lm.RNNLanguageModel",
            "cell": cell,
            "emb_size": emb,
            "hidden_size": hidden,
            "num_layers": layers,
            "dropout": 0.2,
            "tie_weights": False,
            "init": init,
            "init_range": 0.1,
            "pretrained": pretrained,
            "freeze_embeddings": False,
        },
        "trainer": {"optimizer": "sgd", "lr": 20.0, "epochs": 3, "batch_size": 20, "bptt": 35},
    }


def clf_config(target="pbexp.models.classifiers.CNNClassifier") -> dict:
    return {
        "seed": 1111,
        "dataset": {"_target_": "pbexp.data.imdb.load_imdb", "max_len": 400},
        "model": {"_target_": target, "emb_size": 128, "pretrained": None},
        "trainer": {"optimizer": "adam", "lr": 0.001, "epochs": 3, "batch_size": 64},
    }


def lm_metrics(epochs: int, start: float, epoch_s=(80.0, 90.0, 100.0)) -> list[dict]:
    """Per-epoch records whose perplexities fall from `start`; epoch times cycle through epoch_s."""
    return [
        {
            "epoch": e,
            "step": 100 * e,
            "lr": 20.0,
            "train/loss": 5.0 - 0.1 * e,
            "train/ppl": start / e + 0.25,
            "valid/loss": 5.1 - 0.1 * e,
            "valid/ppl": start / e + 10.5,
            "perf/epoch_s": epoch_s[(e - 1) % len(epoch_s)],
            "perf/tokens_per_s": 11000.0,
        }
        for e in range(1, epochs + 1)
    ]


def lm_results(overrides, metrics, test_ppl, params=1000) -> dict:
    last = metrics[-1]
    best = min(metrics, key=lambda m: m["valid/ppl"])
    return {
        "status": "completed",
        "task": "lm",
        "model": "RNNLanguageModel",
        "params": params,
        "overrides": overrides,
        "epochs": len(metrics),
        "steps": last["step"],
        "wall_s": 123.4,
        "train/loss": last["train/loss"],
        "train/ppl": last["train/ppl"],
        "valid/loss": best["valid/loss"],
        "valid/ppl": best["valid/ppl"],
        "test/loss": 4.7,
        "test/ppl": test_ppl,
        "perf/epoch_s": last["perf/epoch_s"],
        "perf/tokens_per_s": 11000.0,
    }


def clf_metrics(epochs: int, acc: float) -> list[dict]:
    return [
        {
            "epoch": e,
            "step": 50 * e,
            "lr": 0.001,
            "train/loss": 0.7 / e,
            "valid/loss": 0.6 / e,
            "valid/acc": acc - 0.1 / e,
            "valid/f1": acc - 0.1 / e,
            "perf/epoch_s": 30.0,
            "perf/examples_per_s": 700.0,
        }
        for e in range(1, epochs + 1)
    ]


def clf_results(overrides, model_class, precision, recall, acc) -> dict:
    return {
        "status": "completed",
        "task": "clf",
        "model": model_class,
        "params": 5000,
        "overrides": overrides,
        "epochs": 3,
        "steps": 150,
        "wall_s": 99.0,
        "train/loss": 0.3,
        "valid/loss": 0.35,
        "valid/acc": acc + 0.01,
        "valid/precision": precision,
        "valid/recall": recall,
        "valid/f1": 0.8,
        "test/loss": 0.36,
        "test/acc": acc,
        "test/precision": precision,
        "test/recall": recall,
        "test/f1": 0.8,
        "test/precision_neg": 0.8,
        "test/confusion": [[10000, 2500], [2500, 10000]],
        "perf/epoch_s": 30.0,
        "perf/examples_per_s": 700.0,
    }


def write_run(run_dir: Path, overrides, config, results=None, metrics=(), choices=None) -> Path:
    """One run dir: Hydra's config, overrides and hydra.yaml, and the results and epoch records when given."""
    run = RunDir(run_dir)
    run.hydra.mkdir(parents=True)
    run.config.write_text(yaml.safe_dump(config))
    run.overrides.write_text(yaml.safe_dump(list(overrides)))
    hydra_cfg = {
        "hydra": {
            "mode": "MULTIRUN",
            "runtime": {"choices": choices or {"model": "lstm", "dataset": "ptb"}},
            "overrides": {"task": list(overrides)},
        }
    }
    run.hydra_config.write_text(yaml.safe_dump(hydra_cfg))
    run.tb.mkdir()
    if results is not None:
        run.write_results(results)
    for m in metrics:
        run.append_metrics(m)
    return run_dir


def results_of(run_dir: Path) -> dict:
    return json.loads(RunDir(run_dir).results.read_text())


def write_multirun(sweep: Path, task_overrides) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    multirun = {
        "hydra": {
            "run": {"dir": "outputs/runs/${now:%Y-%m-%d}"},
            "mode": "MULTIRUN",
            "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": list(task_overrides)},
            "job": {"name": "train", "num": "???"},
        },
        "seed": 1111,
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))


# The report's RNN-types sweep, jobs in another order than the table's rows.
RNN_JOBS = [  # (model=, cell, init, start ppl, test ppl)
    ("gru", "GRU", "uniform", 600.0, 300.5),
    ("lstm", "LSTM", "uniform", 400.0, 120.25),
    ("irnn", "RNN_RELU", "identity", 700.0, 180.75),
    ("rnn_tanh", "RNN_TANH", "uniform", 500.0, 150.5),
    ("rnn_relu", "RNN_RELU", "uniform", 550.0, 160.0),
]


def rnn_sweep(root: Path, experiment=True) -> Path:
    sweep = root / "rnn_sweep"
    write_multirun(
        sweep,
        [
            "model=gru,lstm,irnn,rnn_tanh,rnn_relu",
            "trainer.epochs=3",
            *(["experiment=rnn_types"] if experiment else []),
        ],
    )
    for job, (name, cell, init, start, test) in enumerate(RNN_JOBS):
        ovr = [f"model={name}", "trainer.epochs=3", *(["experiment=rnn_types"] if experiment else [])]
        metrics = lm_metrics(3, start)
        write_run(
            sweep / str(job),
            ovr,
            lm_config(cell=cell, init=init),
            lm_results(ovr, metrics, test),
            metrics,
            {"model": name, "dataset": "ptb"},
        )
    return sweep


def key_sweep(root: Path, name: str, key: str, values, **fixed) -> Path:
    """An LM sweep over one model key (emb_size, hidden_size, num_layers); the rest fixed."""
    sweep = root / name
    write_multirun(sweep, [f"model.{key}={','.join(map(str, values))}"])
    for job, value in enumerate(values):
        ovr = [f"model.{key}={value}"]
        metrics = lm_metrics(3, 1000.0 / (job + 1), epoch_s=(50.0 + job, 60.0 + job, 100.0 + job))
        cfg_keys = {"emb_size": "emb", "hidden_size": "hidden", "num_layers": "layers"}
        write_run(
            sweep / str(job),
            ovr,
            lm_config(**{cfg_keys[key]: value, **fixed}),
            lm_results(ovr, metrics, 100.0 + job),
            metrics,
        )
    return sweep


IMDB_JOBS = [  # (model=, class, precision, recall, acc)
    ("report_cnn", "ReportCNN", 0.5071, 0.5012, 0.5071),
    ("cnn", "CNNClassifier", 0.8865, 0.8712, 0.8803),
    ("fasttext", "FastText", 0.8901, 0.8899, 0.8900),
]


def imdb_sweep(root: Path) -> Path:
    sweep = root / "imdb_sweep"
    write_multirun(sweep, ["dataset=imdb", "model=report_cnn,cnn,fasttext"])
    for job, (name, cls, p, r, acc) in enumerate(IMDB_JOBS):
        ovr = ["dataset=imdb", f"model={name}"]
        write_run(
            sweep / str(job),
            ovr,
            clf_config(f"pbexp.models.classifiers.{cls}"),
            clf_results(ovr, cls, p, r, acc),
            clf_metrics(3, acc),
            {"model": name, "dataset": "imdb"},
        )
    return sweep


def run_report(capsys, *args) -> tuple[int, str, str]:
    code = report.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def json_rows(capsys, *args) -> list[dict]:
    code, out, err = run_report(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def markdown_rows(text: str) -> list[dict]:
    """Parse the GitHub table in the markdown output back into dicts (header, separator, rows)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in ln.strip("|").split(" | ")]  # noqa: E731
    header = split(lines[0])
    assert set(lines[1].replace("|", "").split()) == {"---"}
    return [dict(zip(header, split(ln))) for ln in lines[2:]]


# ---------------------------------------------------------------------------------------------
# Tables: rows and values equal the runs' files


def test_rnn_types_rows_follow_the_report_order_and_equal_results(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    rows = json_rows(capsys, sweep, "--table", "rnn_types")
    assert [r["RNN type"] for r in rows] == ["LSTM", "GRU", "RNN-tanh", "RNN-ReLU", "IRNN"]
    for row in rows:
        job = sweep / row["Run"].split("/")[1]
        results = results_of(job)
        assert row["Train ppl"] == results["train/ppl"]
        assert row["Valid ppl"] == results["valid/ppl"]
        assert row["Test ppl"] == results["test/ppl"]
        assert row["Status"] == "completed"
    irnn = next(r for r in rows if r["RNN type"] == "IRNN")
    assert irnn["Run"] == "rnn_sweep/2" and irnn["Test ppl"] == 180.75


def test_embedding_size_and_layers_tables(tmp_path, capsys):
    emb = key_sweep(tmp_path, "emb", "emb_size", [1500, 250, 300])
    rows = json_rows(capsys, emb, "--table", "embedding_size")
    assert [r["Embedding size"] for r in rows] == [250, 300, 1500]  # ascending, not job order
    for row in rows:
        results = results_of(emb / row["Run"].split("/")[1])
        assert row["Train ppl"] == results["train/ppl"]
    assert list(rows[0]) == ["Embedding size", "Train ppl", "Run", "Status"]

    layers = key_sweep(tmp_path, "layers", "num_layers", [1, 2, 5])
    rows = json_rows(capsys, layers, "--table", "layers")
    assert [(r["Layers"], r["Test ppl"]) for r in rows] == [(1, 100.0), (2, 101.0), (5, 102.0)]


def test_hidden_units_time_is_the_mean_epoch_time_else_the_results_value(tmp_path, capsys):
    sweep = key_sweep(tmp_path, "hidden", "hidden_size", [500, 750, 1000])
    RunDir(sweep / "2").metrics.unlink()  # no per-epoch records: falls back to the results
    rows = {r["Hidden units"]: r for r in json_rows(capsys, sweep, "--table", "hidden_units")}
    assert rows[500]["Time per epoch (s)"] == pytest.approx((50 + 60 + 100) / 3)
    assert rows[750]["Time per epoch (s)"] == pytest.approx((51 + 61 + 101) / 3)
    results = results_of(sweep / "2")
    assert rows[1000]["Time per epoch (s)"] == results["perf/epoch_s"] == 102.0
    assert rows[750]["Train ppl"] == results_of(sweep / "1")["train/ppl"]


def test_pretrained_table_is_train_ppl_per_epoch_per_arm(tmp_path, capsys):
    sweep = tmp_path / "pre"
    write_multirun(sweep, ["model.pretrained=glove.300d.txt,null"])
    arms = {"0": ("glove.300d.txt", lm_metrics(4, 300.0)), "1": (None, lm_metrics(3, 400.0))}
    for job, (pretrained, metrics) in arms.items():
        ovr = [f"model.pretrained={pretrained if pretrained else 'null'}"]
        write_run(
            sweep / job,
            ovr,
            lm_config(emb=300, hidden=300, pretrained=pretrained),
            lm_results(ovr, metrics, 110.0),
            metrics,
        )
    rows = json_rows(capsys, sweep, "--table", "pretrained")
    assert list(rows[0]) == ["Epoch", "trained LSTM", "pretrained (GloVe)"]  # trained first, as in the report
    assert [r["Epoch"] for r in rows] == [1, 2, 3, 4, "status"]
    for r, m in zip(rows, arms["0"][1]):
        assert r["pretrained (GloVe)"] == m["train/ppl"]
    for r, m in zip(rows, arms["1"][1]):
        assert r["trained LSTM"] == m["train/ppl"]
    assert rows[3]["trained LSTM"] is None  # the trained arm stopped after 3 epochs
    assert rows[-1] == {"Epoch": "status", "trained LSTM": "completed", "pretrained (GloVe)": "completed"}


def test_imdb_models_named_by_override_else_choice_else_class(tmp_path, capsys):
    sweep = imdb_sweep(tmp_path)
    # A preset that picked the model itself: no model= override, the name comes from hydra.yaml's choices.
    ovr = ["dataset=imdb", "experiment=imdb_models"]
    write_run(
        sweep / "3",
        ovr,
        clf_config("pbexp.models.classifiers.CNNRNNClassifier"),
        clf_results(ovr, "CNNRNNClassifier", 0.87, 0.86, 0.865),
        clf_metrics(3, 0.865),
        {"model": "cnn_rnn", "dataset": "imdb"},
    )
    # Neither: the class name in the results.
    ovr = ["dataset=imdb"]
    write_run(
        sweep / "4",
        ovr,
        clf_config("pbexp.models.classifiers.GRUClassifier"),
        clf_results(ovr, "GRUClassifier", 0.8, 0.81, 0.805),
        clf_metrics(3, 0.805),
        {"dataset": "imdb"},
    )
    rows = {r["Model"]: r for r in json_rows(capsys, sweep, "--table", "imdb_models")}
    assert set(rows) == {"report_cnn", "cnn", "fasttext", "cnn_rnn", "GRUClassifier"}
    for name, _, p, r, acc in IMDB_JOBS:
        assert (rows[name]["Precision"], rows[name]["Recall"], rows[name]["Accuracy"]) == (p, r, acc)
    assert rows["cnn_rnn"]["Accuracy"] == 0.865


def test_generic_table_lists_each_run_with_its_overrides_and_metrics(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    rows = json_rows(capsys, sweep, "--table", "generic")
    assert [r["Run"] for r in rows] == [f"rnn_sweep/{i}" for i in range(5)]  # job order
    assert rows[0]["Overrides"] == "model=gru trainer.epochs=3 experiment=rnn_types"
    assert rows[1]["test/ppl"] == 120.25 and rows[1]["Task"] == "lm"
    assert "test/acc" not in rows[0]  # only metrics some run has


def test_single_run_dir_and_several_sweeps(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    rows = json_rows(capsys, sweep / "1")  # its experiment=rnn_types override picks the table
    assert len(rows) == 1 and rows[0]["Run"] == "1" and rows[0]["RNN type"] == "LSTM" and rows[0]["Test ppl"] == 120.25
    other = key_sweep(tmp_path, "emb", "emb_size", [250, 300])
    rows = json_rows(capsys, sweep, other, "--table", "generic")
    assert [r["Run"] for r in rows] == [*(f"rnn_sweep/{i}" for i in range(5)), "emb/0", "emb/1"]


def test_jobs_sort_by_number_not_by_name(tmp_path, capsys):
    sweep = tmp_path / "many"
    for job in (10, 2, 0, 1):
        ovr = [f"trainer.lr={job}"]  # not seed=: runs that differ only in their seed are one row
        m = lm_metrics(1, 100.0 + job)
        write_run(sweep / str(job), ovr, lm_config(), lm_results(ovr, m, 90.0), m)
    rows = json_rows(capsys, sweep, "--table", "generic")
    assert [r["Run"] for r in rows] == ["many/0", "many/1", "many/2", "many/10"]


# ---------------------------------------------------------------------------------------------
# Failed jobs are rows, never missing


def test_failed_diverged_and_missing_results_are_rows_marked_failed(tmp_path, capsys):
    sweep = key_sweep(tmp_path, "layers", "num_layers", [1, 2, 3, 5])
    long_error = "pbexp.errors.DataError: " + "x" * 200
    RunDir(sweep / "1").write_results({"status": "failed", "error": long_error, "overrides": ["model.num_layers=2"]})
    RunDir(sweep / "2").write_results(
        {"status": "diverged", "error": "diverged: training loss became nan at step 40", "overrides": []}
    )
    RunDir(sweep / "3").results.unlink()  # died without writing its results
    no_results = f"failed: no {RunDir(sweep / '3').results.name}"
    rows = {r["Layers"]: r for r in json_rows(capsys, sweep, "--table", "layers")}
    assert set(rows) == {1, 2, 3, 5}
    assert rows[1]["Status"] == "completed" and rows[1]["Test ppl"] == 100.0
    assert rows[2]["Status"].startswith("failed: pbexp.errors.DataError: xxx")
    assert len(rows[2]["Status"]) <= len("failed: ") + 80 and rows[2]["Test ppl"] is None
    assert rows[3]["Status"] == "failed: diverged: training loss became nan at step 40"
    assert rows[5]["Status"] == no_results and rows[5]["Test ppl"] is None

    code, out, _ = run_report(capsys, sweep, "--table", "layers")
    md = {r["Layers"]: r for r in markdown_rows(out)}
    assert code == 0 and md["5"]["Status"] == no_results and md["5"]["Test ppl"] == "–"
    assert "3 failed" in out.splitlines()[0]


def test_a_pruned_search_trial_is_a_row_marked_pruned_not_failed(tmp_path, capsys):
    sweep = key_sweep(tmp_path, "layers", "num_layers", [1, 2, 3])
    RunDir(sweep / "1").write_results(
        {"status": "pruned", "error": "trial 1 pruned after epoch 2 (valid 922.3)", "overrides": []}
    )
    RunDir(sweep / "2").write_results({"status": "failed", "error": "boom", "overrides": []})
    rows = {r["Layers"]: r for r in json_rows(capsys, sweep, "--table", "layers")}
    assert rows[2]["Status"] == "pruned: trial 1 pruned after epoch 2 (valid 922.3)" and rows[2]["Test ppl"] is None
    assert rows[3]["Status"] == "failed: boom"
    code, out, _ = run_report(capsys, sweep, "--table", "layers")
    assert code == 0 and out.splitlines()[0].endswith("3 run(s) from " + str(sweep) + ", 1 failed, 1 pruned**")


def test_failed_run_keeps_its_column_in_the_pretrained_table(tmp_path, capsys):
    sweep = tmp_path / "pre"
    ok = lm_metrics(2, 300.0)
    write_run(sweep / "0", [], lm_config(), lm_results([], ok, 100.0), ok)
    write_run(
        sweep / "1",
        ["model.pretrained=glove.txt"],
        lm_config(pretrained="glove.txt"),
        {"status": "failed", "error": "DataError: glove.txt does not exist"},
    )
    rows = json_rows(capsys, sweep, "--table", "pretrained")
    assert rows[-1]["pretrained (GloVe)"] == "failed: DataError: glove.txt does not exist"
    assert [r["pretrained (GloVe)"] for r in rows[:-1]] == [None, None]


# ---------------------------------------------------------------------------------------------
# Formats parse back


def test_markdown_csv_and_json_hold_the_same_table(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    code, md_out, _ = run_report(capsys, sweep, "--table", "rnn_types")
    assert code == 0
    title = md_out.splitlines()[0]
    assert title.startswith("**Problem 6 - RNN types") and "5 run(s)" in title
    md = markdown_rows(md_out)
    code, csv_out, _ = run_report(capsys, sweep, "--table", "rnn_types", "--format", "csv")
    rows_csv = list(csv.DictReader(io.StringIO(csv_out)))
    rows_json = json_rows(capsys, sweep, "--table", "rnn_types")
    assert len(md) == len(rows_csv) == len(rows_json) == 5
    for m, c, j in zip(md, rows_csv, rows_json):
        assert m["RNN type"] == c["RNN type"] == j["RNN type"]
        for col in ("Train ppl", "Valid ppl", "Test ppl"):
            assert float(c[col]) == j[col]  # CSV keeps full precision
            assert m[col] == f"{j[col]:.2f}"


def test_output_file_instead_of_stdout(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    out_file = tmp_path / "tables" / "rnn.csv"
    code, out, err = run_report(capsys, sweep, "--format", "csv", "--output", out_file)
    assert code == 0 and out == "" and str(out_file) in err
    assert [r["RNN type"] for r in csv.DictReader(out_file.open())][0] == "LSTM"


# ---------------------------------------------------------------------------------------------
# --with-report: the published numbers, exactly


def test_published_numbers_are_the_reports(tmp_path):
    tables = {
        name: {tuple(r["keys"]): r["values"] for r in t["rows"]}
        for name, t in report.load_published()["tables"].items()
    }
    assert tables["rnn_types"] == {
        ("LSTM",): {"Train ppl": "19.18", "Valid ppl": "118.98", "Test ppl": "115.95"},
        ("GRU",): {"Train ppl": "207.8", "Valid ppl": "347", "Test ppl": None},
        ("RNN-tanh",): {"Train ppl": "77.8", "Valid ppl": "143.80", "Test ppl": None},
        ("RNN-ReLU",): {"Train ppl": "61.72", "Valid ppl": "147.17", "Test ppl": "139.24"},
    }
    assert tables["embedding_size"] == {
        (250,): {"Train ppl": "41.89"},
        (300,): {"Train ppl": "17.38"},
        (500,): {"Train ppl": "15.54"},
        (1500,): {"Train ppl": "10.79"},
    }
    assert tables["hidden_units"] == {
        (500,): {"Train ppl": "125.9", "Time per epoch (s)": "84"},
        (750,): {"Train ppl": "119.7", "Time per epoch (s)": "121"},
        (1000,): {"Train ppl": "125", "Time per epoch (s)": "219"},
    }
    assert [(v["trained LSTM"], v["pretrained (GloVe)"]) for v in tables["pretrained"].values()] == [
        ("154.5", "142.54"),
        ("132.87", "127.05"),
        ("136.62", "132.37"),
        ("131.22", "124.29"),
    ]
    assert tables["layers"] == {}
    imdb = {k[0]: v for k, v in tables["imdb_models"].items()}
    assert imdb["report_cnn"] == {"Precision": "0.51", "Recall": "0.51", "Accuracy": "12685/25014"}
    assert imdb["report_gru"] == {"Precision": "0.5", "Recall": "0.5", "Accuracy": "12593/25014"}
    assert imdb["fasttext"] == {"Precision": "0.859", "Recall": "0.859", "Accuracy": None}
    refs = {r["value"]: r for group in report.load_published()["references"].values() for r in group["marks"]}
    assert set(refs) == {"114.5", "82.7", "78.4", "75.96", "91.22", "88.89"}
    assert all(r["source"] for r in refs.values())


@pytest.mark.skipif(not REPORT_TXT.exists(), reason="report.txt is not next to the repo")
def test_every_published_row_is_on_the_report_line_it_cites():
    lines = REPORT_TXT.read_text(encoding="utf-8").splitlines()
    for table in report.load_published()["tables"].values():
        for row in table["rows"]:
            line_no = int(re.search(r"\(line (\d+)\)", row["source"]).group(1))
            cells = lines[line_no - 1].split()
            expected = [v if v is not None else "-" for v in row["values"].values()]
            assert cells[-len(expected) :] == expected, (row["source"], lines[line_no - 1])


def test_with_report_puts_published_numbers_beside_ours(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    rows = {r["RNN type"]: r for r in json_rows(capsys, sweep, "--table", "rnn_types", "--with-report")}
    assert list(rows["LSTM"])[:4] == ["RNN type", "Train ppl", "Train ppl (report)", "Valid ppl"]
    assert (
        rows["LSTM"]["Train ppl (report)"],
        rows["LSTM"]["Valid ppl (report)"],
        rows["LSTM"]["Test ppl (report)"],
    ) == ("19.18", "118.98", "115.95")
    assert rows["RNN-tanh"]["Valid ppl (report)"] == "143.80"
    assert rows["GRU"]["Test ppl (report)"] is None and rows["IRNN"]["Train ppl (report)"] is None
    assert rows["LSTM"]["Train ppl"] == results_of(sweep / "1")["train/ppl"]

    code, out, _ = run_report(capsys, sweep, "--with-report")
    md = {r["RNN type"]: r for r in markdown_rows(out)}
    assert md["RNN-ReLU"]["Test ppl (report)"] == "139.24" and md["GRU"]["Valid ppl (report)"] == "347"
    assert "Zaremba et al. 2014, small" in out and "114.5" in out and "75.96" in out
    assert "report.txt, Problem 6" in out


def test_with_report_imdb_pretrained_and_layers(tmp_path, capsys):
    rows = {r["Model"]: r for r in json_rows(capsys, imdb_sweep(tmp_path), "--with-report")}
    assert rows["report_cnn"]["Accuracy (report)"] == "12685/25014" and rows["cnn"]["Precision (report)"] == "0.51"
    assert rows["fasttext"]["Recall (report)"] == "0.859" and rows["fasttext"]["Accuracy (report)"] is None

    sweep = tmp_path / "pre"
    for job, pretrained in enumerate([None, "glove.txt"]):
        m = lm_metrics(4, 300.0 + job)
        write_run(sweep / str(job), [], lm_config(pretrained=pretrained), lm_results([], m, 100.0), m)
    rows = json_rows(capsys, sweep, "--table", "pretrained", "--with-report")
    assert [(r["trained LSTM (report)"], r["pretrained (GloVe) (report)"]) for r in rows[:4]] == [
        ("154.5", "142.54"),
        ("132.87", "127.05"),
        ("136.62", "132.37"),
        ("131.22", "124.29"),
    ]

    code, out, _ = run_report(capsys, imdb_sweep(tmp_path / "again"), "--with-report")
    assert "NBSVM-bigram" in out and "91.22" in out and "88.89" in out and "Zaremba" not in out

    layers = key_sweep(tmp_path, "layers", "num_layers", [1, 2])
    code, out, _ = run_report(capsys, layers, "--with-report")
    assert code == 0 and "no numbers" in out and all(r["Test ppl (report)"] == "–" for r in markdown_rows(out))
    assert "78.4" in out  # a test-ppl table gets the outside reference marks...
    emb = key_sweep(tmp_path, "emb", "emb_size", [250, 300])
    code, out, _ = run_report(capsys, emb, "--with-report")
    assert "Zaremba" not in out and "41.89" in out  # ...a train-ppl table does not


# ---------------------------------------------------------------------------------------------
# --plot


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_plot_writes_learning_curves_png(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path)
    RunDir(sweep / "4").metrics.unlink()  # a run without curves is left out, the rest are drawn
    code, out, err = run_report(capsys, sweep, "--plot", tmp_path / "plots" / "curves.png")
    assert code == 0 and out.startswith("**") and "curves.png" in err
    assert_png(tmp_path / "plots" / "curves.png")
    code, _, err = run_report(capsys, imdb_sweep(tmp_path), "--plot", tmp_path / "acc.png")
    assert code == 0, err
    assert_png(tmp_path / "acc.png")


def test_logged_curve_reads_the_points_tensorboard_wrote(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "run"
    with SummaryWriter(str(RunDir(run_dir).tb)) as w:
        for step, value in [(10, 900.0), (200, 400.5), (400, 250.25)]:
            w.add_scalar("train/ppl", value, step)
            w.add_scalar("train/loss", 1.0, step)
    with SummaryWriter(str(RunDir(run_dir).tb), purge_step=400) as w:  # a resume rewrites step 400
        w.add_scalar("train/ppl", 240.0, 400)
    run = report.Run(run_dir, "run", {}, {}, [], [])
    assert report.logged_curve(run, "train/ppl") == [(10, 900.0), (200, 400.5), (400, 240.0)]
    assert report.logged_curve(run, "valid/ppl") == []


def test_plot_labels_runs_by_what_the_sweep_varied(tmp_path):
    runs = report.collect_runs([rnn_sweep(tmp_path)])
    assert report.distinguishing_overrides(runs)["rnn_sweep/0"] == "model=gru"


# ---------------------------------------------------------------------------------------------
# --table auto


def test_auto_takes_the_experiment_override_over_the_data(tmp_path):
    sweep = key_sweep(tmp_path, "emb", "emb_size", [250, 300])  # the data alone says embedding_size
    runs = report.collect_runs([sweep])
    assert report.detect_table([sweep], runs) == "embedding_size"
    write_multirun(sweep, ["model.emb_size=250,300", "+experiment=hidden_units"])
    assert report.detect_table([sweep], runs) == "hidden_units"
    write_multirun(sweep, ["model.emb_size=250,300", "experiment=report_layers_quick"])
    assert report.detect_table([sweep], runs) == "layers"
    write_multirun(sweep, ["model.emb_size=250,300", "experiment=imdb_models"])  # not a table for LM runs
    assert report.detect_table([sweep], runs) == "embedding_size"


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda root: rnn_sweep(root, experiment=False), "rnn_types"),
        (lambda root: key_sweep(root, "emb", "emb_size", [250, 500]), "embedding_size"),
        (lambda root: key_sweep(root, "hidden", "hidden_size", [500, 750]), "hidden_units"),
        (lambda root: key_sweep(root, "layers", "num_layers", [1, 2, 5]), "layers"),
        (lambda root: imdb_sweep(root), "imdb_models"),
        (lambda root: key_sweep(root, "both", "emb_size", [250, 500], hidden=650) / "0", "generic"),  # one run
    ],
)
def test_auto_detects_the_table_from_what_varies(tmp_path, make, expected):
    d = make(tmp_path)
    assert report.detect_table([d], report.collect_runs([d])) == expected


def test_auto_detects_pretrained_and_falls_back_to_generic(tmp_path):
    sweep = tmp_path / "pre"
    for job, pretrained in enumerate([None, "glove.txt"]):
        m = lm_metrics(2, 300.0)
        write_run(sweep / str(job), [], lm_config(pretrained=pretrained), lm_results([], m, 100.0), m)
    assert report.detect_table([sweep], report.collect_runs([sweep])) == "pretrained"
    two_keys = tmp_path / "two"
    for job, (emb, layers) in enumerate([(250, 1), (500, 2)]):
        m = lm_metrics(2, 300.0)
        write_run(two_keys / str(job), [], lm_config(emb=emb, layers=layers), lm_results([], m, 100.0), m)
    assert report.detect_table([two_keys], report.collect_runs([two_keys])) == "generic"
    layers_and_lr = tmp_path / "layers_lr"  # layers is the only table key that varies, but lr varies too
    for job, (layers, lr) in enumerate([(1, 5), (1, 20), (2, 5), (2, 20)]):
        m, ovr = lm_metrics(2, 300.0), [f"model.num_layers={layers}", f"trainer.lr={lr}"]
        write_run(layers_and_lr / str(job), ovr, lm_config(layers=layers), lm_results(ovr, m, 100.0), m)
    assert report.detect_table([layers_and_lr], report.collect_runs([layers_and_lr])) == "generic"


def test_auto_picks_a_report_table_only_for_its_dataset_and_models(tmp_path, capsys):
    # model=lstm,transformer_lm on PTB: the embedding size varies, but a transformer is not the report's RNN LMs.
    lm = tmp_path / "lm"
    for job, (name, target, emb) in enumerate(
        [("lstm", "pbexp.models.lm.RNNLanguageModel", 200), ("transformer_lm", "mine.TransformerLM", 128)]
    ):
        ovr, m = [f"model={name}"], lm_metrics(2, 300.0 + job)
        cfg = lm_config(emb=emb)
        cfg["model"]["_target_"] = target
        write_run(lm / str(job), ovr, cfg, lm_results(ovr, m, 100.0 + job), m, {"model": name, "dataset": "ptb"})
    code, out, _ = run_report(capsys, lm)
    assert code == 0 and out.startswith("**Runs (ptb): 2 run(s)")
    rows = markdown_rows(out)
    assert {"train/ppl", "valid/ppl", "test/ppl"} <= set(rows[0]) and rows[1]["test/ppl"] == "101.00"

    # The report's classifiers on a CSV dataset: the generic table, named after it, and no IMDB numbers beside it.
    csv_sweep = tmp_path / "csv"
    for job, (name, cls, p, r, acc) in enumerate(IMDB_JOBS):
        ovr = ["dataset=csv_reviews", f"model={name}"]
        cfg = clf_config(f"pbexp.models.classifiers.{cls}")
        cfg["dataset"] = {"_target_": "pbexp.data.csv.load_csv", "path": "reviews.csv"}
        write_run(
            csv_sweep / str(job),
            ovr,
            cfg,
            clf_results(ovr, cls, p, r, acc),
            clf_metrics(3, acc),
            {"model": name, "dataset": "csv_reviews"},
        )
    code, out, _ = run_report(capsys, csv_sweep, "--with-report")
    assert code == 0 and out.startswith("**Runs (csv_reviews): 3 run(s)")
    assert {"valid/acc", "test/acc", "valid/f1", "test/f1"} <= set(markdown_rows(out)[0])
    assert "IMDB" not in out and "NBSVM" not in out and "(report)" not in out
    code, out, _ = run_report(capsys, csv_sweep, "--table", "imdb_models", "--with-report")  # asked for by name
    assert out.startswith("**Problem 5.3 - csv_reviews models: 3 run(s)")
    assert "(report)" not in out and "NBSVM" not in out and "not put beside them" in out

    # IMDB, but classifiers the report's table does not have.
    others = tmp_path / "others"
    for job, (name, cls) in enumerate([("nbsvm", "NBSVM"), ("sklearn_linear", "SklearnLinear")]):
        ovr = ["dataset=imdb", f"model={name}"]
        cfg = clf_config(f"pbexp.models.x.{cls}")
        write_run(
            others / str(job),
            ovr,
            cfg,
            clf_results(ovr, cls, 0.9, 0.9, 0.9),
            clf_metrics(3, 0.9),
            {"model": name, "dataset": "imdb"},
        )
    assert report.detect_table([others], report.collect_runs([others])) == "generic"


def test_the_tables_models_are_those_of_the_reports_experiments():
    from pbexp.config import CONFIG_DIR
    from pbexp.report import tables

    def swept_models(experiment):
        cfg = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml").read_text())
        return set(cfg["hydra"]["sweeper"]["params"]["model"].split(","))

    assert swept_models("rnn_types") == set(tables.LM_MODELS) == tables.PTB_RNN_LMS.models
    assert swept_models("imdb_models") == set(tables.IMDB_MODELS) == tables.IMDB_CLASSIFIERS.models
    for name, cls in tables.IMDB_MODELS.items():
        target = yaml.safe_load((Path(CONFIG_DIR) / "model" / f"{name}.yaml").read_text())["_target_"]
        assert target.rsplit(".", 1)[1] == cls
    assert tables.PTB_RNN_LMS.classes == {"RNNLanguageModel"}


def test_run_without_config_still_gets_its_row_key_from_overrides(tmp_path, capsys):
    sweep = rnn_sweep(tmp_path, experiment=False)
    RunDir(sweep / "3").config.unlink()  # model=rnn_tanh: the cell comes from the override
    rows = json_rows(capsys, sweep)
    assert [r["RNN type"] for r in rows] == ["LSTM", "GRU", "RNN-tanh", "RNN-ReLU", "IRNN"]


# ---------------------------------------------------------------------------------------------
# User errors: one line on stderr, exit 2, no traceback


def cli(*args, cwd: Path):
    return subprocess.run(
        [sys.executable, "-m", "pbexp.report", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_cli_prints_the_table(tmp_path):
    proc = cli(rnn_sweep(tmp_path), "--format", "csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["RNN type"] for r in csv.DictReader(io.StringIO(proc.stdout))][0] == "LSTM"


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing dir", "is not a directory"),
        ("no runs", "no runs found"),
        ("unknown table", "unknown table 'rnn_typez'"),
        ("unknown format", "unknown format 'xml'"),
        ("table does not fit", "imdb_models is for clf runs"),
        ("no dirs", "required"),
        ("unknown option", "--colour"),
        ("nothing to plot", "nothing to plot"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, case, needle):
    sweep = rnn_sweep(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes").mkdir()
    if case == "nothing to plot":
        for job in sweep.iterdir():
            if job.is_dir():
                RunDir(job).metrics.unlink()
    args = {
        "missing dir": [tmp_path / "nope"],
        "no runs": [tmp_path / "empty"],
        "unknown table": [sweep, "--table", "rnn_typez"],
        "unknown format": [sweep, "--format", "xml"],
        "table does not fit": [sweep, "--table", "imdb_models"],
        "no dirs": [],
        "unknown option": [sweep, "--colour"],
        "nothing to plot": [sweep, "--plot", tmp_path / "p.png"],
    }[case]
    proc = cli(*args, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("pbexp-report: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_event_files_are_read_in_the_order_they_were_written(tmp_path):
    # A process's 10th writer is named '...<pid>.10', which sorts before its 9th ('...<pid>.9') by name.
    tb = RunDir(tmp_path / "run").tb
    tb.mkdir(parents=True)
    names = [f"events.out.tfevents.1700000000.host.42.{n}" for n in (9, 10)]
    for i, name in enumerate(names):
        (tb / name).write_bytes(b"")
        os.utime(tb / name, ns=(10**18 + i, 10**18 + i))
    assert [f.name for f in RunDir(tmp_path / "run").tb_events()] == names
