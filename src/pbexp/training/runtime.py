"""Where and how a run computes: the process group, the device, threads and seeds, set up once per run."""

from __future__ import annotations

import random

import numpy as np
import torch
from omegaconf import DictConfig

from pbexp.errors import ConfigError, PbexpError
from pbexp.training import distributed


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PbexpError(f"trainer.device={name} but no CUDA device is available; use trainer.device=cpu or auto")
    if name.startswith("cuda:") and not int(name.split(":")[1]) < torch.cuda.device_count():
        raise ConfigError(
            "trainer.device", name, f"cuda:0 ... cuda:{torch.cuda.device_count() - 1} (this machine's GPUs)"
        )
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def setup(trainer_cfg: DictConfig, seed: int) -> tuple[distributed.World, torch.device]:
    """The process group (torchrun's, or one process), this process's device, its threads and seeds."""
    world = distributed.from_env()
    if trainer_cfg.batch_size % world.world_size:
        raise ConfigError(
            "trainer.batch_size",
            trainer_cfg.batch_size,
            f"a multiple of the number of processes ({world.world_size}); it is the global batch",
        )
    device = distributed.init(world, pick_device(trainer_cfg.device))
    if trainer_cfg.num_threads:
        torch.set_num_threads(trainer_cfg.num_threads)
    seed_everything(seed, trainer_cfg.deterministic)
    return world, device
