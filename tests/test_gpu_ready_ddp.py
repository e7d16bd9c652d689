"""Two processes under torchrun (gloo on CPU), as they will run on GPUs (issue 23): a run killed mid-epoch and
rerun gives what an uninterrupted two-process run gives (each rank resumes its own carried hidden state, loss
sums and RNG states), and a stop that only one rank sees (a signal, its max_minutes clock, its validation
numbers, an Optuna pruning) stops both at the same step instead of leaving the other waiting in an all-reduce.

The one-rank cases run torchrun on a small launcher (LAUNCH) that patches rank 1 only, then runs pbexp.train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers.cli import cli_env, free_port
from helpers.configs import TINY_LM
from helpers.data import write_tiny_ptb
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt

CHECKPOINT_EVERY, LOG_EVERY = 7, 5
# Dropout on (each rank's RNG state matters), a mid-epoch checkpoint every 7 steps, 3 epochs of 70 steps.
ARGS = [
    *TINY_LM,
    "model.dropout=0.3",
    "trainer.device=cpu",
    f"trainer.log_every={LOG_EVERY}",
    f"trainer.checkpoint_every={CHECKPOINT_EVERY}",
    "trainer.epochs=3",
]
METRICS = ("train/loss", "train/ppl", "train/tokens", "valid/loss", "valid/ppl", "test/loss", "test/ppl", "steps")
TIMEOUT = 480  # a run that hangs (one rank waiting in a collective) fails here, not after gloo's 30 minutes; runs
# take 20 s on an idle 2-core machine, minutes on a busy one

# PBEXP_TEST_ONLY=<rank>:<what>:<n>: that rank alone gets SIGTERM after step n (signal), has its max_minutes clock
# jump a day ahead after step n (clock), sees its validation get worse every epoch (valid), or is told by the
# Optuna sweep (as its own reading of a shared study could) that the trial is pruned after epoch n (pruned).
LAUNCH = """
import math, os, signal, time

rank, what, at = (os.environ.get("PBEXP_TEST_ONLY") or "-1:none:0").split(":")
if os.environ.get("RANK") == rank:
    from pbexp import search
    from pbexp.training import faults, tasks, trainer

    at, done = int(at), [0]

    def after_step(step, real=faults.after_step):
        done[0] = step
        if what == "signal" and step == at:
            os.kill(os.getpid(), signal.SIGTERM)
        real(step)

    faults.after_step = after_step
    if what == "clock":
        class Clock:
            @staticmethod
            def perf_counter():
                return time.perf_counter() + (86400.0 if done[0] >= at else 0.0)

        trainer.time = Clock
    if what == "valid":
        real_evaluate, calls = tasks.LMTask.evaluate, [0]

        def evaluate(self, model, split, tick=None):
            out = real_evaluate(self, model, split, tick)
            if split == "valid":
                calls[0] += 1
                out = {"loss": out["loss"] + calls[0], "ppl": math.exp(out["loss"] + calls[0])}
            return out

        tasks.LMTask.evaluate = evaluate
    if what == "pruned":
        def reporter():
            def report(epoch, value):
                if epoch >= at:
                    raise search.Pruned(f"trial pruned after epoch {epoch}")

            return report

        search.epoch_reporter_of_this_job = reporter

from pbexp.train import main

main()
"""


def torchrun(args, cwd: Path, only: str = "", **env) -> subprocess.CompletedProcess:
    """torchrun with 2 processes of LAUNCH (``only``: PBEXP_TEST_ONLY); killed with its workers when it hangs."""
    launch = cwd / "launch_pbexp.py"
    launch.write_text(LAUNCH)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(launch),
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=cli_env(OMP_NUM_THREADS="1", PBEXP_TEST_ONLY=only, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # The workers run in sessions of their own (torchrun starts them so): each is killed by its id.
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate()
        pytest.fail(f"the two-process run hung (killed after {TIMEOUT} s): {err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, and by them, ... (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # after "(command)": state, ppid, ...
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def read_records(run_dir):
    return [json.loads(line) for line in RunDir(run_dir).metrics.read_text().splitlines()]


@dataclass
class Reference:
    root: Path
    run_dir: Path
    results: dict
    records: list

    def epoch_end(self, epoch: int) -> int:
        return next(r["step"] for r in self.records if r["epoch"] == epoch)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted two-process run; every case compares against it."""
    tmp = tmp_path_factory.mktemp("ddp_ref")
    root = write_tiny_ptb(tmp / "data" / "ptb").parent
    proc = torchrun([*ARGS, f"dataset.root={root}", f"hydra.run.dir={tmp / 'run'}"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = Reference(root, tmp / "run", RunDir(tmp / "run").read_results(), read_records(tmp / "run"))
    # The valid-numbers case relies on this: rank 0's validation improves in epoch 2 (patience 1 goes on).
    ppl = [r["valid/ppl"] for r in ref.records]
    assert len(ppl) == 3 and ppl[1] < ppl[0], ppl
    return ref


def assert_same_as_reference(ref: Reference, run_dir: Path) -> None:
    results = RunDir(run_dir).read_results()
    assert results["status"] == "completed"
    for key in METRICS:
        assert results[key] == ref.results[key], key
    got = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_records(run_dir)]
    assert got == [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in ref.records]
    for name in ("best", "last"):
        a, b = (ckpt.load(getattr(RunDir(d), name))["model"] for d in (run_dir, ref.run_dir))
        assert all(torch.equal(a[k], b[k]) for k in b), f"{name} checkpoint's weights differ"


def first_log_point_from(step: int) -> int:
    """Where two processes agree on a stop one of them saw after ``step``: the next log point (every
    log_every steps and step 10; the epoch's end is further away here)."""
    return next(s for s in range(step, step + LOG_EVERY + 1) if s % LOG_EVERY == 0 or s == 10)


def test_ddp_run_killed_mid_epoch_and_rerun_equals_an_uninterrupted_one(reference, tmp_path):
    kill_at = reference.epoch_end(1) + 30  # mid-epoch 2, between two checkpoints
    assert kill_at % CHECKPOINT_EVERY
    args = [*ARGS, f"dataset.root={reference.root}", f"hydra.run.dir={tmp_path / 'run'}"]
    killed = torchrun(args, tmp_path, PBEXP_KILL_AT=f"step:{kill_at}")
    assert killed.returncode != 0 and not RunDir(tmp_path / "run").results.exists()
    state = ckpt.load(RunDir(tmp_path / "run").last)
    assert state["step"] == kill_at // CHECKPOINT_EVERY * CHECKPOINT_EVERY  # the kill landed mid-epoch 2
    assert state["batch_in_epoch"] > 0
    resumed = torchrun(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    assert_same_as_reference(reference, tmp_path / "run")


def test_signal_to_one_rank_stops_both_at_the_same_step_and_resumes_exactly(reference, tmp_path):
    signal_at = 12
    args = [*ARGS, f"dataset.root={reference.root}", f"hydra.run.dir={tmp_path / 'run'}"]
    stopped = torchrun(args, tmp_path, only=f"1:signal:{signal_at}")
    assert stopped.returncode != 0
    # Both ranks said so: interrupted (rank 1 by its SIGTERM, rank 0 by rank 1's), after the same step.
    assert stopped.stderr.count("pbexp-train: error: interrupted") == 2, stopped.stderr[-3000:]
    assert ckpt.load(RunDir(tmp_path / "run").last)["step"] == first_log_point_from(signal_at)
    # the printed command resumes with as many processes (a mid-epoch checkpoint holds each one's state)
    assert "Resume with: torchrun --nproc_per_node=2 -m pbexp.train " in stopped.stderr
    resumed = torchrun(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as_reference(reference, tmp_path / "run")


def test_max_minutes_spent_on_one_rank_ends_training_on_both_at_the_same_step(reference, tmp_path):
    jump_at = 12
    run_dir = tmp_path / "run"
    args = [*ARGS, f"dataset.root={reference.root}", f"hydra.run.dir={run_dir}", "trainer.max_minutes=600"]
    proc = torchrun(args, tmp_path, only=f"1:clock:{jump_at}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = RunDir(run_dir).read_results()
    assert results["status"] == "completed" and results["steps"] == first_log_point_from(jump_at)
    assert results["epochs"] == 1 and [r["step"] for r in read_records(run_dir)] == [results["steps"]]


def test_validation_numbers_of_one_rank_do_not_stop_it_alone(reference, tmp_path):
    # Rank 1's validation gets worse every epoch: alone, patience 1 would stop it after epoch 2 while rank 0
    # (improving) goes on, and its plateau schedule would lower its lr alone. Rank 0's numbers decide for both.
    run_dir = tmp_path / "run"
    args = [*ARGS, f"dataset.root={reference.root}", f"hydra.run.dir={run_dir}", "trainer.early_stop_patience=1"]
    proc = torchrun(args, tmp_path, only="1:valid:0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_as_reference(reference, run_dir)  # all 3 epochs, the same lr drops, the same numbers


def test_trial_pruned_as_rank_0_reads_it_stops_both(reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = torchrun([*ARGS, f"dataset.root={reference.root}", f"hydra.run.dir={run_dir}"], tmp_path, only="0:pruned:1")
    assert proc.returncode == 0, proc.stderr[-3000:]  # a pruned trial is no failure, on either rank
    assert RunDir(run_dir).read_results()["status"] == "pruned"
    strip = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in reference.records[:1]]
    assert [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_records(run_dir)] == strip
