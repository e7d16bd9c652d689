"""A real SLURM scheduler on this host (scripts/slurm_local.sh, started by the ``slurm_env`` fixture): the node
comes up, runs a two-task step and two 1-CPU batch jobs at once; a sweep through ``hydra/launcher=slurm``
with configs/hydra/launcher/slurm.yaml's defaults gives the basic launcher's results; and (slow) a job gets its
``--signal`` warning and is requeued by ``scontrol requeue``, as submitit does at a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM
from helpers.slurm import slurm_local
from pbexp.rundir import RunDir

pytestmark = pytest.mark.slurm


def run(cmd, slurm_env, timeout=120, **kw):
    return subprocess.run(
        cmd, env={**os.environ, **slurm_env}, capture_output=True, text=True, timeout=timeout, check=True, **kw
    )


def test_node_runs_steps_and_concurrent_batch_jobs(slurm_env, tmp_path):
    # Starting again is a no-op that says so.
    again = slurm_local("start")
    assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    node, cpus = run(["sinfo", "-h", "-N", "-o", "%N %c"], slurm_env).stdout.split()
    assert int(cpus) == os.cpu_count()

    # One job, two tasks (one CPU each), both on this node.
    out = run(["srun", "-n2", "-c1", "--mem=100M", "bash", "-c", "echo $SLURM_PROCID $(hostname -s)"], slurm_env)
    assert sorted(out.stdout.split("\n")[:2]) == [f"0 {node}", f"1 {node}"], out

    # Two 1-CPU batch jobs that each wait for the other: they pass only if both run at once (cons_tres).
    script = tmp_path / "meet.sh"
    script.write_text(
        '#!/bin/bash\ntouch "$1"; for i in $(seq 300); do [ -e "$2" ] && exit 0; sleep 0.2; done; exit 1\n'
    )
    a, b = tmp_path / "a", tmp_path / "b"
    jobs = [
        subprocess.Popen(
            ["sbatch", "--wait", "-n1", "-c1", "--mem=100M", f"--output={tmp_path}/{me.name}.out", script, me, other],
            env={**os.environ, **slurm_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in ((a, b), (b, a))
    ]
    for job in jobs:
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 0, (stdout, stderr)  # sbatch --wait exits with the job's exit code
        assert stdout.startswith("Submitted batch job")


def sweep(tmp_path, data, args, name, env=None):
    out = tmp_path / name
    proc = run_cli(
        ["-m", *TINY_LM, f"dataset.root={data}", "model.hidden_size=8,16", *args, f"hydra.sweep.dir={out}"],
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sweep_through_slurm_equals_basic_launcher(slurm_env, tmp_path, tiny_ptb):
    name = f"pbexp-test-{uuid.uuid4().hex[:8]}"  # to cancel what is left if the sweep fails
    try:
        # The launcher config's own defaults (no GPU, modest CPUs and memory) must fit a GPU-less node.
        args = ["hydra/launcher=slurm", f"hydra.launcher.name={name}"]
        slurm = sweep(tmp_path, tiny_ptb, args, "slurm", env=cli_env(**slurm_env))
    finally:
        subprocess.run(["scancel", f"--name={name}"], env={**os.environ, **slurm_env}, capture_output=True)
    basic = sweep(tmp_path, tiny_ptb, [], "basic")

    # Each job ran as an array task of SLURM (submitit's log of it), then wrote its own results.
    assert len(list((slurm / ".submitit").glob("*_[01]/*_[01]_log.out"))) == 2
    for job in ("0", "1"):
        got, want = RunDir(slurm / job).read_results(), RunDir(basic / job).read_results()
        assert got["status"] == "completed", got
        same = {k: v for k, v in want.items() if isinstance(v, float | int) and not k.startswith(("perf/", "wall"))}
        assert {"test/ppl", "valid/ppl", "train/loss", "steps", "params"} <= set(same)
        assert {k: got[k] for k in same} == pytest.approx(same, rel=1e-6), job

    rep = subprocess.run(
        [sys.executable, "-m", "pbexp.report", slurm, "--table", "generic", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rep.returncode == 0, rep.stderr
    rows = json.loads(rep.stdout)
    assert sorted(r["Run"].rsplit("/", 1)[-1] for r in rows) == ["0", "1"]
    assert all(r["Status"] == "completed" for r in rows)


@pytest.mark.slow
def test_signal_warning_then_requeue(slurm_env, tmp_path):
    """--signal=B:USR1@55 with a 1-minute limit: the warning comes at slurmctld's next time-limit check (it
    runs every 30 s); the script then requeues itself, as submitit's handler does, and its second run ends
    (about 40 s in all)."""
    log = tmp_path / "log"
    script = tmp_path / "job.sh"
    script.write_text(f"""#!/bin/bash
echo "run $SLURM_RESTART_COUNT" >> {log}
trap 'echo USR1 >> {log}; scontrol requeue $SLURM_JOB_ID; exit 0' USR1
[ "${{SLURM_RESTART_COUNT:-0}}" = 0 ] && for i in $(seq 120); do sleep 0.5; done
exit 0
""")
    # No --requeue: submitit does not ask for it either, so JobRequeue=1 must make jobs requeueable.
    sbatch = ["sbatch", "--parsable", "--time=1", "--signal=B:USR1@55", "--output=/dev/null", script]
    job_id = run(sbatch, slurm_env).stdout.strip()
    # Polled here: sbatch --wait polls ever more slowly (30 s apart by then). Past 90 s the requeued job
    # waited for the default cred_expire (120 s), or for the main scheduler's default minute.
    deadline = time.monotonic() + 90
    while (state := job_state(job_id, slurm_env)) not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
        assert time.monotonic() < deadline, f"job {job_id} still {state}; its log: {log.read_text()!r}"
        time.sleep(0.5)
    assert state == "COMPLETED"
    assert log.read_text().split("\n") == ["run ", "USR1", "run 1", ""]


def job_state(job_id, slurm_env):
    """The job's state from slurmctld (there is no accounting here for sacct to ask)."""
    out = run(["scontrol", "show", "job", "-o", job_id], slurm_env).stdout
    return out.split("JobState=", 1)[1].split()[0]
