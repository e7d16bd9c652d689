"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``.

A corrupt or truncated resume checkpoint is not fatal: the previous good one is kept beside it as
``<name>.prev.pt`` and read instead, with a warning. When neither loads, the run stops with an error and
touches nothing.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from pbexp.errors import ConfigError, DataError
from pbexp.files import write_atomic
from pbexp.rundir import RunDir
from pbexp.training import faults

log = logging.getLogger(__name__)


def save_atomic(obj, path: str | Path) -> None:
    def save(tmp: str) -> None:
        torch.save(obj, tmp)
        faults.during_checkpoint()  # the resume tests kill the process here: temp written, not renamed

    write_atomic(path, save)


def save_rotating(obj, path: str | Path) -> None:
    """Save ``path``, keeping the previous version as ``<stem>.prev.pt`` to fall back on."""
    path = Path(path)
    if path.exists():
        os.replace(path, path.with_suffix(".prev.pt"))
    save_atomic(obj, path)


def load(path: str | Path, map_location="cpu"):
    return torch.load(path, map_location=map_location, weights_only=True)


def unreadable_reason(e: Exception) -> str:
    """Why a checkpoint did not load, in one line, without torch's advice to retry with weights_only=False
    (that would run whatever code a crafted file holds)."""
    if isinstance(e, pickle.UnpicklingError):
        return "it holds pickled objects other than tensors and plain values, which are never loaded"
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def load_latest(path: str | Path, map_location="cpu"):
    """``path`` or, if it is missing or unreadable, its ``.prev.pt``; None when neither exists. When some
    exist but none loads, DataError: starting over would silently throw the run's progress away."""
    path = Path(path)
    tried = []
    for candidate in (path, path.with_suffix(".prev.pt")):
        if not candidate.exists():
            continue
        try:
            return load(candidate, map_location)
        except Exception as e:  # truncated zip, bad pickle: fall back to the older file
            tried.append(f"{candidate.name}: {unreadable_reason(e)}")
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", candidate, unreadable_reason(e))
    if tried:
        raise DataError(
            f"no readable checkpoint in {path.parent} ({'; '.join(tried)}); nothing was changed. "
            f"Move that folder away to start the run over"
        )
    return None


def on_cpu(obj):
    """``obj`` with every tensor in it (through dicts, lists, tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def rng_state() -> dict:
    """RNG states of python, numpy and torch as plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() saved. torch takes the states only as CPU ByteTensors, wherever a load put them;
    CUDA's only for the GPUs this machine has (a checkpoint from a machine with more carries more)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def weights_of(source: str | Path) -> tuple[dict, Path]:
    """The model weights in a run dir (its best checkpoint, else its last) or in a .pt file, and the file
    they came from: for warm starts and evaluation."""
    source = Path(source)
    path = RunDir(source).weights() if source.is_dir() else source if source.is_file() else None
    if path is None:
        raise DataError(f"{source}: no checkpoint there (expected a run dir with checkpoints, or a .pt file)")
    try:
        state = load(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable checkpoint ({unreadable_reason(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise DataError(f"{path}: not a pbexp checkpoint (no model weights in it)")
    return state["model"], path


def warm_start(model: torch.nn.Module, source: str | Path) -> None:
    """trainer.init_from: copy another run's weights into this model (same shapes), not its optimiser."""
    weights, path = weights_of(source)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(
            "trainer.init_from",
            source,
            f"a checkpoint of a model with this run's shapes ({str(e).splitlines()[0][:160]})",
        ) from None
    log.info("warm start: weights from %s", path)
