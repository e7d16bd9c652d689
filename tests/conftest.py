"""Fixtures and hooks only; the code tests share lives in helpers/ (``from helpers.data import ...``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP threads
# spinning against other processes make them many times slower: one thread here and in every
# subprocess the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.configs import TINY_LM, compose_cfg  # noqa: E402
from helpers.data import write_tiny_ptb  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_ptb(tmp_path) -> Path:
    """A data root holding ptb/ptb.*.txt."""
    write_tiny_ptb(tmp_path / "data" / "ptb")
    return tmp_path / "data"


@pytest.fixture
def tiny_lm_cfg(tiny_ptb):
    return compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}"])


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request, monkeypatch):
    """On a GPU machine the fast suite stays the CPU suite (its reference numbers are CPU numbers; TF32 alone
    breaks their 1e-6): a test not marked ``cuda`` sees no GPU, so trainer.device=auto resolves to the CPU in
    this process, and helpers.cli.cli_env hides the GPUs from the runs it starts."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """A test that runs Hydra in-process leaves root handlers bound to that test's captured stdout; once it is
    closed, every later log line turns into a 'Logging error' on stderr. Remove what each test added."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture(scope="session")
def slurm_env():
    """A one-node SLURM cluster on this host (scripts/slurm_local.sh), once per session: the environment
    (SLURM_CONF, PATH) to add to a client's. Skips where SLURM is not installed (tests/helpers/slurm.py)."""
    from helpers.slurm import slurm_cluster

    with slurm_cluster() as env:
        yield env
