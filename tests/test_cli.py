"""The real command line, in a subprocess: outputs written, events readable, bad input rejected."""

import json
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers.cli import cli_env, run_cli
from helpers.configs import SHARED_DATA, TINY_LM
from pbexp.rundir import RunDir


def read_scalars(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_cli_run_writes_results_and_tensorboard_events(tiny_ptb, tmp_path):
    run = RunDir(tmp_path / "run")
    proc = run_cli([*TINY_LM, f"dataset.root={tiny_ptb}", f"hydra.run.dir={run.path}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = run.read_results()
    for key in (
        "train/ppl",
        "valid/ppl",
        "test/ppl",
        "perf/tokens_per_s",
        "perf/epoch_s",
        "status",
        "overrides",
        "params",
    ):
        assert key in results
    assert results["status"] == "completed" and f"dataset.root={tiny_ptb}" in results["overrides"]
    assert run.last.exists() and run.best.exists()
    assert run.config.exists()
    scalars = read_scalars(run.tb)
    for tag in (
        "train/loss",
        "train/ppl",
        "valid/ppl",
        "test/ppl",
        "opt/lr",
        "opt/grad_norm",
        "perf/tokens_per_s",
        "perf/epoch_s",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert len(scalars["valid/ppl"]) == 2  # one point per epoch
    assert scalars["test/ppl"][0][1] == pytest.approx(results["test/ppl"], rel=1e-6)
    lines = run.metrics.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["valid/ppl"] == pytest.approx(scalars["valid/ppl"][1][1])
    assert len(list(run.tb.iterdir())) == 1  # one event file; no phantom hparams run folder


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.lr=-1", "trainer.lr=-1"),
        ("model.tie_weights=true", "model.tie_weights"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
        ("model.dropout=1.5", "model.dropout=1.5"),
    ],
)
def test_bad_override_exits_nonzero_with_one_line_before_training(tiny_ptb, tmp_path, override, needle):
    run = tmp_path / "run"
    proc = run_cli(
        [*TINY_LM, f"dataset.root={tiny_ptb}", "model.hidden_size=24", override, f"hydra.run.dir={run}"]
        if "tie" in override
        else [*TINY_LM, f"dataset.root={tiny_ptb}", override, f"hydra.run.dir={run}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in proc.stderr
    assert not RunDir(run).checkpoints.exists() and not RunDir(run).tb.exists()


def test_unknown_model_is_rejected_by_hydra_with_the_options(tmp_path):
    proc = run_cli(["model=transformerx"], cwd=tmp_path)
    assert proc.returncode != 0 and "transformerx" in proc.stderr and "lstm" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not (SHARED_DATA / "ptb" / "ptb.train.txt").exists(), reason="real PTB not found")
def test_real_ptb_smoke_run(tmp_path):
    """The default model on the real data for a few dozen steps, data found through the mirror env var."""
    run = tmp_path / "run"
    # A small model and large eval batches keep this to seconds; the data path is the real one.
    proc = run_cli(
        [
            "trainer.max_steps=40",
            "trainer.log_every=10",
            "dataset.download=false",
            "model.emb_size=32",
            "model.hidden_size=32",
            "trainer.eval_batch_size=100",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env=cli_env(PBEXP_DATA_MIRROR=str(SHARED_DATA)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = RunDir(run).read_results()
    # 2x32 LSTM, 10k vocab, untied: embedding + 2 LSTM layers + decoder
    assert (
        results["steps"] == 40 and results["params"] == 10000 * 32 + 2 * 4 * (32 * 32 * 2 + 2 * 32) + 32 * 10000 + 10000
    )
    # 40 steps of SGD at lr 20 take the model from ~10,000 (uniform) to well under 2,000.
    assert results["valid/ppl"] < 2000 and results["test/ppl"] < 2000
    assert "vocab 10000" in proc.stdout


def test_second_process_on_a_busy_run_dir_stops_and_touches_nothing(tiny_ptb, tmp_path):
    """Two processes on one run dir both trained: two epoch-1 lines, two event files, one results record."""
    run = RunDir(tmp_path / "run")
    args = [*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=500", f"hydra.run.dir={run.path}"]
    first = subprocess.Popen(
        [sys.executable, "-m", "pbexp.train", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not run.metrics.exists():  # the first one is training
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        before = {p: p.stat().st_mtime_ns for p in run.hydra.iterdir()}
        second = run_cli([*args, "trainer.lr=1"], cwd=tmp_path, timeout=60)
        lines = [l for l in second.stderr.splitlines() if l.strip()]
        assert second.returncode == 2 and len(lines) == 1 and "in use by another pbexp-train" in lines[0], lines
        assert str(first.pid) in lines[0]
        assert {p: p.stat().st_mtime_ns for p in run.hydra.iterdir()} == before  # provenance untouched
        assert len(run.tb_events()) == 1
    finally:
        first.terminate()
        first.wait(timeout=60)


def test_resume_and_another_run_dir_is_an_error(tiny_ptb, tmp_path):
    RunDir(tmp_path / "earlier").checkpoints.mkdir(parents=True)
    proc = run_cli(
        [
            *TINY_LM,
            f"dataset.root={tiny_ptb}",
            f"trainer.resume={tmp_path / 'earlier'}",
            f"hydra.run.dir={tmp_path / 'other'}",
        ],
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2 and "two different run directories" in proc.stderr
    assert not (tmp_path / "other").exists()


def test_help_cfg_and_bad_overrides_leave_no_folders(tmp_path):
    """--help and --cfg job created an empty outputs/, a config error an empty run dir."""
    for args in (
        ["--help"],
        ["--cfg", "job"],
        ["trainer.lrr=1", "hydra.run.dir=runs/x"],
        ["model=foo", "hydra.run.dir=runs/y"],
        ["--cfg", "job", "hydra.run.dir=runs/z"],
    ):
        proc = run_cli(args, cwd=tmp_path, timeout=120)
        assert proc.returncode in (0, 2), (args, proc.stderr[-500:])
        assert list(tmp_path.iterdir()) == [], (args, list(tmp_path.iterdir()))
