"""``hydra/sweeper=pbexp_optuna``: Optuna (TPE) over ``pbexp-train -m``, on current Optuna.

hydra-optuna-sweeper 1.2/1.3 pins optuna < 3. Measured here (Python 3.11, numpy 2.4.6, SQLAlchemy 2.1.9):
optuna 2.10.1 optimises in memory, but its SQLite storage fails on creation (AssertionError in
RDBStorage.get_current_version), so a study could not persist or resume. This is the small adapter over
current Optuna that the project uses instead. What it adds to the usual sweeper:
* the study lives in the sweep dir (Optuna's journal file ``optuna.journal``; ``hydra.sweeper.storage`` may
  name an RDB instead; a sweep begun with ``optuna.db`` keeps it): rerunning the same command continues it,
  finished trials kept;
* ``hydra.sweeper.n_jobs=N`` (N > 1) runs N workers that never wait for each other: N processes (this
  command line again, with ``hydra.sweeper.worker=i``), each asking the study for a trial, running it as one
  job, telling the result and asking again, until the study holds ``n_trials`` trials (complete, pruned or
  running; failed ones do not count). Counting and asking happen under a lock in the sweep dir, so there is
  no overshoot. A worker holds a lock of its own on the trial it runs: when it dies mid-trial, the next
  worker to ask fails that trial and queues it again, and the rerun continues its run from its last
  checkpoint, in its run dir. A signal (Ctrl-C, SIGTERM) reaches every worker through this process: the
  running trials checkpoint and are queued again for the rerun, and pbexp.callbacks ends the sweep.
  ``hydra.sweeper.mode=batched`` is the older way, kept for comparison (benches/search_workers.py): N trials
  launched together through ``hydra/launcher`` (joblib for parallel jobs), waiting for the slowest;
* pruning on each epoch's valid metric (``pbexp.search.epoch_reporter`` in the job), from any worker;
* at the end, the best trial (number, params, value, run dir) in ``<sweep>/optuna_best.yaml``, and printed.

Trial N runs as job N, in ``<sweep>/N`` (a rerun of a trial: in the run dir of the trial it continues); the
job finds its trial by its job number.

Search space, in Hydra's override grammar (``hydra.sweeper.params`` or the command line):
``interval(a, b)`` a float, ``tag(log, interval(a, b))`` on a log scale, ``int(interval(a, b))`` an integer,
``range(a, b[, step])`` integers, ``choice(x, y, ...)`` categories.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from pbexp.callbacks import mark_stopped, sweep_stopped
from pbexp.errors import ConfigError
from pbexp.search import PRUNED, OptunaSweeperConf, make_pruner, study_storage

log = logging.getLogger("pbexp")
EXIT_USER_ERROR = 2  # pbexp.cli's
ASK_LOCK = ".optuna_ask.lock"  # in the sweep dir: counting the trials and asking for one, one worker at a time
TRIAL_LOCKS = ".optuna_trials"  # in the sweep dir: <study>-<N>.lock, held by the worker running trial N
OWNER = "pbexp_worker"  # a trial's user attr: {host, pid, lock} of the worker running it
RUN_DIR = "pbexp_run_dir"  # a trial's user attr: its job's folder in the sweep dir (its number; a rerun's: the first's)
MAX_RETRY = 2  # reruns of a trial whose worker died (more could mean that it kills its worker: memory)


ConfigStore.instance().store(group="hydra/sweeper", name="pbexp_optuna", node=OptunaSweeperConf, provider="pbexp")


def distribution(override: Override):
    """The Optuna distribution of one search-space override."""
    import optuna

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return optuna.distributions.CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        return optuna.distributions.IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step or 1))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(value.start, value.end, log=log_scale)
        return optuna.distributions.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space (interval, range or choice)")


def _optuna():
    try:
        import optuna
    except ImportError as e:  # an optional extra: the plugin is found by Hydra in every install
        raise ImportError("hydra/sweeper=pbexp_optuna needs Optuna: pip install 'pbexp[search]'") from e
    return optuna


def _refuse(key: str, value, allowed: str):
    """A bad sweeper setting: one line and exit 2, as pbexp-train does for its own settings (raised in here,
    Hydra would wrap it in its instantiation error)."""
    print(f"pbexp-train: error: {ConfigError(f'hydra.sweeper.{key}', value, allowed)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def _run_dir(trial) -> list[str]:
    """The override that puts a rerun trial's job in the run dir of the trial it continues (Hydra's job number
    stays the trial's own: that is how the job finds its trial)."""
    run_dir = trial.user_attrs.get(RUN_DIR, str(trial.number))
    return [] if run_dir == str(trial.number) else [f"hydra.sweep.subdir={run_dir}"]


def _die_with_parent() -> None:
    """In a worker process before it starts: SIGTERM when the sweeper process dies, even by SIGKILL, so that
    no worker goes on alone (SIGTERM checkpoints and ends its trial, which a rerun continues)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TrialQueue:
    """Hands the study's trials to workers that run at the same time (processes on this host sharing the
    sweep dir). Counting the study's trials and asking for the next one happen under one lock, so the study
    never holds more than ``n_trials`` trials that are complete, pruned or running. The worker holds a lock
    of its own on each trial it runs, until it has told the result: a running trial whose lock is free has
    lost its worker, and is failed and queued again (Optuna's journal storage has no heartbeat)."""

    def __init__(self, study, space: dict, n_trials: int, sweep_dir: Path) -> None:
        self.study, self.space, self.n_trials = study, space, n_trials
        self.ask_lock = sweep_dir / ASK_LOCK
        self.trial_locks = sweep_dir / TRIAL_LOCKS
        self.sweep_dir, self.host = sweep_dir, socket.gethostname()
        self.held: dict[int, Any] = {}  # trial number -> its open, locked file

    def next(self, stopping=lambda: False, poll_s: float = 1.0):
        """The next trial to run, or None when the study holds ``n_trials`` trials. While other workers on this
        host still run trials, it waits rather than returning None: one of them may die and need a rerun."""
        optuna = _optuna()
        counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        while not stopping():
            with self._locked():
                self.fail_stale()
                trials = self.study.get_trials(deepcopy=False, states=counted)
                if len(trials) < self.n_trials:
                    return self._ask()
                elsewhere = [
                    t
                    for t in trials
                    if t.state == optuna.trial.TrialState.RUNNING
                    and t.number not in self.held
                    and (t.user_attrs.get(OWNER) or {}).get("host") == self.host
                ]
                if not elsewhere:
                    return None
            time.sleep(poll_s)
        return None

    def release(self, trial) -> None:
        """After the trial's result is told: let go of its lock."""
        lock = self.held.pop(trial.number)
        with contextlib.suppress(OSError):
            os.unlink(lock.name)
        lock.close()

    def fail_stale(self) -> None:
        """Fail each running trial whose worker died (its lock is free, or it died before taking one), queue it
        again, and mark its run dir failed. Called under the ask lock."""
        optuna = _optuna()
        running = optuna.trial.TrialState.RUNNING
        for t in self.study.get_trials(deepcopy=False, states=(running,)):
            if t.number in self.held:
                continue
            lock = self._try_lock((t.user_attrs.get(OWNER) or {}).get("lock"), t)
            if lock is False:
                continue  # its worker is alive, or on another host (only this host's workers can be judged)
            try:
                # Its worker lets go of the lock only after telling: a trial still running now has lost it.
                now = {s.number for s in self.study.get_trials(deepcopy=False, states=(running,))}
                if t.number not in now:
                    continue
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            finally:
                if lock is not None:
                    lock.close()
            self.retry(t, "its worker died mid-trial", MAX_RETRY)

    def retry(self, trial, why: str, max_retry: int | None = None) -> None:
        """Queue a failed trial again: a new trial with the same parameters and epoch reports, asked before any
        other, whose job continues in the failed one's run dir (from its last checkpoint). When it is not
        queued again (``max_retry`` reruns in a row), its run dir says why it failed."""
        import warnings

        import optuna

        from pbexp.rundir import RunDir

        trial = copy.deepcopy(trial)  # the callback adds to its attrs: not the storage's cached copy
        with warnings.catch_warnings():  # experimental in Optuna 5.1
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry, inherit_intermediate_values=True)
            retry(self.study, trial)
        waiting = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        again = [w.number for w in waiting if (w.system_attrs.get("retry_history") or [None])[-1] == trial.number]
        run = RunDir(self.sweep_dir / trial.user_attrs.get(RUN_DIR, str(trial.number)))
        if again:
            log.warning("trial %d failed (%s): trial %d will continue it in %s", trial.number, why, again[0], run)
            return
        log.warning("trial %d failed (%s), and is not run again: it was rerun %d times", trial.number, why, max_retry)
        if run.path.is_dir() and run.read_results() is None:  # pbexp-report shows it failed, not missing
            with contextlib.suppress(OSError):
                run.write_results({"status": "failed", "error": f"{why}, in its last {max_retry} reruns too"})

    def _try_lock(self, path: str | None, trial):
        """False while the trial's lock is held by a live process or belongs to another host; else the lock,
        now ours (None when there is no lock file: its worker died before making one, or an older version
        ran it)."""
        owner = trial.user_attrs.get(OWNER) or {}
        if owner and owner.get("host") != self.host:
            return False
        if not path:
            return None
        try:
            f = open(path)  # noqa: SIM115 - closed by the caller; not "a": that would make a missing one
        except FileNotFoundError:
            return None  # removed after telling: the state check in fail_stale sees it finished
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        return f

    def _ask(self):
        trial = self.study.ask(self.space)
        self.trial_locks.mkdir(exist_ok=True)
        lock = open(self.trial_locks / f"{self.study.study_name}-{trial.number}.lock", "a")  # noqa: SIM115
        fcntl.flock(lock, fcntl.LOCK_EX)  # new: nobody else has it
        self.held[trial.number] = lock
        trial.set_user_attr(OWNER, {"host": self.host, "pid": os.getpid(), "lock": lock.name})
        if RUN_DIR not in trial.user_attrs:  # a rerun has its first's
            trial.set_user_attr(RUN_DIR, str(trial.number))
        return trial

    @contextlib.contextmanager
    def _locked(self):
        with open(self.ask_lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when closed, or when its process dies
            yield


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str,
        n_trials: int,
        n_jobs: int,
        mode: str,
        worker: int | None,
        seed: int,
        study_name: str,
        storage: str | None,
        pruner: str,
        n_startup_trials: int,
        params: dict,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            _refuse("direction", direction, "minimize or maximize")
        if pruner not in ("median", "none"):
            _refuse("pruner", pruner, "median or none")
        if mode not in ("workers", "batched"):
            _refuse("mode", mode, "workers or batched")
        if not isinstance(n_trials, int) or n_trials < 1:
            _refuse("n_trials", n_trials, "an integer >= 1")
        if not isinstance(n_jobs, int) or n_jobs < 1:
            _refuse("n_jobs", n_jobs, "an integer >= 1")
        if worker is not None and not (isinstance(worker, int) and 0 <= worker < n_jobs):
            _refuse("worker", worker, f"unset (the sweeper sets it on its workers) or 0..{n_jobs - 1}")
        self.direction, self.n_trials, self.n_jobs, self.mode = direction, n_trials, n_jobs, mode
        self.worker, self.seed, self.study_name, self.storage = worker, seed, study_name, storage
        self.pruner, self.n_startup_trials, self.params = pruner, n_startup_trials, dict(params or {})
        self._stop, self._in_job = False, False

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        optuna = _optuna()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        space = {o.get_key_element(): distribution(o) for o in overrides if o.is_sweep_override()}
        fixed = [
            f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in overrides if not o.is_sweep_override()
        ]
        sweep_dir = Path(self.config.hydra.sweep.dir).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=study_storage(self.storage, sweep_dir),
            direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed + (self.worker or 0)),
            pruner=make_pruner(self.pruner, self.n_startup_trials),
            load_if_exists=True,
        )
        if self.worker is not None:  # the parent reports the sweep's end once: best trial, failed jobs, a signal
            self._run_trials(study, space, fixed, sweep_dir)
            sys.exit(0)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        done = study.get_trials(
            deepcopy=False, states=[optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
        )
        if done:
            log.info(
                "study %s in %s: %d trial(s) already done, %d to go",
                self.study_name,
                sweep_dir,
                len(done),
                max(0, self.n_trials - len(done)),
            )
        workers_ok = True
        if len(done) >= self.n_trials:
            pass  # nothing to do: no workers to start
        elif self.n_jobs > 1 and self.mode == "workers":
            workers_ok = self._run_workers(sweep_dir)
        else:
            self._run_trials(study, space, fixed, sweep_dir)
        self._write_best(study, sweep_dir)
        if not workers_ok and not sweep_stopped(sweep_dir):
            sys.exit(1)
        return study  # then pbexp.callbacks reports a signal that ended the sweep, or failed jobs

    # ------------------------------------------------------------------------------ the parent of the workers
    def _run_workers(self, sweep_dir: Path) -> bool:
        """Start n_jobs workers, pass SIGINT/SIGTERM on to them, wait for all; whether all ended well."""
        log.info("%d workers on study %s in %s", self.n_jobs, self.study_name, sweep_dir)
        # Their own sessions: a Ctrl-C reaches each worker once, through us, not also from the terminal.
        procs = [
            subprocess.Popen(
                self._worker_command(i, sweep_dir),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            for i in range(self.n_jobs)
        ]

        def forward(signum, frame):
            mark_stopped(sweep_dir, signal.Signals(signum).name)  # for the workers' jobs, and the sweep's exit
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        before = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            codes = [p.wait() for p in procs]
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
            for p in procs:  # only after a bug here: a worker left alone would go on with the search
                if p.poll() is None:
                    p.terminate()
        for i, code in enumerate(codes):
            if code:
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
                print(f"pbexp-train: search worker {i} {how}", file=sys.stderr, flush=True)
        return not any(codes)

    def _worker_command(self, i: int, sweep_dir: Path) -> list[str]:
        """This command line again, as worker i in the same sweep dir. It calls Hydra's entry point (the task
        function's module attribute) directly: pbexp-train's checks before Hydra were done here, and its lock
        on the sweep dir is held here, for the workers too."""
        args = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "hydra.sweeper.worker="))]
        quoted = "'" + str(sweep_dir).replace("\\", "\\\\").replace("'", "\\'") + "'"
        args += [f"hydra.sweeper.worker={i}", f"hydra.sweep.dir={quoted}"]
        module, name = self.task_function.__module__, self.task_function.__name__
        if module == "__main__":  # a script of one's own: run it again
            return [sys.executable, sys.argv[0], *args]
        run = f"import importlib, sys; sys.argv[0] = {sys.argv[0]!r}; importlib.import_module({module!r}).{name}()"
        return [sys.executable, "-c", run, *args]

    # --------------------------------------------------------------- a worker (also the only one, n_jobs=1)
    def _run_trials(self, study, space: dict, fixed: list[str], sweep_dir: Path) -> None:
        """Ask, run, tell, until the study holds n_trials trials or a signal ends the sweep. One job per
        launch, except in batched mode (n_jobs trials launched together)."""
        optuna = _optuna()
        queue = TrialQueue(study, space, self.n_trials, sweep_dir)
        batch = self.n_jobs if self.mode == "batched" else 1
        failed = 0
        with self._stop_on_signals(sweep_dir) as stopping:
            while failed < self.n_trials:  # a search whose every trial fails (no data, say) ends too
                trials = []
                while len(trials) < batch and (trial := queue.next(stopping)) is not None:
                    trials.append(trial)
                if stopping():
                    for trial in trials:  # asked, never run
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                        queue.release(trial)
                    break
                if not trials:
                    break
                numbers = [t.number for t in trials]
                # Trial N runs as job N (<sweep>/N; the job finds its trial by that number): a batch launches
                # together only when its numbers follow each other (a rerun was numbered when it was queued).
                consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
                for group in [trials] if consecutive else [[t] for t in trials]:
                    for trial, told in zip(group, self._launch(study, group, fixed)):
                        if told.state == optuna.trial.TrialState.FAIL:
                            failed += 1
                            if stopping():  # interrupted: it runs again when the search continues
                                queue.retry(told, "interrupted")
                        queue.release(trial)
            if failed >= self.n_trials:
                log.error("%d trials failed in this run of the search: stopping (see their run dirs)", failed)

    def _launch(self, study, trials: list, fixed: list[str]) -> list:
        """Run the trials' jobs and tell their results; the trials as told."""
        jobs = [fixed + [f"{k}={v}" for k, v in trial.params.items()] + _run_dir(trial) for trial in trials]
        self._in_job = True
        try:
            results = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
        except KeyboardInterrupt:  # a signal outside the job's own handling (Hydra's code around it)
            results = [None] * len(trials)
        finally:
            self._in_job = False
        return [self._tell(study, trial, result) for trial, result in zip(trials, results)]

    @staticmethod
    def _tell(study, trial, result):
        import optuna

        from pbexp.rundir import RunDir

        if result is None:  # interrupted outside the job
            return study.tell(trial, state=optuna.trial.TrialState.FAIL)
        value = result.return_value if result.status.name == "COMPLETED" else None
        if isinstance(value, float):
            return study.tell(trial, value)
        results = RunDir(result.hydra_cfg.hydra.runtime.output_dir).read_results() or {}
        state = optuna.trial.TrialState.PRUNED if results.get("status") == PRUNED else optuna.trial.TrialState.FAIL
        return study.tell(trial, state=state)

    @contextlib.contextmanager
    def _stop_on_signals(self, sweep_dir: Path):
        """Yields ``stopping()``: whether a signal is ending the sweep. Its jobs say so in the sweep dir
        (pbexp.callbacks' STOPPED: the trainer catches a signal during training, to checkpoint first); here,
        a signal between jobs says so too, and one in Hydra's code around a job ends that job at once."""

        def handler(signum, frame):
            self._stop = True
            mark_stopped(sweep_dir, signal.Signals(signum).name)
            if self._in_job:
                raise KeyboardInterrupt(signal.Signals(signum).name)

        before = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: signals are its own
                before[sig] = signal.signal(sig, handler)
        try:
            yield lambda: self._stop or sweep_stopped(sweep_dir) is not None
        finally:
            for sig, old in before.items():
                signal.signal(sig, old)

    def _write_best(self, study, sweep_dir: Path) -> None:
        import optuna

        done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        if not done:
            log.warning("no trial of study %s completed", self.study_name)
            return
        best = study.best_trial
        info = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": str(sweep_dir / best.user_attrs.get(RUN_DIR, str(best.number))),
            "direction": self.direction,
            "trials": {s.name.lower(): len(study.get_trials(states=[s])) for s in optuna.trial.TrialState},
        }
        OmegaConf.save(OmegaConf.create(info), sweep_dir / "optuna_best.yaml")
        print(f"best trial {best.number}: value {best.value:.6g} with {best.params} -> {info['run_dir']}", flush=True)
