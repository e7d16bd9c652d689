"""The trainer for a model that trains itself (models/self_trained.py: the fastText library, scikit-learn):
the same surface as Trainer (``resume``, ``run``, ``step``), so train() treats both alike. The model fits in
its own loop; we time it, evaluate it on valid and test with the task's code and log it like one epoch."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from pbexp.errors import ConfigError
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt
from pbexp.training import distributed
from pbexp.training.logger import RunLogger
from pbexp.training.tasks import Task
from pbexp.training.trainer import final_record

# trainer.* budgets that only our loop honours
LOOP_BUDGETS = ("max_steps", "limit_batches", "max_minutes")


class SelfTrainedTrainer:
    def __init__(self, cfg: DictConfig, task: Task, model: SelfTrainedModel, run_dir: RunDir):
        for key in LOOP_BUDGETS:
            if cfg[key]:
                raise ConfigError(
                    f"trainer.{key}",
                    cfg[key],
                    "0: this model trains itself in its own loop (set its length with its own keys, e.g. model.epoch)",
                )
        if cfg.init_from:
            raise ConfigError(
                "trainer.init_from", cfg.init_from, f"null: {type(model).__name__} trains itself from scratch"
            )
        if cfg.num_threads:
            model.set_threads(cfg.num_threads)
        self.task, self.model, self.run_dir = task, model, RunDir(run_dir)
        self.epoch, self.step, self.stopped_early = 1, 0, False

    def resume(self) -> bool:
        return False  # its own loop keeps no resumable state: a cut run fits again

    def run(self, logger: RunLogger) -> dict:
        task, model = self.task, self.model
        t0 = time.perf_counter()
        model.fit(task, self.run_dir.path)
        seconds = time.perf_counter() - t0
        valid = task.evaluate(model, "valid")
        ckpt.save_atomic({"model": {}, "epoch": 1, "valid": valid}, self.run_dir.best)
        speed = len(task.splits["train"][1]) * model.epochs / seconds
        record = {
            "epoch": model.epochs,
            "step": 0,
            **{f"valid/{k}": v for k, v in valid.items() if not isinstance(v, list)},
            "perf/epoch_s": seconds,
            f"perf/{task.unit}_per_s": speed,
        }
        logger.scalars("valid", valid, 0)
        logger.scalars("perf", {"epoch_s": seconds, f"{task.unit}_per_s": speed}, 0)
        logger.epoch_line(record)
        self.epoch = model.epochs + 1
        test, examples = task.evaluate_examples(model, "test")
        if distributed.rank() == 0:
            self.run_dir.write_test_examples(examples)  # as Trainer.test: each test example's prediction
        logger.scalars("test", test, 0)
        task.log_extras(logger, "test", test, 0)
        return final_record(model.epochs, 0, False, record, valid, test)
