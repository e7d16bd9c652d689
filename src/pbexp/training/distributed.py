"""Data parallelism through ``torchrun`` or SLURM's tasks: nothing to configure, the launcher's environment decides.

``torchrun --nproc_per_node=N -m pbexp.train ...`` starts N copies (so does ``srun -n N pbexp-train ...``, or a
job of ``hydra/launcher=slurm`` with ``tasks_per_node=N``: SLURM's task numbers, the first node of the step as
the rendezvous); each joins one process group
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
    """The process's place, from torchrun's environment variables, else from SLURM's in a step of several tasks
    (srun), else a single process."""
    env = os.environ
    if "RANK" not in env and int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        node = int(env.get("SLURM_NODEID", 0))
        return World(
            int(env["SLURM_PROCID"]),
            int(env["SLURM_STEP_NUM_TASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
            slurm_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", "1"))[node],
        )
    local_rank = int(env.get("LOCAL_RANK", 0))
    # torchrun sets LOCAL_WORLD_SIZE; another launcher may not: then at least this process's local rank + 1
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", local_rank + 1))
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), local_rank, local_world_size)


def slurm_tasks_per_node(spec: str) -> list[int]:
    """SLURM's compact per-node task counts, one entry per node: '2(x3),1' -> [2, 2, 2, 1]."""
    counts = []
    for part in spec.split(","):
        n, _, times = part.partition("(x")
        counts += [int(n)] * int(times.rstrip(")") or 1)
    return counts


def check_slurm_tasks(world: World, asked: int | None) -> None:
    """In a SLURM job: refuse, in one line, a process that would train alone (or wait forever for others) where
    the job has another number of tasks than this process is part of, or than the launcher's config asked."""
    env = os.environ
    if "SLURM_JOB_ID" not in env or "RANK" in env:  # not SLURM's, or torchrun's own numbering
        return
    tasks = int(env.get("SLURM_NTASKS", 1))
    if "SLURM_STEP_NUM_TASKS" not in env and tasks > 1:  # the batch script itself, outside srun
        raise PbexpError(
            f"this SLURM job has {tasks} tasks (SLURM_NTASKS) but this process runs outside srun, alone: start it "
            f"with `srun pbexp-train ...` to train over the {tasks} tasks, or ask for --ntasks=1"
        )
    if asked is not None and asked != world.world_size:
        raise ConfigError(
            "hydra.launcher.tasks_per_node",
            f"{asked} task(s) in all",
            f"what SLURM started for this job: {world.world_size} task(s) (SLURM_STEP_NUM_TASKS); "
            "make the launcher's nodes x tasks_per_node and the job's tasks agree",
        )


def _slurm_rendezvous() -> None:
    """MASTER_ADDR / MASTER_PORT for a SLURM step's tasks (torchrun sets its own): the step's first node, and a
    port from the job id, so that two jobs on one node do not meet."""
    import subprocess

    env = os.environ
    if "MASTER_ADDR" not in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "localhost")
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=False)
        env["MASTER_ADDR"] = (out.stdout.split() or [nodes])[0]
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000))


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group; on CUDA each process takes the GPU of its local rank."""
    if not world.distributed:
        return device
    if "RANK" not in os.environ:  # SLURM's tasks, not torchrun's processes
        _slurm_rendezvous()
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
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.world_size)
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
    """Leave the process group together: a process that tears gloo down while another still talks to it can
    abort at exit ("terminate called without an active exception"; 4 of 16 runs of the two-process tests)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - another process already failed: nothing to wait for
            pass
        dist.destroy_process_group()
