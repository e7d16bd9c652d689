"""Training inside SLURM jobs (issue 24, items 3 and 4), against the local scheduler (scripts/slurm_local.sh,
the ``slurm_env`` fixture): a job of ``hydra/launcher=slurm`` with ``tasks_per_node=2`` is one training over two
processes and equals torchrun's two; a batch script with two tasks that runs pbexp outside srun is one line, not
a hang; a job warned of preemption (submitit's SIGUSR2) checkpoints, is requeued by submitit alone, and the
requeued job ends exactly as an uninterrupted run. SLURM's variables are also read without a scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from helpers.cli import cli_env, free_port, run_cli
from helpers.configs import TINY_LM, search_yaml
from hydra_plugins.pbexp_optuna.optuna_sweeper import OWNER
from pbexp.errors import ConfigError, PbexpError
from pbexp.rundir import RunDir
from pbexp.search import study_storage
from pbexp.training import distributed

LM = [*TINY_LM, "trainer.device=cpu"]


def same_run(a: Path, b: Path) -> None:
    """Two run dirs with the same results and epoch records (timings aside)."""

    def strip(record):
        return {k: v for k, v in record.items() if not k.startswith("perf/") and k not in ("wall_s", "overrides")}

    assert strip(RunDir(a).read_results()) == strip(RunDir(b).read_results())
    assert [strip(r) for r in RunDir(a).read_metrics()] == [strip(r) for r in RunDir(b).read_metrics()]


def job_logs(sweep: Path) -> dict[str, str]:
    """submitit's log of each task of each job: {'<job id>_<task>': text}."""
    return {p.name.removesuffix("_log.out"): p.read_text() for p in sweep.glob(".submitit/*/*_log.out")}


# ---- SLURM's variables, without a scheduler -----------------------------------------------------------------
SLURM_STEP = {
    "SLURM_JOB_ID": "77",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
}


def set_env(monkeypatch, values):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", *SLURM_STEP):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_a_task_of_a_slurm_step_takes_its_place_from_slurm(monkeypatch):
    set_env(monkeypatch, SLURM_STEP)
    assert distributed.from_env() == distributed.World(rank=3, world_size=4, local_rank=1, local_world_size=2)
    distributed.check_slurm_tasks(distributed.from_env(), asked=4)  # what the launcher asked: fine
    with pytest.raises(ConfigError, match=r"hydra\.launcher\.tasks_per_node.*4 task\(s\)"):
        distributed.check_slurm_tasks(distributed.from_env(), asked=2)
    set_env(monkeypatch, {**SLURM_STEP, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})  # torchrun's own
    assert distributed.from_env() == distributed.World(rank=0, world_size=2, local_rank=0, local_world_size=2)


def test_a_batch_script_of_several_tasks_outside_srun_is_refused(monkeypatch):
    set_env(monkeypatch, {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"})
    world = distributed.from_env()
    assert world.world_size == 1
    with pytest.raises(PbexpError, match="2 tasks .* outside srun"):
        distributed.check_slurm_tasks(world, asked=None)
    set_env(monkeypatch, {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    distributed.check_slurm_tasks(distributed.from_env(), asked=1)  # a one-task job: nothing to say


@pytest.mark.parametrize("spec, counts", [("2", [2]), ("2(x3),1", [2, 2, 2, 1]), ("1,3", [1, 3])])
def test_slurm_tasks_per_node(spec, counts):
    assert distributed.slurm_tasks_per_node(spec) == counts


# ---- against the scheduler ----------------------------------------------------------------------------------
@pytest.mark.slurm
def test_a_two_task_job_trains_once_over_both_and_equals_torchrun(slurm_env, tiny_ptb, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*LM, f"dataset.root={tiny_ptb}", "model=lstm"]
    proc = run_cli(
        ["-m", *args, "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=cli_env(**slurm_env),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = job_logs(sweep)
    assert len(logs) == 2 and all("done:" in text for text in logs.values())  # two tasks, one training
    assert sorted(f"process {r} of 2" in text for text in logs.values() for r in (0, 1)) == [False, False, True, True]

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    ref = subprocess.run(
        [*torchrun, "-m", "pbexp.train", *args, f"hydra.run.dir={tmp_path / 'torchrun'}"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    same_run(sweep / "0", tmp_path / "torchrun")


@pytest.mark.slurm
def test_two_tasks_and_one_process_outside_srun_is_one_line_not_a_hang(slurm_env, tiny_ptb, tmp_path):
    command = " ".join([sys.executable, "-m", "pbexp.train", *LM, f"dataset.root={tiny_ptb}"])
    out = tmp_path / "job.out"
    job = subprocess.run(
        ["sbatch", "--wait", "-n2", "-c1", "--mem=1G", f"--output={out}", f"--chdir={tmp_path}", "--wrap", command],
        env={**cli_env(), **slurm_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in out.read_text().splitlines() if ln.startswith("pbexp-train: error:")]
    assert job.returncode != 0 and len(lines) == 1, out.read_text()[-2000:]
    assert "2 tasks (SLURM_NTASKS)" in lines[0] and "srun" in lines[0]
    assert "Traceback" not in out.read_text()


@pytest.mark.slurm
def test_a_job_warned_of_preemption_checkpoints_is_requeued_and_resumes_exactly(slurm_env, tiny_ptb, tmp_path):
    sweep = tmp_path / "sweep"
    # 40 epochs of ~70 steps: the job is still training when it gets the warning
    args = [*LM, f"dataset.root={tiny_ptb}", "model=lstm", "trainer.epochs=40", "trainer.checkpoint_every=50"]
    env = cli_env(**slurm_env)
    sweeping = subprocess.Popen(
        [sys.executable, "-m", "pbexp.train", "-m", *args, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not RunDir(sweep / "0").last.exists():  # the job runs and has checkpointed once
            assert time.time() < deadline and sweeping.poll() is None, "the job did not start training"
            time.sleep(0.5)
        (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]
        # What SLURM does before preempting the job: submitit asks it for USR2 (--signal=USR2@90)
        subprocess.run(["scancel", "--signal=USR2", job_id], env={**os.environ, **slurm_env}, check=True)
        stdout, stderr = sweeping.communicate(timeout=300)
    finally:
        sweeping.kill()
    assert sweeping.returncode == 0, stderr[-3000:]
    log = job_logs(sweep)[f"{job_id}_0"]
    saved = log.index("SIGUSR2: checkpoint saved at step")  # pbexp checkpointed first ...
    assert saved < log.index(f"Requeued job {job_id}") < log.index("resuming from")  # ... then submitit requeued
    assert RunDir(sweep / "0").read_results()["status"] == "completed"

    ref = run_cli([*args, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    same_run(sweep / "0", tmp_path / "ref")
    assert RunDir(sweep / "0").read_results()["steps"] == 40 * 70


SEARCH = search_yaml(n_jobs=2, n_trials=4, pruner="none")


@pytest.mark.slurm
@pytest.mark.slow  # 21 s; the fast suite keeps one sweep, one DDP job and one requeue on the scheduler
def test_a_search_with_two_workers_runs_each_trial_as_a_slurm_job(slurm_env, tiny_ptb, tmp_path):
    # Two workers on this host, each submitting one trial at a time and asking again when it ends: never more
    # than two trial jobs, never a batch waiting for its slowest.
    (tmp_path / "mine" / "hparams_search").mkdir(parents=True)
    (tmp_path / "mine" / "hparams_search" / "tiny.yaml").write_text(SEARCH)
    sweep = tmp_path / "sweep"
    args = ["-m", "-cd", str(tmp_path / "mine"), "hparams_search=tiny", *LM, f"dataset.root={tiny_ptb}"]
    proc = run_cli(
        [*args, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=cli_env(**slurm_env), timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    assert len(jobs) == 4  # one SLURM job per trial
    trials = sorted(p.name for p in sweep.iterdir() if p.name.isdigit())
    assert trials == ["0", "1", "2", "3"]
    assert all(RunDir(sweep / t).read_results()["status"] == "completed" for t in trials)
    best = (sweep / "optuna_best.yaml").read_text()
    assert "complete: 4" in best and "fail: 0" in best
    # asked by two worker processes (mode=batched would ask them all in the sweep's own process)
    study = optuna.load_study(study_name="pbexp", storage=study_storage(None, sweep))
    assert len({t.user_attrs[OWNER]["pid"] for t in study.trials}) == 2
