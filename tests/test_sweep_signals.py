"""A signal ends a sweep, not just its running job (issue 24, item 0): Ctrl-C or SIGTERM during
``pbexp-train -m`` checkpoints the running jobs, skips the ones not started, marks the cut jobs ``interrupted``,
exits 130 / 143 and prints the sweep's own command, which then finishes the sweep. Real subprocess sweeps on tiny
PTB with the basic launcher (jobs in the sweep's process) and joblib's (jobs in worker processes, the signal
reaching the sweep's process only)."""

import shlex

import pytest

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt

THREE_JOBS = ["model=lstm,gru,rnn_tanh", "trainer.epochs=2", "trainer.checkpoint_every=10"]
SIGNAL_AT = 25  # steps into a job: past a mid-epoch checkpoint, well before the job's end (2 x ~70 steps)
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


@pytest.mark.parametrize(
    "launcher, sig", [("basic", "SIGINT"), ("joblib", "SIGTERM")], ids=["basic-SIGINT", "joblib-SIGTERM"]
)
def test_a_signal_ends_the_sweep_and_its_printed_command_finishes_it(tmp_path, tiny_ptb, launcher, sig):
    out = tmp_path / "sweep"
    args = ["-m", *TINY_LM, f"dataset.root={tiny_ptb}", *THREE_JOBS, *LAUNCHERS[launcher], f"hydra.sweep.dir={out}"]
    # The sweep's own process gets the signal once a job has run SIGNAL_AT steps (faults.py), as from a terminal
    # or a scheduler: with joblib the jobs run in workers, which only the sweep can tell.
    env_fault = {"PBEXP_KILL_AT": f"step:{SIGNAL_AT}", "PBEXP_KILL_SIGNAL": sig, "PBEXP_KILL_TARGET": "sweep"}
    stopped = run_cli(args, cwd=tmp_path, env=cli_env(**env_fault))
    assert stopped.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], stopped.stderr[-3000:]

    statuses = {p.name: (RunDir(p).read_results() or {}).get("status") for p in out.iterdir() if p.name.isdigit()}
    cut = sorted(name for name, status in statuses.items() if status == "interrupted")
    running = 1 if launcher == "basic" else 2  # jobs running when the signal came: each was cut, with a checkpoint
    assert len(cut) == running, statuses
    # The job that reached SIGNAL_AT saved its checkpoint at step 20; with joblib the other job may have been cut
    # while still loading its data (it then starts over on the rerun).
    saved = [n for n in cut if RunDir(out / n).last.exists()]
    assert max(ckpt.load(RunDir(out / n).last)["step"] for n in saved) >= 20
    # no job ran to its end; the ones after the signal did not start (Hydra made their folders, nothing more)
    assert all(status in ("interrupted", None) for status in statuses.values()), statuses

    line = next(ln for ln in stopped.stderr.splitlines() if "sweep interrupted" in ln)
    assert f"({sig})" in line and f"job(s) {cut[0]}" in line
    command = shlex.split(line.split("Resume with: ", 1)[1])
    assert command[:2] == ["pbexp-train", "-m"] and f"hydra.sweep.dir={out}" in command
    assert "model=lstm,gru,rnn_tanh" in command  # the sweep's overrides, not one job's

    resumed = run_cli(command[1:], cwd=tmp_path)  # the printed command, as pbexp-train's module
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for job in ("0", "1", "2"):
        assert RunDir(out / job).read_results()["status"] == "completed"
    assert (resumed.stderr + resumed.stdout).count("resuming from") == len(saved)
