"""Hyperparameter search, the job's side: report each epoch's valid metric to the Optuna trial this job
runs, and stop the job when Optuna prunes it. The sweeper's side is ``hydra_plugins/pbexp_optuna``.

A job knows its trial without extra overrides: the sweeper launches trial N as job N of the sweep, and the
job finds the study through its Hydra config (``hydra.sweeper.storage`` / ``study_name``).
"""

from __future__ import annotations

import logging

log = logging.getLogger("pbexp")
SWEEPER = "hydra_plugins.pbexp_optuna.optuna_sweeper.OptunaSweeper"
PRUNED = "pruned"  # the results status of a job that Optuna stopped early


class Pruned(Exception):
    """Optuna stopped this trial after an epoch: its valid metric trails the other trials'."""


def storage_url(sweep_dir) -> str:
    """The study's default storage: SQLite in the sweep dir, so a rerun of the sweep continues it."""
    from pathlib import Path

    return f"sqlite:///{Path(sweep_dir).absolute() / 'optuna.db'}"


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

    storage = sweeper.storage or storage_url(hydra_cfg.sweep.dir)
    study = optuna.load_study(
        study_name=sweeper.study_name, storage=storage, pruner=make_pruner(sweeper.pruner, sweeper.n_startup_trials)
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(hydra_cfg.job.num))
    trial = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise Pruned(f"trial {hydra_cfg.job.num} pruned after epoch {epoch} (valid {value:.4g})")

    return report
