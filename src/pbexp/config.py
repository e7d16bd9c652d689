"""Config checks that run before anything is built, and instantiation that keeps user errors clean.

Hydra's struct mode already rejects unknown keys (``trainer.lrr=1``) and unknown group options
(``model=foo``); this module checks the values. Model-specific checks live in each model's
constructor (they know their own sizes), data checks in the data modules.
"""

from __future__ import annotations

import re
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from pbexp.errors import ConfigError, PbexpError
from pbexp.training.trainer import OPTIMIZERS, SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
AMP = ("none", "bf16")


def _positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(key, value, "a positive integer")


def _number(key: str, value, low=None, high=None, low_open=False, high_open=False, what="") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, what or "a number")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(key, value, what)
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(key, value, what)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key. Checks the trainer and the top level."""
    sizes = cfg.get("sizes")  # an experiment preset's budgets, one entry per preset name
    if sizes is not None and cfg.get("preset") not in sizes:
        raise ConfigError("preset", cfg.get("preset"), f"one of {list(sizes)} (this experiment's sizes)")
    try:
        OmegaConf.to_container(cfg.trainer, resolve=True)
    except InterpolationResolutionError as e:  # e.g. trainer.lr: ${model.recipe.lr} with a model that has none
        raise PbexpError(f"trainer.{e.key}: {e.msg.splitlines()[0]}: this model gives no training recipe for "
                         f"this task; set trainer.{e.key}=... on the command line") from None
    t = cfg.trainer
    if str(t.optimizer).lower() not in OPTIMIZERS:
        raise ConfigError("trainer.optimizer", t.optimizer, f"one of {list(OPTIMIZERS)}")
    _number("trainer.lr", t.lr, low=0, low_open=True, what="a number > 0")
    _number("trainer.momentum", t.momentum, low=0, high=1, high_open=True, what="a number in [0, 1)")
    _number("trainer.weight_decay", t.weight_decay, low=0, what="a number >= 0")
    _number("trainer.clip", t.clip, low=0, what="a number >= 0 (0 turns clipping off)")
    if t.schedule not in SCHEDULES:
        raise ConfigError("trainer.schedule", t.schedule, f"one of {list(SCHEDULES)}")
    _number("trainer.lr_factor", t.lr_factor, low=1, low_open=True, what="a number > 1 (lr is divided by it)")
    _number("trainer.lr_decay", t.lr_decay, low=0, high=1, low_open=True, what="a number in (0, 1]")
    for key in ("batch_size", "bptt", "eval_batch_size", "log_every"):
        _positive_int(f"trainer.{key}", t[key])
    for key in ("max_steps", "checkpoint_every", "decay_start", "limit_batches", "num_threads", "early_stop_patience"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 0:
            raise ConfigError(f"trainer.{key}", t[key], "an integer >= 0")
    _number("trainer.max_minutes", t.max_minutes, low=0, what="a number of minutes >= 0 (0: no time limit)")
    unbounded_ok = t.max_steps > 0 or t.max_minutes > 0
    if not isinstance(t.epochs, int) or isinstance(t.epochs, bool) or t.epochs < (0 if unbounded_ok else 1):
        raise ConfigError("trainer.epochs", t.epochs, "an integer >= 1, or 0 (no epoch limit) together with "
                                                      "trainer.max_steps or trainer.max_minutes > 0")
    if t.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(t.device)):
        raise ConfigError("trainer.device", t.device, f"one of {list(DEVICES)} or cuda:<n>")
    if t.amp not in AMP:
        raise ConfigError("trainer.amp", t.amp, f"one of {list(AMP)}")
    if not isinstance(t.compile, bool):
        raise ConfigError("trainer.compile", t.compile, "true or false")
    if t.init_from is not None and not Path(str(t.init_from)).exists():
        raise ConfigError("trainer.init_from", t.init_from, "a run dir or a .pt checkpoint that exists")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError("seed", cfg.seed, "an integer")


def instantiate(node, **kwargs):
    """hydra.utils.instantiate, but a PbexpError raised inside a constructor comes out as itself
    (Hydra wraps it in InstantiationException, which would show as a traceback)."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, PbexpError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        if isinstance(e.__cause__, MemoryError) or "can't allocate memory" in str(e.__cause__):
            raise e.__cause__ from None  # out of memory while building: train.py words it for the user
        if isinstance(e.__cause__, TypeError) and "argument" in str(e.__cause__):
            raise PbexpError(f"bad model/dataset key: {e.__cause__}") from None
        raise
