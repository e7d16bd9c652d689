"""Data parallelism through ``torchrun``: nothing to configure, the launcher's environment decides.

``torchrun --nproc_per_node=N -m pbexp.train ...`` starts N copies; each joins one process group
(``gloo`` on CPU, ``nccl`` on GPUs), takes its share of every batch (tasks.py), and averages
gradients through DistributedDataParallel. Only rank 0 logs, checkpoints and writes results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env() -> World:
    """The process's place, from torchrun's environment variables (a single process without them)."""
    return World(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group; on CUDA each process takes the GPU of its local rank."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all processes (itself when there is one)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written the checkpoint the others will read)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
