"""The command line around a run: what happens to ``sys.argv`` before Hydra runs, and how a run's end
becomes one line and an exit code.

Before Hydra: the overrides are composed once (a typo is one line, exit 2), ``trainer.resume`` becomes the
run dir, a run or sweep dir named on the command line is checked writable and locked for the process's
life, and an existing run dir must be continued with the config it was started with.
After: a user's mistake, a divergence, a full disk, an interruption or a pruned trial is one line on stderr,
a status in the run's results (unless that would overwrite an earlier result) and an exit code; a bug keeps
its traceback (in a sweep, the other jobs go on).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import IO

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pbexp import search
from pbexp.config import CONFIG_DIR
from pbexp.errors import DiskFull, Diverged, PbexpError
from pbexp.files import no_space_errno
from pbexp.rundir import RESUMABLE_KEYS, RunDir
from pbexp.training import distributed

log = logging.getLogger("pbexp")
EXIT_USER_ERROR, EXIT_DIVERGED = 2, 3


def exit_code_of_signal(name: str | None) -> int:
    """The shell's 128 + signal number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM; 130 when the name is none."""
    try:
        return 128 + signal.Signals[name].value
    except (KeyError, TypeError):
        return 128 + signal.SIGINT.value


def prepare(argv: list[str]) -> tuple[list[str], IO | None]:
    """The argv Hydra should run, after every check that can fail before anything is written (PbexpError
    for the user's mistakes), and the open lock file of the run or sweep dir: keep it open while running."""
    cfg = _check_overrides(argv)
    argv = _prepare_argv(argv)
    lock = _lock_output_dir(argv)
    return _keep_provenance(argv, cfg), lock


def hydra_overrides() -> list[str]:
    """The command line's overrides of the run Hydra is running; [] outside Hydra (train() from a test)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def slurm_tasks_asked() -> int | None:
    """nodes x tasks_per_node of hydra/launcher=slurm, in a job it launched; None under another launcher or
    outside Hydra."""
    try:
        launcher = HydraConfig.get().launcher
    except ValueError:
        return None
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return None
    return int(launcher.nodes) * int(launcher.tasks_per_node)


def hydra_choices() -> dict:
    """The config group options picked (model=gru -> {"model": "gru"}); {} outside Hydra."""
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


def failure(e: BaseException, cfg: DictConfig, run_dir: RunDir, multirun: bool) -> tuple[str, str, int] | None:
    """(message, status, exit code) for how a run ended early; None for a bug that should keep its traceback."""
    if isinstance(e, search.Pruned):  # an Optuna sweep stopped this trial: not a failure
        return str(e), search.PRUNED, 0
    if isinstance(e, KeyboardInterrupt):
        name = e.args[0] if e.args else "SIGINT"
        why, saved = f"interrupted ({name})", run_dir.last.exists()
        if multirun:  # the job's own command would not run (its overrides are the sweep's): the sweep says its own
            where = f"checkpoint saved in {run_dir.checkpoints}" if saved else "before its first checkpoint"
            msg = f"{why}, {where}; rerunning the sweep's command resumes it"
        elif saved:
            msg = f"{why}; checkpoint saved in {run_dir.checkpoints}. Resume with: {_resume_command(run_dir.path)}"
        else:  # e.g. Ctrl-C while the data was loading: there is nothing to resume from
            again = _resume_command(run_dir.path)
            msg = f"{why} before the first checkpoint; nothing to resume. Start again with: {again}"
        return msg, "interrupted", exit_code_of_signal(name)
    if no_space_errno(e) is not None:  # the machine's limit, like out of memory; the same command resumes
        return disk_full_message(e, run_dir), "failed", EXIT_USER_ERROR
    if isinstance(e, Diverged):
        return f"diverged: {e}", "diverged", EXIT_DIVERGED
    if isinstance(e, PbexpError):
        return str(e), "failed", EXIT_USER_ERROR
    if is_out_of_memory(e):  # sizes too large for this machine: the user's to lower
        return out_of_memory_message(cfg, e), "failed", EXIT_USER_ERROR
    if not multirun or not isinstance(e, Exception):
        return None
    log.exception("job failed")  # a bug, but a sweep goes on with the other jobs
    return f"{type(e).__name__}: {e}", "failed", 1


def disk_full_message(e: BaseException, run_dir: RunDir) -> str:
    """One line: what could not be written where, the space needed when known (files.DiskFull says), and the
    command that continues the run once space is freed."""
    if not isinstance(e, DiskFull):  # a write outside files.write_atomic: an epoch record, TensorBoard, a log
        while not (isinstance(e, OSError) and no_space_errno(e) == e.errno):
            e = e.__cause__ or e.__context__
        where = Path(e.filename) if e.filename else None
        folder = where.parent if where else run_dir.path
        e = (
            f"disk full: {where.name if where else 'a file'} could not be written in {folder} ({e.strerror}). "
            "Free space there, then run the same command again"
        )
    saved = run_dir.last.exists() or run_dir.last.with_suffix(".prev.pt").exists()  # checkpoint.load_latest's two
    resumes = " (it resumes from the last checkpoint)" if saved else ""
    return f"{e}{resumes}: {_resume_command(run_dir.path)}"


def is_out_of_memory(e: BaseException) -> bool:
    # torch's CPU allocator raises a plain RuntimeError, CUDA's an OutOfMemoryError
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)


def out_of_memory_message(cfg: DictConfig, e: BaseException) -> str:
    where = "the GPU" if "CUDA" in str(e) else "this machine"
    asked = re.search(r"allocate (\d+) bytes", str(e))
    first = (
        f"one allocation of {int(asked.group(1)) / 1e9:.1f} GB"
        if asked
        else (str(e).splitlines() or [type(e).__name__])[0][:160]
    )
    sizes = ", ".join(f"{k}={cfg.trainer[k]}" for k in ("batch_size", "bptt", "eval_batch_size") if k in cfg.trainer)
    return (
        f"out of memory on {where} ({first}); lower trainer.batch_size, trainer.bptt, "
        f"trainer.eval_batch_size or the model's sizes (now {sizes})"
    )


def sweep_command(sweep_dir: str | Path) -> str:
    """The command that continues a sweep: this process's own (the sweep's, with -m), pinned to its sweep dir.
    Finished jobs are skipped, cut ones resume, the rest run."""
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "-m", "--multirun"))]
    return shlex.join(["pbexp-train", "-m", *args, f"hydra.sweep.dir={sweep_dir}"])


def _resume_command(run_dir: Path) -> str:
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "-m", "--multirun"))]
    world = distributed.from_env()
    # Under torchrun a mid-epoch checkpoint resumes only with as many processes (each one's state is in it).
    launch = (
        ["torchrun", f"--nproc_per_node={world.local_world_size}", "-m", "pbexp.train"]
        if world.distributed
        else ["pbexp-train"]
    )
    return shlex.join([*launch, *args, f"hydra.run.dir={run_dir}"])


def _arg_value(args: list[str], key: str) -> str | None:
    for a in args:
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def _check_writable(folder: str) -> None:
    """Fail before Hydra tries to create the output folder (it would show a traceback).
    Tried for real: permission bits say little when running as root."""
    import tempfile

    existing = Path(folder).absolute()
    while not existing.exists():  # nothing is created here: --help or a bad override leaves no folder
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PbexpError(
            f"output folder {folder} cannot be written ({e.strerror}); choose another with "
            "hydra.run.dir=<folder> (or hydra.sweep.dir=<folder> with -m)"
        ) from None


def _prepare_argv(argv: list[str]) -> list[str]:
    """``trainer.resume=<run dir>`` is the same as rerunning with ``hydra.run.dir=<run dir>``.
    Under torchrun every process must use the same run dir, and only rank 0 writes Hydra's files."""
    world = distributed.from_env()
    if world.distributed:
        if _arg_value(argv, "hydra.run.dir") is None and _arg_value(argv, "trainer.resume") is None:
            # torchrun's rendezvous id, shared by all ranks; under static rendezvous (--master_port) it is
            # "none", and the port is what the ranks share
            run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
            if run_id == "none" and "RANK" not in os.environ:  # SLURM's tasks (srun -n N): the job and step ids
                run_id = f"slurm{os.environ.get('SLURM_JOB_ID')}.{os.environ.get('SLURM_STEP_ID')}"
            if run_id == "none":
                run_id = "port" + os.environ.get("MASTER_PORT", "0")
            argv = [*argv, f"hydra.run.dir=outputs/runs/{time.strftime('%Y-%m-%d')}/ddp_{run_id}"]
        if not world.is_main:
            argv = [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled"]
    resume = _arg_value(argv, "trainer.resume")
    if resume and resume != "null":
        if not RunDir.has_started(resume):
            raise PbexpError(
                f"trainer.resume={resume}: no checkpoints or results there; give the run directory of an earlier run"
            )
        run_dir = _arg_value(argv, "hydra.run.dir")
        if run_dir is None:
            argv = [*argv, f"hydra.run.dir={resume}"]
        elif Path(run_dir).resolve() != Path(resume).resolve():
            raise PbexpError(
                f"trainer.resume={resume} and hydra.run.dir={run_dir} name two different run "
                "directories; give only one of them (a resumed run stays in its own directory)"
            )
    multirun = any(a in ("-m", "--multirun") for a in argv)
    out = _arg_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir") or "outputs"
    _check_writable(out)
    return argv


HYDRA_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
FLAGS_WITH_VALUE = ("-c", "--cfg", "-p", "--package", "--experimental-rerun", *HYDRA_CONFIG_FLAGS)
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _check_overrides(argv: list[str]) -> DictConfig | None:
    """Compose the config once before Hydra runs, so a typo (trainer.lrr=1), an unknown choice (model=foo)
    or a bad override is one line naming it, exit 2, instead of Hydra's 5-6 lines and exit 1. A sweep is
    checked with the first value of each swept key; other config dirs are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.split("=", 1)[0] in HYDRA_CONFIG_FLAGS for a in argv):
        return None

    def one_line(e: Exception) -> str:
        text = str(e).split("Config search path:")[0]
        return " ".join(
            line.strip()
            for line in text.splitlines()
            if line.strip()
            and "HYDRA_FULL_ERROR" not in line
            and not line.strip().startswith(("See https://", "full_key:", "object_type="))
        )

    overrides, skip = [], False
    for i, a in enumerate(argv):  # drop Hydra's flags and their values (--cfg job, -p trainer, --info all)
        if skip:
            skip = False
        elif a in FLAGS_WITH_VALUE or (a in ("-i", "--info") and i + 1 < len(argv) and argv[i + 1] in INFO_TOPICS):
            skip = True
        elif not a.startswith("-"):
            overrides.append(a)
    parser = OverridesParser.create()
    parsed = []
    for arg in overrides:
        try:
            parsed.extend(parser.parse_overrides([arg]))
        except Exception as e:  # noqa: BLE001 - the override grammar's error
            raise PbexpError(f"override {arg!r}: {one_line(e)}") from None
    choices = [_values_to_check(o) for o in parsed]
    firsts = [c[0] for c in choices]
    # the first value of every key, then each further value of a swept key on its own
    trials = [firsts] + [firsts[:i] + [v] + firsts[i + 1 :] for i, c in enumerate(choices) for v in c[1:]]
    composed = []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for overrides in trials:
            try:
                composed.append(compose(config_name="train", overrides=overrides))
            except Exception as e:  # noqa: BLE001 - every composition error is the user's override
                raise PbexpError(one_line(e) or type(e).__name__) from None
    return composed[0]


def _values_to_check(override) -> list[str]:
    """``key=value`` for each value of an override to compose: a sweep's values, an interval's two ends (a search
    space: Hydra cannot enumerate it)."""
    from hydra.core.override_parser.types import IntervalSweep

    key, value = override.get_key_element(), override.value()
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start}", f"{key}={value.end}"]
    if override.is_sweep_override():
        return [f"{key}={v}" for v in override.sweep_string_iterator()]
    return [override.input_line]


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _keep_provenance(argv: list[str], cfg: DictConfig | None) -> list[str]:
    """A run dir keeps the config it was started with: continuing it with another config is refused,
    naming the keys that differ, and Hydra does not rewrite its .hydra/ files."""
    import yaml

    run_dir = _arg_value(argv, "hydra.run.dir")
    saved_file = RunDir(run_dir or "").config
    if cfg is None or run_dir is None or any(a in ("-m", "--multirun") for a in argv) or not saved_file.is_file():
        return argv
    try:
        saved = _flat(yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return argv  # unreadable provenance: the checkpoint checks still guard the run
    now = _flat(OmegaConf.to_container(cfg, resolve=False))
    differ = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k) and k not in RESUMABLE_KEYS]
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k, '(unset)')} -> {now.get(k, '(unset)')}" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise PbexpError(
            f"{run_dir} was started with another config ({shown}{more}); continue it with the same "
            "settings, or choose another hydra.run.dir"
        )
    return [*argv, "hydra.output_subdir=null"]  # its .hydra/ already says how it was started


def _lock_output_dir(argv: list[str]):
    """Hold an exclusive lock on the run dir (or a sweep's dir) named on the command line for as long as
    this process lives, so a second process started on it stops before writing anything. Only rank 0
    locks under torchrun (every rank shares the run dir). Returns the open lock file (keep it open)."""
    import fcntl

    multirun = any(a in ("-m", "--multirun") for a in argv)
    folder = _arg_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    if folder is None or not distributed.from_env().is_main:  # a fresh timestamped folder: nobody else's
        return None
    if any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info") for a in argv):
        return None  # nothing runs, nothing is written
    Path(folder).mkdir(parents=True, exist_ok=True)
    lock = open(RunDir(folder).lock, "a+")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise PbexpError(
            f"{folder} is in use by another pbexp-train process (pid {holder}); wait for it to "
            "finish or choose another hydra.run.dir / hydra.sweep.dir"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
