"""Entry point: ``pbexp-train`` / ``python -m pbexp.train`` with Hydra overrides.

``train(cfg, run_dir) -> results`` composes one run from its config (data, task, model, trainer, logger)
and writes its results; ``hydra_main`` runs it in Hydra's run dir and returns the monitored metric (what a
sweeper optimises); ``main()`` wraps both for the command line (cli.py: checks, locks, exit codes).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.pbexp_optuna.optuna_sweeper import OptunaSweeper
from pbexp import callbacks, cli, search
from pbexp.config import CONFIG_DIR, instantiate, validate
from pbexp.errors import PbexpError
from pbexp.models import build_model, check_overrides_apply
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt
from pbexp.training import distributed, runtime
from pbexp.training.logger import RunLogger, headline, hparams_of
from pbexp.training.self_trained import SelfTrainedTrainer
from pbexp.training.tasks import build_task
from pbexp.training.trainer import RunTrainer, Trainer

__all__ = ["CONFIG_DIR", "train", "main"]
log = logging.getLogger("pbexp")
# hydra/sweeper=pbexp_optuna: Hydra's own plugin scan does not see an editable install's hydra_plugins/.
Plugins.instance().register(OptunaSweeper)


def train(cfg: DictConfig, run_dir: str | Path | RunDir) -> dict:
    """One run: build data, task, model and trainer from ``cfg``, train, test; returns the results record."""
    run_dir = RunDir(run_dir)
    validate(cfg)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    world, device = runtime.setup(cfg.trainer, cfg.seed, cli.slurm_tasks_asked())
    runtime.check_backend(cfg.model, world, device)
    data = instantiate(cfg.dataset)
    task = build_task(data, cfg.trainer, device, world.rank, world.world_size)
    check_overrides_apply(cfg.model, task.kind, cli.hydra_overrides())
    model = build_model(cfg.model, data.vocab, task.kind, data.training_sentences, cfg.seed, **task.model_kwargs())
    model.to(device)
    trainer: RunTrainer
    if isinstance(model, SelfTrainedModel):  # e.g. the fastText library: its own loop, our metrics
        trainer = SelfTrainedTrainer(cfg.trainer, task, model, run_dir)
    else:
        ddp, report_epoch = distributed.wrap(model, world, device), search.epoch_reporter_of_this_job()
        trainer = Trainer(cfg.trainer, task, model, run_dir, device, cfg.seed, world.is_main, ddp, report_epoch)
    resumed = trainer.resume()
    if not resumed:  # a resumed run has its own weights and statistics in its checkpoint
        if hasattr(model, "fit_statistics"):  # fixed statistics of the training split (NBSVM's)
            model.fit_statistics(*task.splits["train"])
        if cfg.trainer.init_from:
            ckpt.warm_start(model, cfg.trainer.init_from)
    if world.is_main:
        if resumed:
            run_dir.truncate_metrics(trainer.epoch - 1)
        else:  # a run that died before its first checkpoint starts over
            run_dir.clear_started()
        data.vocab.save(run_dir.vocab)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    name = type(model).__name__
    where = f"{device}" + (f", process {world.rank} of {world.world_size}" if world.distributed else "")
    log.info("model %s: %.2fM parameters, device %s, run dir %s", name, n_params / 1e6, where, run_dir.path)

    logger = RunLogger(run_dir, purge_step=trainer.step + 1 if resumed else None, enabled=world.is_main)
    if not resumed:
        logger.describe(OmegaConf.to_yaml(cfg), task.metric_keys)
    start = time.time()
    record = trainer.run(logger)
    results = {"status": "completed", "task": task.kind, "model": name, "params": n_params}
    results |= {"monitor": f"valid/{task.monitor}", "overrides": cli.hydra_overrides(), "wall_s": time.time() - start}
    results |= record
    if world.is_main:
        run_dir.write_results(results)
    logger.hparams(hparams_of(cfg, results["overrides"], cli.hydra_choices()), results)
    logger.close()
    log.info("done: %s -> %s", headline(results), run_dir.results)
    return results


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = RunDir(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    previous = run_dir.read_results()
    if previous and previous.get("status") == "completed":
        log.info("run in %s is already complete (%s); nothing to do", run_dir.path, run_dir.results.name)
        return previous.get(previous.get("monitor", ""))
    local = multirun and callbacks.runs_in_the_sweeps_processes()  # a signal to this job ends the sweep
    if local and callbacks.sweep_stopped(hc.sweep.dir):  # a signal is ending the sweep: left for its rerun
        log.info("sweep interrupted: job %s not started", hc.job.num)
        return None
    try:
        with callbacks.job_signals(hc.sweep.dir) if local else nullcontext():
            results = train(cfg, run_dir)
        return results[results["monitor"]]  # what a sweeper (Optuna) optimises
    except BaseException as e:  # noqa: BLE001 - cli.failure sorts user errors from bugs
        ended = cli.failure(e, cfg, run_dir, multirun)
        if ended is None:
            raise
        signal_name = e.args[0] if isinstance(e, KeyboardInterrupt) and e.args else "SIGINT"
    msg, status, code = ended
    if local and status == "interrupted":  # the trainer caught the signal: the jobs after this one must not start
        callbacks.mark_stopped(hc.sweep.dir, signal_name)
    # Record how it ended in this run's own results, unless that would overwrite an earlier result (an
    # interrupted run says so whatever it said before: it is no longer what ended it).
    if (status in (search.PRUNED, "interrupted") or previous is None) and distributed.from_env().is_main:
        try:
            run_dir.write_results({"status": status, "error": msg, "overrides": cli.hydra_overrides()})
        except OSError:
            pass
    if status == search.PRUNED:
        log.info("%s", msg)
        return None
    print(f"pbexp-train: error: {msg}", file=sys.stderr, flush=True)
    log.error(msg)
    if multirun:
        return None  # the sweep goes on; pbexp.callbacks makes the sweep exit non-zero at the end
    sys.exit(code)


def main() -> None:
    try:
        sys.argv[1:], lock = cli.prepare(sys.argv[1:])  # noqa: F841 - the lock is held while this runs
    except PbexpError as e:
        print(f"pbexp-train: error: {e}", file=sys.stderr)
        sys.exit(cli.EXIT_USER_ERROR)
    try:
        hydra_main()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    # Run the copy imported as ``pbexp.train``, not this ``__main__`` one: launchers that pickle the
    # task function (joblib, submitit) can then pickle it by reference.
    from pbexp.train import main as _main

    _main()
