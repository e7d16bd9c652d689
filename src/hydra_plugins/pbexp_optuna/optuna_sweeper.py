"""``hydra/sweeper=pbexp_optuna``: Optuna (TPE) over ``pbexp-train -m``, on current Optuna.

hydra-optuna-sweeper 1.2/1.3 pins optuna < 3. Measured here (Python 3.11, numpy 2.4.6, SQLAlchemy 2.1.9):
optuna 2.10.1 optimises in memory, but its SQLite storage fails on creation (AssertionError in
RDBStorage.get_current_version), so a study could not persist or resume. This is the small adapter over
current Optuna that the project uses instead. What it adds to the usual sweeper:
* the study lives in SQLite in the sweep dir: rerunning the same command continues it, finished trials kept;
* pruning on each epoch's valid metric (``pbexp.search.epoch_reporter`` in the job);
* at the end, the best trial (number, params, value, run dir) in ``<sweep>/optuna_best.yaml``, and printed.

Search space, in Hydra's override grammar (``hydra.sweeper.params`` or the command line):
``interval(a, b)`` a float, ``tag(log, interval(a, b))`` on a log scale, ``int(interval(a, b))`` an integer,
``range(a, b[, step])`` integers, ``choice(x, y, ...)`` categories.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from pbexp.search import PRUNED, make_pruner, storage_url

log = logging.getLogger("pbexp")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pbexp_optuna.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"  # minimize (perplexity) | maximize (accuracy)
    n_trials: int = 20  # in all, counting those of earlier runs of the same sweep
    n_jobs: int = 1  # trials launched together (with hydra/launcher=joblib)
    seed: int = 0  # the TPE sampler's
    study_name: str = "pbexp"
    storage: str | None = None  # default: sqlite:///<sweep dir>/optuna.db
    pruner: str = "median"  # median | none
    n_startup_trials: int = 2  # trials before pruning starts
    params: dict = field(default_factory=dict)


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


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str,
        n_trials: int,
        n_jobs: int,
        seed: int,
        study_name: str,
        storage: str | None,
        pruner: str,
        n_startup_trials: int,
        params: dict,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"hydra.sweeper.direction={direction} is not allowed: minimize or maximize")
        if pruner not in ("median", "none"):
            raise ValueError(f"hydra.sweeper.pruner={pruner} is not allowed: median or none")
        self.direction, self.n_trials, self.n_jobs, self.seed = direction, n_trials, max(1, n_jobs), seed
        self.study_name, self.storage, self.pruner = study_name, storage, pruner
        self.n_startup_trials, self.params = n_startup_trials, dict(params or {})

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
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
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        pruner = make_pruner(self.pruner, self.n_startup_trials)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage or storage_url(sweep_dir),
            direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            pruner=pruner,
            load_if_exists=True,
        )
        for stale in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # its process died with the last run
            log.info("trial %d was running when the sweep stopped: marked failed", stale.number)
        finished = len(study.trials) - len(study.get_trials(states=[optuna.trial.TrialState.FAIL]))
        if finished:
            log.info(
                "study %s in %s: %d trial(s) already done, %d to go",
                self.study_name,
                sweep_dir,
                finished,
                max(0, self.n_trials - finished),
            )
        while finished < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - finished))]
            # Trial N runs as job N (asked together, the numbers are consecutive): its run dir is <sweep>/N
            # and the job finds its trial by that number.
            jobs = [fixed + [f"{k}={v}" for k, v in trial.params.items()] for trial in trials]
            for trial, result in zip(trials, self.launcher.launch(jobs, initial_job_idx=trials[0].number)):
                self._tell(study, trial, result)
            finished += len(trials)
        self._write_best(study, sweep_dir)
        return study

    @staticmethod
    def _tell(study, trial, result) -> None:
        import optuna

        from pbexp.rundir import RunDir

        value = result.return_value if result.status.name == "COMPLETED" else None
        if isinstance(value, float):
            study.tell(trial, value)
            return
        results = RunDir(result.hydra_cfg.hydra.runtime.output_dir).read_results() or {}
        state = optuna.trial.TrialState.PRUNED if results.get("status") == PRUNED else optuna.trial.TrialState.FAIL
        study.tell(trial, state=state)

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
            "run_dir": str(sweep_dir / str(best.number)),
            "direction": self.direction,
            "trials": {s.name.lower(): len(study.get_trials(states=[s])) for s in optuna.trial.TrialState},
        }
        OmegaConf.save(OmegaConf.create(info), sweep_dir / "optuna_best.yaml")
        print(
            f"best trial {best.number}: value {best.value:.6g} with {best.params} -> {sweep_dir / str(best.number)}",
            flush=True,
        )
