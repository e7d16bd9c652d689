"""Sweeps as real subprocesses: basic and joblib launchers, failing and diverging jobs, pbexp-report
on the result, and the HPARAMS entries each run writes into its own event file."""

import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from helpers.cli import run_cli
from helpers.configs import TINY_LM
from pbexp.rundir import RunDir

TWO_JOBS = ["model=lstm,gru", "trainer.epochs=1"]


def sweep(tmp_path, tiny_ptb, args, name="sweep"):
    out = tmp_path / name
    proc = run_cli(["-m", *TINY_LM, f"dataset.root={tiny_ptb}", *args, f"hydra.sweep.dir={out}"], cwd=tmp_path)
    return proc, out


def report(*args):
    return subprocess.run(
        [sys.executable, "-m", "pbexp.report", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def hparams_sessions(run_dir):
    """The HPARAMS plugin summaries in a run's tb/ folder: {tag: plugin content bytes}."""
    found = {}
    for f in RunDir(run_dir).tb_events():
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "hparams":
                    found[v.tag] = v.metadata.plugin_data.content
    return found


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_two_job_sweep_then_report(tmp_path, tiny_ptb, launcher):
    proc, out = sweep(tmp_path, tiny_ptb, [*TWO_JOBS, *launcher])
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in out.iterdir() if p.is_dir() and p.name != "tb")
    assert [p.name for p in jobs] == ["0", "1"]
    # <sweep>/tb names each job's TensorBoard folder by what the sweep varies
    view = {p.name: p.resolve() for p in (out / "tb").iterdir()}
    assert view == {"model=lstm": RunDir(out / "0").tb.resolve(), "model=gru": RunDir(out / "1").tb.resolve()}
    results = [RunDir(j).read_results() for j in jobs]
    assert all(r["status"] == "completed" for r in results)
    assert ["model=lstm" in r["overrides"] for r in results] == [True, False]

    rep = report(out, "--table", "rnn_types", "--format", "json")
    assert rep.returncode == 0, rep.stderr
    rows = json.loads(rep.stdout)
    by_type = {row["RNN type"]: row for row in rows}
    assert set(by_type) == {"LSTM", "GRU"}
    for row, res in zip((by_type["LSTM"], by_type["GRU"]), results):
        assert row["Test ppl"] == pytest.approx(res["test/ppl"], rel=1e-3)
        assert row["Valid ppl"] == pytest.approx(res["valid/ppl"], rel=1e-3)

    # Every run holds its own HPARAMS entry (no phantom timestamped run folder), with one key set.
    key_sets = []
    for j in jobs:
        assert [p.name for p in RunDir(j).tb.iterdir() if p.is_dir()] == []
        found = hparams_sessions(j)
        assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(found)
        from tensorboard.plugins.hparams import plugin_data_pb2

        start = plugin_data_pb2.HParamsPluginData.FromString(found["_hparams_/session_start_info"])
        key_sets.append(set(start.session_start_info.hparams))
    assert key_sets[0] == key_sets[1] and "model" in key_sets[0]


def test_sweep_with_failing_and_diverging_jobs(tmp_path, tiny_ptb):
    # job 0 is fine, job 1 has a bad value, job 2 diverges (huge lr, no clipping)
    proc, out = sweep(tmp_path, tiny_ptb, ["trainer.lr=5,-1,1e12", "trainer.clip=0", "trainer.epochs=1"])
    assert proc.returncode != 0
    assert "did not complete" in proc.stderr
    status = {j.name: RunDir(j).read_results() for j in sorted(out.iterdir()) if j.is_dir() and j.name != "tb"}
    assert status["0"]["status"] == "completed"
    assert status["1"]["status"] == "failed" and "trainer.lr" in status["1"]["error"]
    assert status["2"]["status"] == "diverged" and "trainer.lr=" in status["2"]["error"]
    rep = report(out, "--table", "generic", "--format", "json")
    assert rep.returncode == 0, rep.stderr
    rows = {row["Run"].rsplit("/", 1)[-1]: row for row in json.loads(rep.stdout)}
    assert sorted(rows) == ["0", "1", "2"]
    # The Status column says which run failed and quotes that run's own error from its results
    assert rows["0"]["Status"] == "completed"
    for job in ("1", "2"):
        assert rows[job]["Status"].startswith("failed: "), rows[job]
        assert " ".join(status[job]["error"].split())[:40] in rows[job]["Status"], rows[job]
        # a failed run's leftovers are not results
        assert all(v is None for k, v in rows[job].items() if k not in ("Run", "Overrides", "Task", "Status"))


@pytest.mark.slow  # submitit's local stand-in; tests/test_slurm_scheduler.py runs a sweep through a real SLURM
def test_two_job_sweep_through_submitit_local(tmp_path, tiny_ptb):
    """The path SLURM jobs take (pickled task function, a separate process per job), run locally."""
    proc, out = sweep(
        tmp_path,
        tiny_ptb,
        [*TWO_JOBS, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [RunDir(out / j).read_results() for j in ("0", "1")]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert (out / ".submitit").is_dir()


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from pbexp.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    # no GPU asked by default: a CPU node (the local SLURM of tests/test_slurm_scheduler.py) runs it as it is
    assert launcher.gpus_per_node is None and launcher.timeout_min == 720
