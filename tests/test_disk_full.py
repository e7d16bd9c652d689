"""A full disk during a checkpoint (issue 23): one line naming the folder and the space needed, a non-zero
exit, every file already written intact, and the same command resuming once space is freed.

For real on a small tmpfs (needs root and mount permission; skipped otherwise), and everywhere by an ENOSPC
injected at the checkpoint write (faults.py's PBEXP_DISK_FULL_AT)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM
from helpers.data import write_tiny_ptb
from pbexp.cli import EXIT_USER_ERROR
from pbexp.errors import DiskFull, PbexpError
from pbexp.files import write_atomic
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt

METRICS = ("train/loss", "train/ppl", "valid/loss", "valid/ppl", "test/loss", "test/ppl", "steps", "epochs")
CHECKPOINT_EVERY = 7
# Hidden size 128 makes the best weights ~300 kB: half of that left free on the tmpfs holds the few small
# writes a resumed run makes before them (vocab, epoch records, an event file, log lines), but not them.
ARGS = [
    *(a for a in TINY_LM if not a.startswith("model.hidden_size=")),
    "model.hidden_size=128",
    f"trainer.checkpoint_every={CHECKPOINT_EVERY}",
]
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


@dataclass
class Reference:
    root: Path  # the data root
    results: dict
    best_size: int  # bytes of the best weights' file
    saved_before_end: int  # the step of the last resume checkpoint inside the last epoch


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, on an ordinary disk."""
    tmp = tmp_path_factory.mktemp("ref")
    root = write_tiny_ptb(tmp / "data" / "ptb").parent
    proc = run_cli([*ARGS, f"dataset.root={root}", f"hydra.run.dir={tmp / 'run'}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = RunDir(tmp / "run")
    records = run.read_metrics()
    # The write the full disk stops is the best weights at the last epoch's end: that epoch must improve,
    # and have a resume checkpoint inside it to come back to.
    assert records[-1]["valid/ppl"] < min(r["valid/ppl"] for r in records[:-1]), records
    inside = [s for s in range(records[-2]["step"] + 1, records[-1]["step"]) if s % CHECKPOINT_EVERY == 0]
    assert inside, records
    return Reference(root, run.read_results(), run.best.stat().st_size, max(inside))


def mount_tmpfs(folder: Path, size: str) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the real full-disk case needs a small tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if proc.returncode:
        reason = proc.stderr.decode(errors="replace").strip()
        pytest.skip(f"cannot mount a tmpfs here (root and mount permission needed): {reason}")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount_tmpfs(disk, "16m")
    yield disk
    if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # still busy: detach it


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free (a tmpfs counts whole pages)."""
    ballast = disk / "ballast"
    ballast.write_bytes(bytes(shutil.disk_usage(disk).free - leave))
    assert abs(shutil.disk_usage(disk).free - leave) <= 2 * os.sysconf("SC_PAGE_SIZE")
    return ballast


def needed_bytes(line: str) -> float:
    """The space the error line says the write needs, in bytes."""
    found = re.search(r"needs (?:about |more than )?([\d.]+) (B|kB|MB|GB)", line)
    assert found, line
    return float(found.group(1)) * UNITS[found.group(2)]


def snapshot(run: RunDir) -> dict[Path, bytes]:
    """Every file in the run dir (but the lock, which holds the pid of the process using it)."""
    return {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p != run.lock}


@pytest.mark.parametrize("how", ["tmpfs", "injected-enospc"])
def test_a_checkpoint_into_a_full_disk_is_one_line_loses_nothing_and_resumes(reference, tmp_path, how, request):
    disk = request.getfixturevalue("small_disk") if how == "tmpfs" else tmp_path
    run = RunDir(disk / "run")
    args = [*ARGS, f"dataset.root={reference.root}", f"hydra.run.dir={run.path}"]

    # A run that stopped (SIGKILL) just after the last resume checkpoint before the last epoch's end.
    killed = run_cli(args, cwd=tmp_path, env=cli_env(PBEXP_KILL_AT=f"step:{reference.saved_before_end + 1}"))
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert ckpt.load(run.last)["step"] == reference.saved_before_end
    before = snapshot(run)

    # Rerun with the disk full at its first checkpoint write: the best weights at the epoch's end.
    if how == "tmpfs":
        ballast = fill(disk, leave=reference.best_size // 2)
        env = cli_env()
    else:
        env = cli_env(PBEXP_DISK_FULL_AT="checkpoint:1")
    full = run_cli(args, cwd=tmp_path, env=env)
    assert full.returncode == EXIT_USER_ERROR, full.stderr[-3000:]
    assert "Traceback" not in full.stderr + full.stdout, full.stderr[-3000:]
    lines = full.stderr.splitlines()
    assert len(lines) == 1, full.stderr
    line = lines[0]
    assert f"in {run.checkpoints} " in line and "disk full" in line
    # The size of the file it would have replaced (tmpfs), or what it wrote in whole (injected): either is
    # the best weights' size, as the uninterrupted run wrote them; the line rounds to 0.1 of its unit.
    assert abs(needed_bytes(line) - reference.best_size) <= 0.05 * 1e3, line
    assert line.endswith(f"hydra.run.dir={run.path}")  # the command that continues the run

    # Nothing lost: every checkpoint byte for byte, the other files only grown, no temp file left.
    after = snapshot(run)
    for path, content in before.items():
        if path.parent == run.checkpoints:
            assert after.get(path) == content, path
        else:
            assert after[path].startswith(content), path
    assert not list(run.checkpoints.glob("*.tmp"))
    assert ckpt.load_latest(run.last)["step"] == reference.saved_before_end
    assert run.read_results()["status"] == "failed"  # no earlier result to keep; a rerun is not stopped by it

    # Space freed: the same command resumes from that checkpoint and ends as the uninterrupted run did.
    if how == "tmpfs":
        ballast.unlink()
    resumed = run_cli(args, cwd=tmp_path, env=cli_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {reference.saved_before_end}" in resumed.stdout
    results = run.read_results()
    assert {k: results[k] for k in METRICS} == {k: reference.results[k] for k in METRICS}


def test_write_atomic_into_a_full_disk_names_the_folder_and_the_size_and_keeps_the_old_file(small_disk):
    target = small_disk / "out" / "record.json"
    write_atomic(target, b"old")
    fill(small_disk, leave=8192)
    content = bytes(100_000)
    with pytest.raises(DiskFull) as caught:
        write_atomic(target, content)
    message = str(caught.value)
    assert isinstance(caught.value, PbexpError) and isinstance(caught.value, OSError)  # one line; a cache carries on
    assert caught.value.errno == errno.ENOSPC and caught.value.folder == target.parent
    assert f"in {target.parent} " in message and "\n" not in message
    assert needed_bytes(message) == pytest.approx(len(content), abs=50)  # the content given: known exactly
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == [target.name]


def test_a_torch_save_that_fills_the_disk_is_disk_full_and_gives_the_space_back(small_disk):
    # torch.save reports a full disk as a RuntimeError and holds its file open in its frames: the space of
    # the removed temp file must be free again when the error reaches the caller.
    fill(small_disk, leave=200_000)
    free = shutil.disk_usage(small_disk).free
    with pytest.raises(DiskFull) as caught:
        write_atomic(small_disk / "weights.pt", lambda tmp: torch.save(torch.zeros(100_000), tmp))  # 400 kB
    assert "what it had written when the disk filled up" in str(caught.value)
    assert needed_bytes(str(caught.value)) == pytest.approx(free, rel=0.05)  # it wrote until nothing was left
    assert shutil.disk_usage(small_disk).free == free
    assert sorted(os.listdir(small_disk)) == ["ballast"]


def quota_exceeded(tmp):
    raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def a_bug(tmp):
    raise RuntimeError("a bug in the writer")


def test_a_quota_is_disk_full_and_a_writer_bug_on_a_disk_with_space_stays_itself(tmp_path):
    with pytest.raises(DiskFull, match="raise your quota"):
        write_atomic(tmp_path / "a.pt", quota_exceeded)
    with pytest.raises(RuntimeError, match="a bug in the writer") as caught:
        write_atomic(tmp_path / "a.pt", a_bug)
    assert not isinstance(caught.value, PbexpError)  # a bug keeps its traceback
    assert os.listdir(tmp_path) == []
