"""Hydra callbacks for sweeps: TensorBoard names that say what each job varies, a non-zero exit once
every job has run when some failed, and signals that end the sweep, not just its running job.

A signal (Ctrl-C, SIGTERM) during a sweep: the running jobs checkpoint and stop (joblib's workers get it
forwarded), the jobs not yet started are skipped, and the sweep exits 130 / 143 with the command that continues
it. The sweep dir's STOPPED file says so to every job, whatever process runs it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback

from pbexp.rundir import RunDir

log = logging.getLogger("pbexp")

SWEPT_KEYS = ".swept_keys.json"  # in the sweep dir: the keys this sweep varies, for each job's TensorBoard name
TB_VIEW = "tb"  # <sweep>/tb/<what varies> -> ../<job>/tb: `tensorboard --logdir <sweep>/tb`
STOPPED = ".stopped"  # in the sweep dir while a signal is ending the sweep: the signal's name
SWEEP_PID = "PBEXP_SWEEP_PID"  # the sweep's own process, in the environment its launchers' workers inherit
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Launchers that run the jobs in the sweep's process or in workers it starts: a signal to the sweep ends it. A
# scheduler's jobs (hydra/launcher=slurm) run on their own; the scheduler signals them (preemption, scancel).
LOCAL_LAUNCHERS = (
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
)


def runs_in_the_sweeps_processes() -> bool:
    """This job runs in a local sweep's own process or in a worker that process started (basic, joblib)."""
    return os.environ.get(SWEEP_PID) in (str(os.getpid()), str(os.getppid()))


def sweep_stopped(sweep_dir) -> str | None:
    """The signal that is ending the sweep in ``sweep_dir``, or None."""
    try:
        return (Path(sweep_dir) / STOPPED).read_text(encoding="utf-8").strip() or "SIGINT"
    except OSError:
        return None


def mark_stopped(sweep_dir, name: str) -> None:
    """Say that a signal is ending the sweep: the jobs not yet started skip, the sweep exits for that signal."""
    try:
        (Path(sweep_dir) / STOPPED).write_text(name, encoding="utf-8")
    except OSError as e:  # the jobs still stop; only the ones not started would run
        log.warning("could not mark sweep %s stopped: %s", sweep_dir, e)


def _children() -> list[int]:
    """This process's child processes (a launcher's workers), from /proc; [] where there is none."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis
            if stat.read_text().rpartition(")")[2].split()[1] == me:
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return found


def _forward(sweep_dir, signum, frame) -> None:
    """The sweep process's handler: mark the sweep stopped and pass the signal to the launcher's workers (joblib
    runs the jobs there); a job in this process (basic launcher) has its own handler (job_signals)."""
    mark_stopped(sweep_dir, signal.Signals(signum).name)
    for pid in _children():
        try:
            os.kill(pid, signum)
        except OSError:
            pass


@contextmanager
def job_signals(sweep_dir):
    """While a sweep's job runs: a signal marks the sweep stopped and interrupts the job (the trainer catches it
    itself during training, to checkpoint first). Afterwards the sweep process has its handler back; a launcher's
    worker between jobs ignores signals (the sweep process forwarded them to the jobs, and ends the sweep)."""

    def interrupt(signum, frame):
        name = signal.Signals(signum).name
        mark_stopped(sweep_dir, name)
        raise KeyboardInterrupt(name)

    old = {sig: signal.signal(sig, interrupt) for sig in SIGNALS}
    try:
        yield
    finally:
        in_worker = os.environ.get(SWEEP_PID) != str(os.getpid())
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN if in_worker else old[sig])


def swept_keys(config) -> list[str]:
    """The keys a sweep varies: the sweeper's params (experiment presets) and command-line sweeps (a,b)."""
    keys = [str(k) for k in (config.hydra.sweeper.get("params") or {})]
    for o in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        if o.is_sweep_override() and o.key_or_group not in keys:
            keys.append(o.key_or_group)
    return keys


def tb_name(overrides: list[str], keys: list[str]) -> str:
    """'model=gru,trainer.lr=5' from a job's overrides; a file path shows as its file name."""
    chosen = {}
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key in keys:
            chosen[key] = Path(value).name if "/" in value else value
    return ",".join(f"{k}={v}" for k, v in chosen.items())


class SweepStatus(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / SWEPT_KEYS).write_text(json.dumps(swept_keys(config)), encoding="utf-8")
        (sweep / STOPPED).unlink(missing_ok=True)  # a rerun continues the sweep an earlier signal ended
        if config.hydra.launcher.get("_target_") in LOCAL_LAUNCHERS:
            os.environ[SWEEP_PID] = str(os.getpid())
            for sig in SIGNALS:
                signal.signal(sig, partial(_forward, sweep))

    def on_job_start(self, config, **kwargs) -> None:
        """Link <sweep>/tb/<what this job varies> to the job's tb/, so TensorBoard tells the curves apart."""
        hydra = config.hydra
        if str(hydra.mode) != "RunMode.MULTIRUN":
            return
        sweep = Path(hydra.sweep.dir)
        try:
            keys = json.loads((sweep / SWEPT_KEYS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        name = tb_name(list(hydra.overrides.task), keys) or f"job {hydra.job.num}"
        target = RunDir(Path("..") / str(hydra.sweep.subdir)).tb
        view = sweep / TB_VIEW
        view.mkdir(exist_ok=True)
        link = view / name
        if link.is_symlink() and Path(os.readlink(link)) != target:  # two jobs with the same name
            link = view / f"{name} (job {hydra.job.num})"
        if not link.is_symlink():
            try:
                link.symlink_to(target, target_is_directory=True)
            except OSError as e:  # a file system without symlinks: the job dirs still work
                log.debug("no TensorBoard name link %s: %s", link, e)

    def on_multirun_end(self, config, **kwargs) -> None:
        from pbexp import cli

        stopped = sweep_stopped(config.hydra.sweep.dir)
        if stopped:
            cut = [
                p.name + ("" if RunDir(p).last.exists() else " (before its first checkpoint)")
                for p in sorted(Path(config.hydra.sweep.dir).iterdir(), key=lambda p: (len(p.name), p.name))
                if (RunDir(p).read_results() or {}).get("status") == "interrupted"
            ]
            jobs = f"job(s) {', '.join(cut)} cut" if cut else "no job was running"
            print(
                f"pbexp-train: error: sweep interrupted ({stopped}): {jobs}; the jobs not started were skipped. "
                f"Resume with: {cli.sweep_command(config.hydra.sweep.dir)}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(cli.exit_code_of_signal(stopped))
        failed = []
        for job in sorted(p for p in Path(config.hydra.sweep.dir).iterdir() if RunDir(p).results.exists()):
            status = (RunDir(job).read_results() or {}).get("status", "unreadable")
            if status not in ("completed", "pruned"):  # pruned: an Optuna sweep stopped it on purpose
                failed.append(f"{job.name} ({status})")
        if failed:
            print(f"pbexp-train: {len(failed)} sweep job(s) did not complete: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)
