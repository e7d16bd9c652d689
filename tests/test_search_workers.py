"""hydra.sweeper.n_jobs=2: worker processes that ask, run and tell on their own, sharing one study in the
sweep dir. Real runs of the command line on tiny data, and the queue itself under concurrent processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM_SIZES, search_yaml
from helpers.data import write_tiny_ptb
from hydra_plugins.pbexp_optuna.optuna_sweeper import OWNER, RUN_DIR, TrialQueue
from pbexp.rundir import RunDir
from pbexp.search import study_storage

State = optuna.trial.TrialState
SEARCH = search_yaml(n_jobs=2, n_startup_trials=1)
TINY = [*TINY_LM_SIZES, "trainer.checkpoint_every=0", "trainer.epochs=2", "trainer.limit_batches=6"]


def search_args(tmp_path, sweep, *extra) -> list[str]:
    """pbexp-train -m over the search above (a config dir of the user's own) on the tiny PTB."""
    mine = tmp_path / "mine" / "hparams_search"
    if not mine.is_dir():
        mine.mkdir(parents=True)
        (mine / "tiny.yaml").write_text(SEARCH)
        write_tiny_ptb(tmp_path / "data" / "ptb")
    return [
        "-m",
        "-cd",
        str(tmp_path / "mine"),
        "hparams_search=tiny",
        *TINY,
        "dataset.download=false",
        f"dataset.root={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]


def load(sweep) -> optuna.Study:
    return optuna.load_study(study_name="pbexp", storage=study_storage(None, sweep))


def job_dirs(sweep) -> list[int]:
    return sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def five_trials(tmp_path_factory):
    """A finished search of 5 trials by 2 workers: (args, the process, the sweep dir)."""
    tmp_path = tmp_path_factory.mktemp("workers")
    sweep = tmp_path / "sweep"
    args = search_args(tmp_path, sweep, "hydra.sweeper.n_trials=5", "hydra.sweeper.pruner=none")
    return args, run_cli(args, cwd=tmp_path, env=cli_env()), sweep


def test_two_workers_run_exactly_n_trials(five_trials):
    _, proc, sweep = five_trials
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(sweep).trials
    # 5 trials, not 6: the worker that found 4 asked and 1 running stopped asking
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == State.COMPLETE for t in trials)
    assert job_dirs(sweep) == [0, 1, 2, 3, 4]
    for t in trials:  # trial N ran as job N, in <sweep>/N, with the trial's own parameters
        results = RunDir(sweep / str(t.number)).read_results()
        assert results["status"] == "completed" and results["valid/ppl"] == pytest.approx(t.value)
        assert f"trainer.lr={t.params['trainer.lr']}" in results["overrides"]
    owners = {t.user_attrs[OWNER]["pid"] for t in trials}
    assert len(owners) == 2  # two worker processes did the trials
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # at the same time
    best = yaml.safe_load((sweep / "optuna_best.yaml").read_text())
    assert best["trials"]["complete"] == 5 and f"best trial {best['number']}" in proc.stdout


def test_rerunning_a_finished_search_adds_nothing(five_trials, tmp_path):
    args, _, sweep = five_trials
    again = run_cli(args, cwd=tmp_path, env=cli_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "5 trial(s) already done, 0 to go" in again.stdout + again.stderr
    assert len(load(sweep).trials) == 5 and job_dirs(sweep) == [0, 1, 2, 3, 4]


def test_a_killed_worker_s_trial_fails_and_runs_again(tmp_path):
    sweep = tmp_path / "sweep"
    # Trials of a few seconds (every batch, 4 epochs): time to see one mid-way and kill its worker.
    args = search_args(
        tmp_path, sweep, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none", "trainer.limit_batches=0"
    ) + ["trainer.epochs=4"]
    proc = start(args, tmp_path)
    try:
        victim = wait_for_training(proc, sweep, 1)[0]  # an epoch done, 3 to go
        pid = victim.user_attrs[OWNER]["pid"]
        assert pid != proc.pid
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()  # its workers get SIGTERM (PR_SET_PDEATHSIG)
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]  # the search finished, and says a worker died
    assert "search worker" in err and "was killed by SIGKILL" in err
    trials = load(sweep).trials
    assert trials[victim.number].state == State.FAIL
    again = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(again) == 1 and again[0].params == victim.params and again[0].state == State.COMPLETE
    assert sum(t.state == State.COMPLETE for t in trials) == 2 and len(trials) == 3
    # The rerun continued the killed trial's run from its last checkpoint, in its run dir.
    assert again[0].user_attrs[RUN_DIR] == str(victim.number) and again[0].number not in job_dirs(sweep)
    run = RunDir(sweep / str(victim.number))
    assert run.read_results()["status"] == "completed" and len(run.read_metrics()) == 4
    assert run.read_results()["valid/ppl"] == pytest.approx(again[0].value)
    assert len(again[0].intermediate_values) == 4  # its own epochs and the killed one's
    assert "resuming from" in out


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pbexp.train", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_training(proc, sweep, n: int) -> list:
    """The running trials once ``n`` are running and one of them has finished an epoch (of several): that one
    first."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            running = load(sweep).get_trials(states=[State.RUNNING])
        except KeyError:  # no study yet
            continue
        if len(running) >= n and any(t.intermediate_values for t in running):
            return sorted(running, key=lambda t: not t.intermediate_values)
    raise AssertionError(f"{n} trials were not seen running: {proc.poll()}")


@pytest.mark.slow  # two searches, the second continuing the first's trials
def test_ctrl_c_stops_the_workers_and_the_same_command_finishes_the_search(tmp_path):
    sweep = tmp_path / "sweep"
    long_trials = ["hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none", "trainer.limit_batches=0"]
    args = search_args(tmp_path, sweep, *long_trials) + ["trainer.epochs=4"]
    proc = start(args, tmp_path)
    try:
        running = wait_for_training(proc, sweep, 2)
        proc.send_signal(signal.SIGINT)  # as a Ctrl-C in its terminal: the sweeper passes it on to its workers
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "sweep interrupted (SIGINT)" in err and "Resume with: pbexp-train -m" in err
    trials = load(sweep).trials
    assert [t.state for t in trials[:2]] == [State.FAIL, State.FAIL]  # each worker checkpointed and stopped
    queued = [t for t in trials if t.state == State.WAITING]
    assert sorted(t.params["trainer.lr"] for t in queued) == sorted(t.params["trainer.lr"] for t in running)

    again = run_cli(args, cwd=tmp_path, env=cli_env())
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load(sweep).trials
    done = [t for t in trials if t.state == State.COMPLETE]
    assert len(done) == 2 and not [t for t in trials if t.state in (State.WAITING, State.RUNNING)]
    # The interrupted trials were continued in their own run dirs.
    assert {t.params["trainer.lr"] for t in running} == {t.params["trainer.lr"] for t in done}
    assert job_dirs(sweep) == [0, 1] and all(RunDir(sweep / d).is_complete() for d in ("0", "1"))
    assert "resuming from" in again.stdout  # (a trial interrupted before its first checkpoint starts again)


def test_a_worker_prunes(tmp_path):
    sweep = tmp_path / "sweep"
    args = search_args(tmp_path, sweep, "hydra.sweeper.n_trials=4", "trainer.epochs=3")
    # The trials' learning rates, in order: two good ones run first, side by side; each useless one then
    # starts when a good one has finished, and trails it after its first epoch.
    study = optuna.create_study(study_name="pbexp", storage=study_storage(None, sweep), direction="minimize")
    for lr in (5.0, 5.0, 0.001, 0.001):
        study.enqueue_trial({"trainer.lr": lr})
    proc = run_cli(args, cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(sweep).trials
    assert [t.params["trainer.lr"] for t in trials] == [5.0, 5.0, 0.001, 0.001]
    pruned = [t for t in trials if t.state == State.PRUNED]
    assert pruned and all(t.params["trainer.lr"] == 0.001 for t in pruned)
    assert len({t.user_attrs[OWNER]["pid"] for t in trials}) == 2  # run by the two workers
    for t in pruned:  # stopped after an epoch, before the last
        assert RunDir(sweep / str(t.number)).read_results()["status"] == "pruned"
        assert 1 <= len(RunDir(sweep / str(t.number)).read_metrics()) < 3


def test_a_bad_setting_is_one_line(tmp_path):
    proc = run_cli(search_args(tmp_path, tmp_path / "sweep", "hydra.sweeper.n_jobs=0"), cwd=tmp_path, env=cli_env())
    assert proc.returncode == 2
    assert proc.stderr.strip() == "pbexp-train: error: hydra.sweeper.n_jobs=0 is not allowed: an integer >= 1"


# ------------------------------------------------------------------------------------------- the queue alone


def _ask_and_tell_until_done(sweep, n_trials, start, out) -> None:
    study = optuna.load_study(study_name="q", storage=study_storage(None, sweep))
    queue = TrialQueue(study, {"x": optuna.distributions.FloatDistribution(0, 1)}, n_trials, sweep)
    start.wait()
    while (trial := queue.next(poll_s=0.01)) is not None:
        study.tell(trial, trial.params["x"])
        queue.release(trial)
    out.put(0)


@pytest.mark.parametrize("round", range(3))
def test_concurrent_workers_never_overshoot(tmp_path, round):
    """Eight processes asking as fast as they can, started together: the count and the ask are one step, so
    the study ends with exactly n_trials trials (without the lock, two of them see 11 and both ask)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="q", storage=study_storage(None, tmp_path))
    ctx, n_trials, n_procs = mp.get_context("fork"), 12, 8
    start, out = ctx.Barrier(n_procs), ctx.Queue()
    procs = [
        ctx.Process(target=_ask_and_tell_until_done, args=(tmp_path, n_trials, start, out)) for _ in range(n_procs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n_procs
    trials = optuna.load_study(study_name="q", storage=study_storage(None, tmp_path)).trials
    assert len(trials) == n_trials and all(t.state == State.COMPLETE for t in trials)


def _ask_and_die(sweep) -> None:
    study = optuna.load_study(study_name="q", storage=study_storage(None, sweep))
    TrialQueue(study, {"x": optuna.distributions.FloatDistribution(0, 1)}, 2, sweep).next()
    signal.raise_signal(signal.SIGKILL)


def test_a_trial_whose_worker_died_is_failed_and_asked_again(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="q", storage=study_storage(None, tmp_path))
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_ask_and_die, args=(tmp_path,))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == -signal.SIGKILL
    queue = TrialQueue(study, {"x": optuna.distributions.FloatDistribution(0, 1)}, 2, tmp_path)
    alive = queue.next()  # fails trial 0 (its lock is free), asks its rerun
    assert study.trials[0].state == State.FAIL
    assert alive.number == 1 and alive.params == study.trials[0].params
    other = TrialQueue(study, {"x": optuna.distributions.FloatDistribution(0, 1)}, 2, tmp_path).next()
    assert other.number == 2  # trial 1's worker (this process) is alive: its trial is left alone
    assert study.trials[1].state == State.RUNNING


def test_a_search_begun_in_sqlite_continues_there(tmp_path):
    """Sweeps started before the journal keep their optuna.db; new ones get the journal."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    sqlite = optuna.create_study(study_name="pbexp", storage=f"sqlite:///{old / 'optuna.db'}")
    sqlite.tell(sqlite.ask(), 1.0)
    assert study_storage(None, old) == f"sqlite:///{old / 'optuna.db'}"
    assert len(optuna.load_study(study_name="pbexp", storage=study_storage(None, old)).trials) == 1
    assert isinstance(study_storage(None, new), optuna.storages.JournalStorage) and (new / "optuna.journal").exists()
    assert study_storage("postgresql://db/x", new) == "postgresql://db/x"  # hydra.sweeper.storage, as given
