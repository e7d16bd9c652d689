"""Runs that survive: SIGKILL at several points, rerun the same command, get the same results."""

import json
import random

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_LM, cli_env, run_cli

METRICS = ("train/loss", "train/ppl", "valid/loss", "valid/ppl", "test/loss", "test/ppl", "steps", "epochs")
# Dropout on, a checkpoint every 7 steps (mid-epoch; an epoch here is ~24 steps), 3 epochs.
ARGS = [*TINY_LM, "model.dropout=0.3", "trainer.checkpoint_every=7", "trainer.epochs=3"]


def run(args, tmp_path, run_dir, **env):
    return run_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(**env))


def tb_steps(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (module-scoped: every kill case compares against it)."""
    from conftest import write_tiny_ptb
    tmp = tmp_path_factory.mktemp("ref")
    root = write_tiny_ptb(tmp / "data" / "ptb").parent
    proc = run([*ARGS, f"dataset.root={root}"], tmp, tmp / "run")
    assert proc.returncode == 0, proc.stderr
    return root, json.loads((tmp / "run" / "results.json").read_text()), tb_steps(tmp / "run" / "tb")


# A random mid-epoch step (seeded, so a failure reproduces), epoch boundaries, and checkpoint writes.
_rng = random.Random(2026)
# The fast suite keeps one mid-epoch kill and one kill inside a checkpoint write; the rest are slow.
slow = pytest.mark.slow
KILLS = [f"step:{_rng.randint(2, 20)}", "checkpoint:3",
         pytest.param(f"step:{_rng.randint(26, 45)}", marks=slow), pytest.param("step:7", marks=slow),
         pytest.param("step:24", marks=slow), pytest.param("checkpoint:1", marks=slow),
         pytest.param("checkpoint:5", marks=slow)]


@pytest.mark.parametrize("kill", KILLS)
def test_sigkill_then_rerun_gives_identical_results(reference, tmp_path, kill):
    root, ref_results, ref_steps = reference
    args = [*ARGS, f"dataset.root={root}"]
    killed = run(args, tmp_path, tmp_path / "run", PBEXP_KILL_AT=kill)
    assert killed.returncode == -9, killed.stderr[-1000:]
    assert not (tmp_path / "run" / "results.json").exists()
    resumed = run(args, tmp_path, tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in METRICS:
        assert results[key] == ref_results[key], key
    steps = tb_steps(tmp_path / "run" / "tb")
    for tag in ("valid/ppl", "test/ppl", "perf/epoch_s", "opt/lr"):
        assert len(steps[tag]) == len(set(steps[tag])), f"{tag} has a step twice: {steps[tag]}"
    assert steps["valid/ppl"] == ref_steps["valid/ppl"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_completed_run_rerun_does_nothing(reference, tmp_path):
    root, _, _ = reference
    args = [*ARGS, "trainer.epochs=1", f"dataset.root={root}"]
    assert run(args, tmp_path, tmp_path / "run").returncode == 0
    before = (tmp_path / "run" / "results.json").read_bytes()
    again = run(args, tmp_path, tmp_path / "run")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert (tmp_path / "run" / "results.json").read_bytes() == before


@pytest.mark.slow
def test_corrupt_last_checkpoint_falls_back_to_previous(reference, tmp_path):
    root, ref_results, _ = reference
    args = [*ARGS, f"dataset.root={root}"]
    assert run(args, tmp_path, tmp_path / "run", PBEXP_KILL_AT="step:30").returncode == -9
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated
    resumed = run(args, tmp_path, tmp_path / "run")
    assert resumed.returncode == 0 and "unreadable" in resumed.stdout + resumed.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test/ppl"] == ref_results["test/ppl"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_prints_the_resume_command(reference, tmp_path, sig):
    import signal
    import subprocess
    import sys
    import time
    root, ref_results, _ = reference
    run_dir = tmp_path / "run"
    args = [*ARGS, f"dataset.root={root}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "pbexp.train", *args], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists():  # wait until training is under way (epoch 1 done)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err[-2000:]
    assert "Resume with: pbexp-train" in err and f"hydra.run.dir={run_dir}" in err
    assert (run_dir / "checkpoints" / "last.pt").exists() and not (run_dir / "results.json").exists()
    resumed = run(args[:-1], tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    for key in METRICS:
        assert results[key] == ref_results[key], key
