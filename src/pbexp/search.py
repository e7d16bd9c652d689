"""Hyperparameter search, the job's side: report each epoch's valid metric to the Optuna trial this job
runs, and stop the job when Optuna prunes it. The sweeper's side is ``hydra_plugins/pbexp_optuna``.

A job knows its trial without extra overrides: the sweeper launches trial N as job N of the sweep, and the
job opens the study as the sweeper does (:func:`study_storage`, ``hydra.sweeper.study_name``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("pbexp")
SWEEPER = "hydra_plugins.pbexp_optuna.optuna_sweeper.OptunaSweeper"
PRUNED = "pruned"  # the results status of a job that Optuna stopped early
JOURNAL = "optuna.journal"  # the study's default storage, in the sweep dir
SQLITE = "optuna.db"  # where sweeps started before the journal keep their study


@dataclass
class OptunaSweeperConf:
    """hydra/sweeper=pbexp_optuna's settings. Defined here, not in the plugin's module: Hydra's plugin scan executes
    that module without registering it first, and a dataclass cannot be made there (a wheel install crashed)."""

    _target_: str = SWEEPER
    direction: str = "minimize"  # minimize (perplexity) | maximize (accuracy)
    n_trials: int = 20  # in all, counting those of earlier runs of the same sweep (failed ones do not count)
    n_jobs: int = 1  # trials at a time: > 1 starts that many worker processes (mode=workers)
    mode: str = "workers"  # workers | batched (n_jobs trials launched together through hydra/launcher)
    worker: int | None = None  # set by the sweeper on its worker processes' command lines
    seed: int = 0  # the TPE sampler's (worker i's: seed + i, so workers do not draw the same values)
    study_name: str = "pbexp"
    storage: str | None = None  # an RDB URL; default: Optuna's journal file <sweep dir>/optuna.journal
    pruner: str = "median"  # median | none
    n_startup_trials: int = 2  # trials before pruning starts
    params: dict = field(default_factory=dict)


class Pruned(Exception):
    """Optuna stopped this trial after an epoch: its valid metric trails the other trials'."""


def study_storage(storage: str | None, sweep_dir):
    """The study's storage, for the sweeper and every job alike: ``hydra.sweeper.storage`` (an RDB URL) when
    set, else Optuna's journal file in the sweep dir (several processes may write it at once, which Optuna
    advises against for SQLite), so a rerun of the sweep continues it. A sweep begun with SQLite in the sweep
    dir (``optuna.db``, before the journal) continues there."""
    if storage:
        return storage
    sweep_dir = Path(sweep_dir).absolute()
    if (sweep_dir / SQLITE).is_file() and not (sweep_dir / JOURNAL).exists():
        return f"sqlite:///{sweep_dir / SQLITE}"
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    sweep_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))


def make_pruner(name: str, n_startup_trials: int):
    """The sweeper's and every job's pruner (a study loaded without one would get Optuna's default)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials)
    return optuna.pruners.NopPruner()


def epoch_reporter_of_this_job():
    """``report(epoch, value)`` when this process runs a job of an Optuna sweep (hydra/sweeper=pbexp_optuna),
    else None (a single run, another sweeper, or train() called outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    return epoch_reporter(hydra_cfg) if hydra_cfg.mode == RunMode.MULTIRUN else None


def epoch_reporter(hydra_cfg):
    """``report(epoch, value)`` for the trial this job runs, or None outside an Optuna sweep."""
    sweeper = hydra_cfg.sweeper
    if sweeper.get("_target_") != SWEEPER:
        return None
    import optuna

    study = optuna.load_study(
        study_name=sweeper.study_name,
        storage=study_storage(sweeper.storage, hydra_cfg.sweep.dir),
        pruner=make_pruner(sweeper.pruner, sweeper.n_startup_trials),
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(hydra_cfg.job.num))
    trial = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise Pruned(f"trial {hydra_cfg.job.num} pruned after epoch {epoch} (valid {value:.4g})")

    return report
