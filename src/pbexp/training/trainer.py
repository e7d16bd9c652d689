"""The shared training loop: the same for every task (see tasks.py for what differs).

Per step: forward through the task, backward, clip, optimiser step; losses are summed on the
device and read back only every ``log_every`` steps (no per-step host sync). Per epoch: evaluate
on valid, step the learning-rate schedule, save the resume checkpoint (and the best weights when
valid improves). At the end: test with the best weights (the metrics, and each test example's result in
``RunDir.test_examples``). Checkpoints carry everything needed to resume exactly. ``Trainer.run`` does all
of it and returns the run's final record.

Under torchrun every process runs this loop in step: each one's own state (carried hidden state, loss sums, RNG
states) goes into rank 0's checkpoint, and a stop that one process alone sees (a signal, max_minutes by its own
clock) is decided by all at log points, so that none is left waiting in an all-reduce (``_agree``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Protocol

import torch
from omegaconf import DictConfig
from torch import nn

from pbexp.errors import ConfigError, Diverged, PbexpError
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt
from pbexp.training import distributed, faults
from pbexp.training.averaging import WeightAverage
from pbexp.training.logger import Progress, RunLogger
from pbexp.training.tasks import Task

log = logging.getLogger("pbexp")


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU (avx512_bf16 / AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def native_bf16(device: torch.device) -> bool:
    """bf16 that runs at full speed here: a CPU with avx512_bf16 / AMX, a GPU of compute capability 8 or later."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_bf16()


def use_bf16(amp: str, device: torch.device, say: bool = True) -> bool:
    """Whether to autocast to bf16 for ``trainer.amp``: ``bf16`` (except on a CPU without native bf16, where
    autocast measured ~10x slower and fails in oneDNN's LSTM), ``auto`` (where it is native) or ``none``."""
    native = native_bf16(device)
    if amp == "auto" and say:
        log.info("trainer.amp=auto: %s", "bf16 (native here)" if native else "fp32 (no native bf16 here)")
    if amp == "bf16" and device.type == "cpu" and not native:
        if say:
            log.warning(
                "trainer.amp=bf16: this CPU has no native bf16 (oneDNN reports none), where bf16 autocast measured "
                "~10x slower and fails in oneDNN's LSTM; training in fp32 instead"
            )
        return False
    return native if amp == "auto" else amp == "bf16"


# The optimisers trainer.optimizer names (config.validate checks against these keys). Adagrad takes sparse
# gradients too: the usual choice for bags of embeddings.
OPTIMIZERS = {
    "sgd": lambda cfg, params: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
    "adam": lambda cfg, params: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adamw": lambda cfg, params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adagrad": lambda cfg, params: torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
}


def make_optimizer(cfg, params):
    return OPTIMIZERS[cfg.optimizer.lower()](cfg, params)


def _zaremba_factor(epoch: int, decay_start: int, decay: float) -> float:
    """lr multiplier after ``epoch`` finished epochs: constant for ``decay_start`` epochs, then x decay each."""
    return decay ** max(0, epoch + 1 - decay_start)


def _plateau(cfg, optimizer):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=1.0 / cfg.lr_factor, patience=0, threshold=0.0
    )


def _zaremba(cfg, optimizer):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(_zaremba_factor, decay_start=cfg.decay_start, decay=cfg.lr_decay)
    )


# The schedules trainer.schedule names (config.validate checks against these keys).
SCHEDULES = {"none": lambda cfg, optimizer: None, "plateau": _plateau, "zaremba": _zaremba}


def make_scheduler(cfg, optimizer):
    """``plateau``: divide lr by ``lr_factor`` whenever validation does not improve (pytorch/examples);
    ``zaremba``: constant for ``decay_start`` epochs, then x ``lr_decay`` each epoch; ``none``."""
    return SCHEDULES[cfg.schedule](cfg, optimizer)


class RunTrainer(Protocol):
    """What train() needs of a trainer: ours (``Trainer``) or a self-training model's (``SelfTrainedTrainer``)."""

    epoch: int  # the epoch to run next (after resume(): the one to continue)
    step: int  # optimiser steps done

    def resume(self) -> bool: ...
    def run(self, logger: RunLogger) -> dict: ...


class Trainer:
    def __init__(
        self,
        cfg: DictConfig,
        task: Task,
        model: nn.Module,
        run_dir: RunDir,
        device: torch.device,
        seed: int,
        is_main: bool = True,
        ddp_model: nn.Module | None = None,
        on_epoch: Callable[[int, float], None] | None = None,
    ):
        self.cfg, self.task, self.model, self.run_dir = cfg, task, model, RunDir(run_dir)
        self.net = ddp_model or model  # what the forward pass goes through (DDP wrapper or the model)
        if cfg.compile:
            check_compilable(model)
            self.net = torch.compile(self.net)
        self.device, self.seed, self.is_main = device, seed, is_main
        self.bf16 = use_bf16(cfg.amp, device, is_main)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer.lower() not in ("sgd", "adagrad") and any(
            getattr(m, "sparse", False) for m in model.modules()
        ):
            raise ConfigError(
                "trainer.optimizer",
                cfg.optimizer,
                "sgd or adagrad: the model has sparse embeddings (model.sparse=true), which only those update",
            )
        # A model with every weight frozen has nothing to optimise: it is only evaluated.
        self.optimizer = make_optimizer(cfg, self.params) if self.params else None
        self.scheduler = make_scheduler(cfg, self.optimizer) if self.params else None
        self.average = WeightAverage(self.params, cfg.average, cfg.average_from, cfg.average_nonmono)
        self.valid_history: list[float] = []  # each epoch's monitored valid metric (the nonmono trigger reads it)
        # Counters; restored by resume().
        self.epoch, self.batch_in_epoch, self.step = 1, 0, 0
        self.best, self.epochs_since_best = None, 0
        self.best_valid: dict = {}  # the valid metrics of the best weights
        self.valid_seconds = 0.0  # how long the last validation took (for the whole-run ETA)
        self.time_done, self._t_epoch = 0.0, None  # training seconds of finished epochs; current epoch start
        self._reset_epoch_sums()
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        # A signal this process got; and the stops all processes decided together (_agree).
        self.signal_seen, self.stop_requested, self.out_of_time = False, False, False
        self.on_epoch = on_epoch  # on_epoch(epoch, monitored valid metric) after each epoch's checkpoint

    def _reset_epoch_sums(self) -> None:
        # Summed every step on the device (float64), so an interrupted and resumed epoch adds the
        # same numbers in the same order as an uninterrupted one: bit-identical train metrics.
        self.epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.epoch_count, self.epoch_time = 0, 0.0

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What all processes share (rank 0's copy); what each has of its own is in rank_state()."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best": self.best,
            "epochs_since_best": self.epochs_since_best,
            "best_valid": self.best_valid,
            "average": self.average.state_dict(),
            "valid_history": self.valid_history,
            "epoch_time": self.epoch_time,
            "time_done": self.time_done,
        }

    def rank_state(self) -> dict:
        """This process's own state: the carried LM hidden state (its batch columns), the epoch's loss sums (its
        share of the data) and its RNG states; on the CPU, for rank 0 to gather into the checkpoint."""
        return {
            "task": ckpt.on_cpu(self.task.state_dict()),
            "epoch_loss": self.epoch_loss.cpu(),
            "epoch_count": self.epoch_count,
            "rng": ckpt.rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise PbexpError(
                f"checkpoint in {self.run_dir.checkpoints} was made by a model of a different shape; "
                f"use a new run directory or the original model settings ({str(e).splitlines()[0]})"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        for key in ("epoch", "batch_in_epoch", "step", "best", "epoch_time"):
            setattr(self, key, state[key])
        self.time_done = state.get("time_done", 0.0)
        self.epochs_since_best = state.get("epochs_since_best", 0)  # older checkpoints lack it
        self.best_valid = state.get("best_valid") or {}  # older checkpoints: test() reads it from the best weights
        self.average.load_state_dict(state.get("average"))
        self.valid_history = state.get("valid_history", [])
        own = self._own_part(state)
        self.epoch_loss, self.epoch_count = own["epoch_loss"].to(self.device), own["epoch_count"]
        self.task.load_state_dict(own["task"])
        ckpt.set_rng_state(own["rng"])

    def _own_part(self, state: dict) -> dict:
        """This process's rank_state() in a checkpoint (older ones hold one process's, at the top level)."""
        ranks = state.get("ranks") or [state]
        if len(ranks) == self.world_size:
            return ranks[self.rank]
        if self.batch_in_epoch:  # the carried state and sums of the others' shares of the batch have no place
            raise PbexpError(
                f"the checkpoint in {self.run_dir.checkpoints} was taken mid-epoch by {len(ranks)} process(es); "
                f"resume it with as many (torchrun --nproc_per_node), not {self.world_size}"
            )
        log.warning(
            "resuming %d process(es)' checkpoint with %d at an epoch's start: close to, not bit-identical with, "
            "a run that kept its number of processes",
            len(ranks),
            self.world_size,
        )
        return ranks[self.rank % len(ranks)]

    def resume(self) -> bool:
        """Load the resume checkpoint if there is one; True when resumed."""
        # A process killed inside a checkpoint write leaves its temp file; the run dir is locked, so any
        # temp file here is such a leftover.
        for stale in self.run_dir.checkpoints.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        # Read onto the CPU: the weights and the optimiser's state are copied to their parameters' device as they
        # are loaded, and torch restores RNG states only from CPU tensors (a GPU resume crashed on them).
        state = ckpt.load_latest(self.run_dir.last)
        if state is None:
            return False
        self.load_state_dict(state)
        log.info(
            "resuming from %s: epoch %d, batch %d, step %d",
            self.run_dir.last,
            self.epoch,
            self.batch_in_epoch,
            self.step,
        )
        return True

    def save_last(self) -> None:
        """The resume checkpoint, written by rank 0 with every process's own state in it. Every process calls this."""
        ranks = distributed.gather_to_main(self.rank_state())
        if self.is_main:
            ckpt.save_rotating({**self.state_dict(), "ranks": ranks}, self.run_dir.last)

    def autocast(self):
        """bf16 autocast for the forward pass and loss when trainer.amp=bf16 (a no-op otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ---- loop --------------------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def fit(self, logger: RunLogger) -> dict:
        """Train for ``cfg.epochs`` epochs (0: no epoch limit) or until ``cfg.max_steps`` / ``cfg.max_minutes``;
        returns the last epoch's record."""
        cfg = self.cfg
        record = {}
        self._agree([])  # e.g. a resumed run whose time budget is spent
        while (cfg.epochs == 0 or self.epoch <= cfg.epochs) and not self._steps_done() and not self.stopped_early:
            record = self._train_epoch(logger)
            self._agree([])  # e.g. a signal during validation
            if self.stop_requested:
                break
        if self.stopped_early and self.is_main:
            log.info(
                "early stop after epoch %d: valid %s has not improved for %d epochs (best %.4g)",
                self.epoch - 1,
                self.task.monitor,
                self.epochs_since_best,
                self.best,
            )
        return record

    @property
    def stopped_early(self) -> bool:
        """trainer.early_stop_patience epochs in a row without a better valid metric."""
        return 0 < self.cfg.early_stop_patience <= self.epochs_since_best

    def _steps_done(self) -> bool:
        """max_steps reached, or the max_minutes training-time budget spent (as the processes agreed: _agree)."""
        return self._max_steps_reached() or self.out_of_time

    def _max_steps_reached(self) -> bool:
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def _time_spent(self) -> bool:
        """The max_minutes budget spent, by this process's clock."""
        return bool(self.cfg.max_minutes) and self.train_seconds() >= 60 * self.cfg.max_minutes

    def _agree(self, sums: list[float]) -> list[float]:
        """``sums`` added over the processes, in one all-reduce with each process's stop wishes (a signal it got,
        max_minutes spent by its clock): a stop any process wants becomes all processes' decision
        (stop_requested, out_of_time), or the others would wait forever in DDP's next all-reduce. Alone: the
        wishes are the decision, without a collective. Every process must call it at the same points."""
        values = [*sums, float(self.signal_seen), float(self._time_spent())]
        if self.world_size > 1:
            values = distributed.sum_over_ranks(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()
        *summed, signals, spent = values
        self.stop_requested = self.stop_requested or signals > 0
        self.out_of_time = self.out_of_time or spent > 0
        return summed

    def train_seconds(self) -> float:
        """Training time so far: finished epochs (kept across resumes) plus the current one."""
        running = time.perf_counter() - self._t_epoch if self._t_epoch is not None else 0.0
        return self.time_done + self.epoch_time + running

    def run_eta(self, batches_per_epoch: int) -> float | None:
        """Seconds until training ends: the batches left in this and the later epochs (fewer under max_steps),
        at this run's pace, plus a validation per epoch left; capped by what remains of max_minutes. None
        when nothing bounds the run (epochs=0 without a budget) or no batch has run yet."""
        cfg, done = self.cfg, self.batch_in_epoch
        running = self._t_epoch is not None
        pace = (self.epoch_time + time.perf_counter() - self._t_epoch) / done if done and running else None
        if pace is None:
            return None
        epochs_left = cfg.epochs - self.epoch if cfg.epochs else None
        left = (
            []
            if epochs_left is None
            else [
                (batches_per_epoch - done + epochs_left * batches_per_epoch) * pace
                + (epochs_left + 1) * self.valid_seconds
            ]
        )
        if cfg.max_steps:
            left.append((cfg.max_steps - self.step) * pace + self.valid_seconds)
        if cfg.max_minutes:
            left.append(max(0.0, 60 * cfg.max_minutes - self.train_seconds()))
        return min(left) if left else None

    def _train_epoch(self, logger: RunLogger) -> dict:
        self.run_batches(logger)
        if self.stop_requested:
            self.save_last()
            return {}
        return self._end_epoch(logger)

    def run_batches(self, logger: RunLogger) -> None:
        """The hot loop: the rest of the current epoch's batches (or until max_steps / a stop request)."""
        cfg, task, model = self.cfg, self.task, self.net
        if self.batch_in_epoch == 0:
            task.start_epoch(self.model, self.epoch, self.seed)
            self._reset_epoch_sums()
            if self.average.starts_with_epoch(self.epoch):
                self._start_average()
        model.train()
        total = task.num_batches()
        if cfg.limit_batches:  # quick presets: shorter epochs, same schedule and evaluation
            total = min(total, cfg.limit_batches)
        # What the bar and its ETA cover: the batches this epoch will really run (max_steps may stop sooner).
        shown = min(total, self.batch_in_epoch + cfg.max_steps - self.step) if cfg.max_steps else total
        progress = Progress(shown, f"epoch {self.epoch}", initial=self.batch_in_epoch) if self.is_main else None
        loss_sum = torch.zeros((), device=self.device)  # since the last log line, on the device
        count, grad_norm = 0, torch.zeros(())
        t_log = self._t_epoch = time.perf_counter()
        for batch in task.train_batches(self.epoch, self.seed, start=self.batch_in_epoch):
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss, n = task.train_loss(model, batch)
            loss.backward()
            if cfg.clip > 0:
                grad_norm = nn.utils.clip_grad_norm_(self.params, cfg.clip)
            self.optimizer.step()
            self.average.update()
            weighted = loss.detach() * n  # summed, not averaged: windows and batches may differ in size
            loss_sum += weighted
            self.epoch_loss += weighted
            self.epoch_count += n
            count += n
            self.step += 1
            self.batch_in_epoch += 1
            faults.after_step(self.step)
            if progress:
                progress.tick()
            end = self.batch_in_epoch == total or self._max_steps_reached()  # the same step in every process
            # Log every log_every steps, at the end, and once early (step 10) so a long run shows life soon.
            log_point = end or self.step % cfg.log_every == 0 or self.step == 10
            if self.world_size == 1 and not log_point:  # alone, stops are decided every step (no collective)
                self._agree([])
                log_point = self.out_of_time  # the last step of the time budget logs, as an epoch's end does
            if log_point:
                # The one host sync, every log_every steps; under torchrun also where the processes agree on stops
                # (all of them, and a loss over all of them).
                logged_loss, logged = self._agree([loss_sum.item(), count])
                mean = logged_loss / logged
                info = task.summarise(logged_loss, logged)
                if not all(math.isfinite(v) for v in info.values()):  # NaN/inf loss, or ppl beyond exp(700)
                    raise Diverged(
                        f"training loss became {mean} at step {self.step} (epoch {self.epoch}); "
                        f"the learning rate {self.lr:g} is probably too high: try trainer.lr="
                        f"{self.lr / 4:g}"
                    )
                now = time.perf_counter()
                speed = logged / (now - t_log)
                if self.is_main:
                    logger.scalars("train", info, self.step)
                    logger.scalars("opt", {"lr": self.lr, "grad_norm": float(grad_norm)}, self.step)
                    logger.scalars("perf", {f"{task.unit}_per_s": speed}, self.step)
                    eta = self.run_eta(total)
                    shown_eta = {} if eta is None else {"run ETA": format_seconds(eta)}
                    progress.update(self.batch_in_epoch, {**info, f"{task.unit}/s": round(speed), **shown_eta})
                loss_sum.zero_()
                count, t_log = 0, now
            last = end or self.out_of_time
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not last:
                self.epoch_time += time.perf_counter() - self._t_epoch
                self._t_epoch = time.perf_counter()
                self.save_last()
            if last or self.stop_requested:
                break
        if progress:
            progress.close()
        self.epoch_time += time.perf_counter() - self._t_epoch
        self._t_epoch = None

    def _end_epoch(self, logger: RunLogger) -> dict:
        task = self.task
        # Train metrics over all processes' shares of the data (one process: unchanged).
        loss_sum = distributed.sum_over_ranks(self.epoch_loss).item()
        count = int(distributed.sum_over_ranks(torch.tensor(self.epoch_count, device=self.device)).item())
        train = task.summarise(loss_sum, max(1, count))
        t_valid = time.perf_counter()
        # Every process evaluated the same weights, but another GPU or cuDNN algorithm may change the last bits:
        # rank 0's numbers decide the best weights, the lr schedule and early stopping for all.
        with self.average.applied():  # averaged SGD: the mean of the weights is what is evaluated and kept
            valid = distributed.from_main(self.evaluate("valid"))
        self.valid_seconds = time.perf_counter() - t_valid
        self.check_evaluation("valid", valid, train)
        monitored = valid[task.monitor]
        better = self.best is None or (monitored < self.best if task.monitor_mode == "min" else monitored > self.best)
        record = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            **{f"train/{k}": v for k, v in train.items()},
            f"train/{task.unit}": count,
            **{f"valid/{k}": v for k, v in valid.items() if not isinstance(v, list)},
            "perf/epoch_s": self.epoch_time,
            f"perf/{task.unit}_per_s": count / max(self.epoch_time, 1e-9),
        }
        whole = task.num_batches()
        if 0 < self.batch_in_epoch < whole:  # a cut epoch (limit_batches, max_steps): what a whole one would take
            record["perf/whole_epoch_s_extrapolated"] = self.epoch_time * whole / self.batch_in_epoch
        if self.is_main:
            logger.scalars("valid", valid, self.step)
            logger.scalars("perf", {"epoch_s": self.epoch_time}, self.step)
            task.log_extras(logger, "valid", valid, self.step)
            logger.epoch_line(record)
            log.info(
                "epoch %d: %s",
                self.epoch,
                " ".join(
                    f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float) and "_" not in k.split("/")[-1]
                ),
            )
        self.epochs_since_best = 0 if better else self.epochs_since_best + 1
        if better:
            self.best, self.best_valid = monitored, valid
            if self.is_main:
                with self.average.applied():
                    ckpt.save_atomic(
                        {"model": self.model.state_dict(), "epoch": self.epoch, "valid": valid}, self.run_dir.best
                    )
        if self.average.starts_after(self.valid_history, monitored, task.monitor_mode == "min"):
            self._start_average()
        self.valid_history.append(monitored)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored if task.monitor_mode == "min" else -monitored)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        self.batch_in_epoch = 0
        self.time_done += self.epoch_time
        self.epoch_time = 0.0
        self.save_last()
        # e.g. an Optuna trial's pruning check (it may raise search.Pruned): rank 0 asks, all processes stop
        distributed.run_on_main(self.on_epoch, self.epoch - 1, monitored)
        return record

    def run(self, logger: RunLogger) -> dict:
        """Train (SIGINT/SIGTERM stop it after the current step, under torchrun at the next log point, with a
        checkpoint: KeyboardInterrupt), then test the best weights; the final record: counters, the last epoch's
        train/perf figures, the best weights' valid metrics and their test metrics. A model that breaks its task's
        contract (a method missing, an output of the wrong shape) is refused before the first step."""
        self.task.check_model(self.model)
        with stop_on_signals(self) as stop:  # a signal during the test pass is ignored: it finishes and is written
            last = self.fit(logger)
            if self.stop_requested:
                if stop["signal"] and stop["signal"] in stop["requeue"]:  # checkpoint saved: the scheduler's turn
                    log.warning("%s: checkpoint saved at step %d; the job is requeued", stop["signal"], self.step)
                    stop["requeue"][stop["signal"]]()  # submitit requeues the job and exits (rank 0)
                raise KeyboardInterrupt(stop["signal"] or "a signal to another process")
            distributed.barrier()
            test = self.test()
        if self.is_main:
            logger.scalars("test", test, self.step)
            self.task.log_extras(logger, "test", test, self.step)
        record = final_record(
            last.get("epoch", self.epoch - 1), self.step, self.stopped_early, last, self.best_valid, test
        )
        record["precision"] = "bf16" if self.bf16 else "fp32"  # what trainer.amp (auto: the hardware) gave
        if self.average.active:
            record["averaged_from_step"] = self.average.started_at_step
        return record

    def _start_average(self) -> None:
        self.average.start(self.step)
        if self.is_main:
            log.info("averaged SGD: the weights are averaged from step %d (epoch %d) on", self.step, self.epoch)

    def test(self) -> dict:
        """Test metrics with the best weights (the current ones, or their mean under averaged SGD, if no epoch
        finished); rank 0 keeps the same pass's per-example results in ``RunDir.test_examples``."""
        current = self.average.applied()
        if self.run_dir.best.exists():
            state = ckpt.load(self.run_dir.best, map_location=self.device)
            self.model.load_state_dict(state["model"])
            self.best_valid = self.best_valid or state["valid"]
            current = nullcontext()
        with current:
            test, examples = self.timed_evaluation("test", self.task.evaluate_examples)
        test = distributed.from_main(test)  # rank 0's, as for valid: its examples are the ones written
        self.check_evaluation("test", test)
        if self.is_main:
            self.run_dir.write_test_examples(examples)
        return test

    def check_evaluation(self, split: str, metrics: dict, train: dict | None = None) -> None:
        """Diverged, with the likelier cause, when a loss is not finite or an evaluation's is past the task's
        blow-up mark: a training loss that blew up too points at the lr; one that stayed sane points at the
        state carried through the evaluation stream (a recurrent gain above 1, as an IRNN's can grow)."""
        loss = metrics["loss"]

        def sane(x: float) -> bool:
            return math.isfinite(x) and x <= self.task.blowup_loss

        train_sane = train is None or sane(train["loss"])
        if train_sane and sane(loss):
            return
        shown = f"perplexity {metrics['ppl']:.3g}" if "ppl" in metrics else f"loss {loss:.3g}"
        where = f"{split} {shown}" + (f" after epoch {self.epoch}" if split == "valid" else "")
        if not train_sane:
            raise Diverged(
                f"{where}, training loss {train['loss']:.4g}: the learning rate {self.lr:g} is probably too high: "
                f"try trainer.lr={self.lr / 4:g}"
            )
        trained = "" if train is None else f" while training's was {train.get('ppl', train['loss']):.4g}"
        raise Diverged(
            f"{where}{trained}: the evaluation blew up, not the training (the state carried through the "
            f"{split} stream grew without bound: try a smaller model.identity_scale or trainer.lr)"
        )

    def evaluate(self, split: str) -> dict:
        """task.evaluate's metrics, with a line before and after, and a progress bar on a terminal."""
        return self.timed_evaluation(split, self.task.evaluate)

    def timed_evaluation(self, split: str, evaluate: Callable):
        """``evaluate(model, split, tick)`` (task.evaluate, or task.evaluate_examples: (metrics, per-example
        results)) with a line before and after, and a progress bar on a terminal: a long evaluation is not
        silence. Returns what it returns."""
        t0 = time.perf_counter()
        bar = Progress(self.task.eval_batches(split), f"evaluating on {split}") if self.is_main else None
        try:
            out = evaluate(self.model, split, tick=bar.tick if bar else None)
            metrics = out[0] if isinstance(out, tuple) else out
        finally:
            if bar:
                bar.close()
        if self.is_main:
            log.info(
                "%s: %s (%.1f s)",
                split,
                " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
                time.perf_counter() - t0,
            )
        return out


def check_compilable(model: nn.Module) -> None:
    """trainer.compile=true is refused for recurrent models: torch.compile (with dynamo's allow_rnn) unrolls cuDNN's
    fused RNN into a per-time-step loop, and recompiles for each new sequence length (an LM's short last window,
    the GRU classifiers' per-batch lengths); their embeddings and linear layers are single kernels already."""
    recurrent = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
    if recurrent:
        raise ConfigError(
            "trainer.compile",
            True,
            f"false for {type(model).__name__}, which has {', '.join(recurrent)} layers (torch.compile turns cuDNN's "
            "fused RNN into a per-step loop and recompiles for every sequence length); true suits the models "
            "without recurrent layers",
        )


def format_seconds(seconds: float) -> str:
    """'1h05m', '12m30s', '45s': an ETA a person reads at a glance."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def final_record(epochs: int, steps: int, stopped_early: bool, last: dict, valid: dict, test: dict) -> dict:
    """What a run ends with, whoever trained it: the last epoch's train/perf figures, then valid and test."""
    return {
        "epochs": epochs,
        "steps": steps,
        "stopped_early": stopped_early,
        **{k: v for k, v in last.items() if k.startswith(("train/", "perf/"))},
        **{f"valid/{k}": v for k, v in valid.items()},
        **{f"test/{k}": v for k, v in test.items()},
    }


def requeue_signal() -> signal.Signals | None:
    """The signal a SLURM job launched by submitit gets before preemption or its time limit (submitit's
    SUBMITIT_PREEMPT_SIGNAL, USR2 by default), when submitit's handler, which requeues the job, is installed."""
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if sig is None or not callable(signal.getsignal(sig)):
        return None
    return sig


@contextmanager
def stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to stop after the current step (under torchrun: after the next log point,
    where all processes decide together) and save a checkpoint; so does a scheduler's warning before preemption
    or the time limit, where a job's requeue handler waits for it (submitit's, under hydra/launcher=slurm).
    Yields {"signal": name of the signal received, or None, "requeue": {signal name: call its requeue handler}}."""
    state, old = {"signal": None, "requeue": {}}, {}

    def handler(signum, frame):
        state["signal"] = signal.Signals(signum).name
        trainer.signal_seen = True

    requeue = requeue_signal()
    if requeue is not None:  # the checkpoint first, then the handler that requeues (its one owner)
        requeues = signal.getsignal(requeue)
        state["requeue"][requeue.name] = partial(requeues, requeue, None)
    for sig in (signal.SIGINT, signal.SIGTERM, *([requeue] if requeue else [])):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. a launcher's worker thread)
            pass
    try:
        yield state
    finally:
        for sig, handler_before in old.items():
            signal.signal(sig, handler_before)
