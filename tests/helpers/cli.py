"""Running the real command line in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def cli_env(**extra) -> dict:
    """This process's environment without the data mirror (a run must find its data where it is told) and
    without HYDRA_FULL_ERROR, plus ``extra``. A run sees GPUs only where this process does: only in a test
    marked ``cuda`` (tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PBEXP_DATA_MIRROR", "HYDRA_FULL_ERROR")}
    if not torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def free_port() -> int:
    """A free TCP port on localhost (for torchrun's rendezvous, the TensorBoard server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args, cwd: Path, env=None, timeout: float = 240, module: str = "pbexp.train"):
    """Run ``python -m pbexp.train <args>`` for real; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def main_in_process(args) -> int:
    """``pbexp-train <args>`` in this process (where a test patches pbexp); its exit code."""
    from pbexp.train import main

    old = sys.argv
    sys.argv = ["pbexp-train", *args]
    try:
        main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
