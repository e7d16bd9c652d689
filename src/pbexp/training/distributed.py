"""Data parallelism through ``torchrun``: nothing to configure, the launcher's environment decides.

``torchrun --nproc_per_node=N -m pbexp.train ...`` starts N copies; each joins one process group
(``gloo`` on CPU, ``nccl`` on GPUs), takes its share of every batch (tasks.py), and averages
gradients through DistributedDataParallel. Only rank 0 logs, checkpoints and writes results; what differs
between processes (each one's carried state, loss sums, RNG states) is gathered into rank 0's checkpoint, and
what one process alone may see (a signal, its clock, its reading of an Optuna study) becomes one decision for
all (trainer.py), so that no process waits forever in a collective the others have left.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pbexp.errors import ConfigError, PbexpError


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env() -> World:
    """The process's place, from torchrun's environment variables (a single process without them)."""
    env = os.environ
    local_rank = int(env.get("LOCAL_RANK", 0))
    # torchrun sets LOCAL_WORLD_SIZE; another launcher may not: then at least this process's local rank + 1
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", local_rank + 1))
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), local_rank, local_world_size)


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group; on CUDA each process takes the GPU of its local rank."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                "trainer.device",
                str(device),
                "cuda or auto under torchrun: each process takes the GPU of its local rank",
            )
        gpus = torch.cuda.device_count()
        # Every process checks the whole machine, so all of them stop here, none waiting for the others in
        # init_process_group (NCCL cannot put two processes on one GPU, so there is no sharing to fall back on).
        if world.local_world_size > gpus:
            raise PbexpError(
                f"torchrun started {world.local_world_size} processes on this machine, which has {gpus} GPU(s): "
                f"use torchrun --nproc_per_node={gpus}, or trainer.device=cpu"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _joined() else 0


def world_size() -> int:
    return dist.get_world_size() if _joined() else 1


def gather_to_main(obj) -> list | None:
    """Every process's ``obj``, by rank, on rank 0 (None on the others); ``[obj]`` for one process. Every process
    must call it. Tensors in ``obj`` should be on the CPU: unpickled on rank 0, a CUDA one would land on the
    sender's GPU index."""
    if not _joined():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def from_main(obj):
    """Rank 0's ``obj`` on every process (``obj`` itself for one process). Every process must call it."""
    if not _joined():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(fn, *args) -> None:
    """``fn(*args)`` on rank 0 only (``fn`` None: nothing); an exception it raises is raised on every process,
    so that all stop together (e.g. an Optuna trial pruned as rank 0 read the study). Every process must call it."""
    if not _joined():
        if fn is not None:
            fn(*args)
        return
    error = None
    if dist.get_rank() == 0 and fn is not None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - sent to the others, then raised here as well
            error = e
    box = [_portable(error)]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        raise box[0]


def _portable(error: Exception | None) -> Exception | None:
    """``error`` if the other processes can unpickle it, else its words in a PbexpError (a user error stays one)
    or a RuntimeError: an exception whose constructor takes other arguments than its message does not unpickle,
    and a process failing there would leave rank 0 alone."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - whatever stops the round trip
        return (PbexpError if isinstance(error, PbexpError) else RuntimeError)(f"{error} (on rank 0)")


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all processes (itself when there is one)."""
    if _joined():
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written the checkpoint the others will read)."""
    if _joined():
        dist.barrier()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
