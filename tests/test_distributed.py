"""Data parallel with 2 CPU processes (gloo) through torchrun: one DDP step equals one single-process
step on the concatenated batch, for the LM and for a classifier; the results are written once."""

import re
import subprocess
import sys

import pytest
import torch

from helpers.cli import cli_env, free_port, run_cli
from helpers.configs import TINY_LM, compose_cfg
from helpers.data import write_archive, write_tree
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt


def torchrun(args, cwd, nproc=2):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "pbexp.train",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)


def one_step(tmp_path, args, name, distributed, default_run_dir=False):
    """One optimiser step in run dir ``tmp_path/name``; with ``default_run_dir`` no hydra.run.dir is given and
    the run goes where pbexp-train puts it by default, under ``tmp_path/name`` as the working directory."""
    run = tmp_path / name
    full = [*args, "trainer.max_steps=1", "trainer.epochs=1", "trainer.checkpoint_every=0"]
    if default_run_dir:
        run.mkdir()
        cwd = run
    else:
        full, cwd = [*full, f"hydra.run.dir={run}"], tmp_path
    proc = torchrun(full, cwd) if distributed else run_cli(full, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if default_run_dir:
        # Under torchrun both ranks must agree on one run dir, outputs/runs/<date>/ddp_<run id>: exactly
        # one run folder, rank 0's results in it, and no timestamped folder from the other rank.
        made = sorted((cwd / "outputs" / "runs").glob("*/*"))
        assert len(made) == 1 and re.fullmatch(
            r"\d{4}-\d\d-\d\d/ddp_\S+", made[0].relative_to(made[0].parents[1]).as_posix()
        ), made
        run = made[0]
    return RunDir(run), ckpt.load(RunDir(run).last)["model"]


def initial_weights(args):
    """The model exactly as train() builds it before the first step (same seed, same order)."""
    from pbexp.config import instantiate
    from pbexp.models import build_model
    from pbexp.training.runtime import seed_everything
    from pbexp.training.tasks import build_task

    cfg = compose_cfg(args)
    seed_everything(cfg.seed, True)
    data = instantiate(cfg.dataset)
    task = build_task(data, cfg.trainer, "cpu")
    return build_model(cfg.model, data.vocab, task.kind, **task.model_kwargs()).state_dict()


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k


@pytest.mark.parametrize("kind", ["lm", "clf"])
def test_ddp_step_equals_single_process_step_on_the_whole_batch(tmp_path, tiny_ptb, kind):
    if kind == "lm":
        args = [*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.lr=1", "trainer.clip=0.5", "trainer.device=cpu"]
    else:
        write_archive(write_tree(tmp_path / "src"), tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz")
        args = [
            "dataset=imdb",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.download=false",
            "dataset.max_len=12",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "model=cnn",
            "model.emb_size=8",
            "model.filters=4",
            "model.widths=[2,3]",
            "model.dropout=0",
            "trainer.batch_size=8",
            "trainer.device=cpu",  # gloo on CPUs, whatever GPUs the machine has
        ]
    # the LM run checks the default run dir under torchrun, the classifier run an explicit hydra.run.dir
    run_ddp, ddp = one_step(tmp_path, args, "ddp", distributed=True, default_run_dir=kind == "lm")
    run_one, single = one_step(tmp_path, args, "single", distributed=False)
    assert_same_params(ddp, single)
    # The step changed the weights, so this compares two trained models, not two initial ones.
    init = initial_weights([a for a in args if not a.startswith("hydra.")])
    assert any(not torch.equal(init[k], single[k]) for k in init)
    results = run_ddp.read_results()
    assert results["status"] == "completed" and results["steps"] == 1
    # Each process took its share: together they saw exactly the single process's batch, not twice it.
    unit = "tokens" if kind == "lm" else "examples"
    assert results[f"train/{unit}"] == run_one.read_results()[f"train/{unit}"] > 0
    assert len(run_ddp.tb_events()) == 1  # only rank 0 logs
    if kind == "clf":  # hydra.run.dir was given: no default folder (ddp_<id> or timestamped) appears beside it
        assert not list(tmp_path.glob("outputs/runs/*/*")), list(tmp_path.glob("outputs/runs/*/*"))


def test_torchrun_launches_on_different_ports_get_different_default_run_dirs(tmp_path, monkeypatch):
    from pbexp.cli import _prepare_argv

    monkeypatch.chdir(tmp_path)
    run_dirs = []
    for port in ("29500", "29501"):  # what torchrun --master_port=<port> puts in rank 0's environment
        for key, value in {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "2",
            "TORCHELASTIC_RUN_ID": "none",
            "MASTER_PORT": port,
        }.items():
            monkeypatch.setenv(key, value)
        run_dirs.append([a for a in _prepare_argv(["trainer.epochs=1"]) if a.startswith("hydra.run.dir=")])
    assert run_dirs[0] != run_dirs[1], run_dirs
