"""Where and how a run computes: the process group, the device, threads and seeds, set up once per run."""

from __future__ import annotations

import os
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


# cuBLAS (every matmul, and cuDNN's RNNs) is deterministic only with a fixed workspace; it reads this when it
# starts, and PyTorch's deterministic mode refuses cuBLAS calls without it.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Not warn_only: an op without a deterministic kernel must stop a run that asked for determinism, not
    # leave a warning in a log. (PyTorch's list of such ops names none that the models use.)
    torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def check_backend(model_cfg: DictConfig, world: distributed.World, device: torch.device) -> None:
    """NCCL (several processes on GPUs) all-reduces dense gradients only; gloo (on CPUs) takes sparse ones too."""
    if world.distributed and device.type == "cuda" and model_cfg.get("sparse"):
        raise ConfigError(
            "model.sparse",
            model_cfg.sparse,
            f"false when {world.world_size} processes train on GPUs (NCCL all-reduces dense gradients only; "
            "one GPU, or CPU processes with gloo, take sparse ones)",
        )


def setup(trainer_cfg: DictConfig, seed: int, slurm_tasks: int | None = None) -> tuple[distributed.World, torch.device]:
    """The process group (torchrun's, SLURM's tasks, or one process), this process's device, its threads and
    seeds. ``slurm_tasks``: the tasks hydra/launcher=slurm asked for this job, checked against SLURM's."""
    if trainer_cfg.deterministic:  # before anything asks CUDA about its devices (pick_device does)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    world = distributed.from_env()
    distributed.check_slurm_tasks(world, slurm_tasks)  # before the process group: a wrong count would wait there
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
