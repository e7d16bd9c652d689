"""A one-node SLURM cluster on this host (scripts/slurm_local.sh), started once for a test session and shared
by every pytest-xdist worker: a file lock serialises start and stop, and a file per process using it tells
the last one out to stop it (only if the tests started it: a cluster started by hand is left running)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.configs import REPO

SCRIPT = REPO / "scripts" / "slurm_local.sh"
DIR = Path(os.environ.get("PBEXP_SLURM_DIR") or "/tmp/pbexp-slurm")  # the script's own default
PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"  # the daemons are in sbin
# The commands the cluster needs, and the Debian package each comes from.
COMMANDS = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client"}


def missing_packages() -> list[str]:
    return sorted({pkg for cmd, pkg in COMMANDS.items() if shutil.which(cmd, path=PATH) is None})


def slurm_local(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``scripts/slurm_local.sh <args>``."""
    env = {**os.environ, "PATH": PATH, "PBEXP_SLURM_DIR": str(DIR)}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _locked():
    with open(DIR.with_name(DIR.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def slurm_cluster():
    """Start the cluster unless it runs; yield the environment a client needs (SLURM_CONF, PATH) to add to a
    subprocess's. Skips where SLURM's packages are missing or we are not root; fails where they are there but
    the cluster does not come up."""
    missing = missing_packages()
    if missing:
        pytest.skip(f"SLURM is not installed: apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (scripts/slurm_local.sh)")
    users = DIR.with_name(DIR.name + ".users")
    me = users / str(os.getpid())
    with _locked():
        users.mkdir(exist_ok=True)
        if slurm_local("status").returncode != 0:
            proc = slurm_local("start")
            if proc.returncode != 0:
                pytest.fail(f"scripts/slurm_local.sh start failed: {proc.stderr.strip() or proc.stdout.strip()}")
            (users / "started").touch()
        me.touch()
    try:
        yield {"SLURM_CONF": str(DIR / "slurm.conf"), "PATH": PATH}
    finally:
        with _locked():
            me.unlink(missing_ok=True)
            others = [p for p in users.glob("[0-9]*") if _alive(int(p.name))]  # a crashed worker holds nothing
            if not others and (users / "started").exists():
                slurm_local("stop")
                (users / "started").unlink()
