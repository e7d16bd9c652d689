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

from pbexp.checks import check_bool, check_choice, check_int, check_number
from pbexp.errors import ConfigError, PbexpError
from pbexp.training.averaging import MODES as AVERAGE_MODES
from pbexp.training.trainer import OPTIMIZERS, SCHEDULES


def _config_dir() -> str:
    """configs/: beside the source tree in a checkout (so a git worktree runs its own configs), else the copy
    a wheel ships as the package pbexp.configs."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if (checkout / "train.yaml").is_file():
        return str(checkout)
    from importlib.resources import files

    return str(files("pbexp.configs"))


CONFIG_DIR = _config_dir()
DEVICES = ("auto", "cpu", "cuda")
AMP = ("none", "bf16", "auto")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key. Checks the trainer and the top level."""
    sizes = cfg.get("sizes")  # an experiment preset's budgets, one entry per preset name
    if sizes is not None and cfg.get("preset") not in sizes:
        raise ConfigError("preset", cfg.get("preset"), f"one of {list(sizes)} (this experiment's sizes)")
    try:
        OmegaConf.to_container(cfg.trainer, resolve=True)
    except InterpolationResolutionError as e:  # e.g. trainer.lr: ${model.recipe.lr} with a model that has none
        raise PbexpError(
            f"trainer.{e.key}: {e.msg.splitlines()[0]}: this model gives no training recipe for "
            f"this task; set trainer.{e.key}=... on the command line"
        ) from None
    t = cfg.trainer
    if str(t.optimizer).lower() not in OPTIMIZERS:  # any case: SGD, Adam
        raise ConfigError("trainer.optimizer", t.optimizer, f"one of {list(OPTIMIZERS)}")
    check_number("trainer.lr", t.lr, low=0, low_open=True)
    check_number("trainer.momentum", t.momentum, low=0, high=1, high_open=True)
    check_number("trainer.weight_decay", t.weight_decay, low=0)
    check_number("trainer.clip", t.clip, low=0, allowed="a number >= 0 (0 turns clipping off)")
    check_choice("trainer.schedule", t.schedule, list(SCHEDULES))
    check_number("trainer.lr_factor", t.lr_factor, low=1, low_open=True, allowed="a number > 1 (lr is divided by it)")
    check_number("trainer.lr_decay", t.lr_decay, low=0, high=1, low_open=True)
    for key in ("batch_size", "bptt", "eval_batch_size", "log_every"):
        check_int(f"trainer.{key}", t[key], low=1)
    for key in ("max_steps", "checkpoint_every", "decay_start", "limit_batches", "num_threads", "early_stop_patience"):
        check_int(f"trainer.{key}", t[key], low=0)
    check_number("trainer.max_minutes", t.max_minutes, low=0, allowed="a number of minutes >= 0 (0: no time limit)")
    unbounded_ok = t.max_steps > 0 or t.max_minutes > 0
    check_int(
        "trainer.epochs",
        t.epochs,
        low=0 if unbounded_ok else 1,
        allowed="an integer >= 1, or 0 (no epoch limit) together with trainer.max_steps or trainer.max_minutes > 0",
    )
    if t.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(t.device)):
        raise ConfigError("trainer.device", t.device, f"one of {list(DEVICES)} or cuda:<n>")
    check_choice("trainer.amp", t.amp, AMP)
    check_choice("trainer.average", t.average, AVERAGE_MODES)
    check_int("trainer.average_from", t.average_from, low=1)
    check_int("trainer.average_nonmono", t.average_nonmono, low=1)
    check_bool("trainer.compile", t.compile)
    check_bool("trainer.deterministic", t.deterministic)
    if t.init_from is not None and not Path(str(t.init_from)).exists():
        raise ConfigError("trainer.init_from", t.init_from, "a run dir or a .pt checkpoint that exists")
    check_int("seed", cfg.seed, low=None)


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
