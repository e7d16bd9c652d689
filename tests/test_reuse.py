"""Issue 15.4: stopping when validation stalls, warm starts, evaluating a finished run."""

import json

import pytest

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM, compose_cfg
from pbexp.rundir import RunDir
from pbexp.train import train
from pbexp.training.tasks import LMTask


def scripted_valid_ppl(monkeypatch, values):
    """LMTask.evaluate on valid returns these perplexities, epoch after epoch (test is computed for real)."""
    real, calls = LMTask.evaluate, iter(values)

    def evaluate(self, model, split, tick=None):
        out = real(self, model, split, tick)
        return {**out, "ppl": next(calls)} if split == "valid" else out

    monkeypatch.setattr(LMTask, "evaluate", evaluate)


def test_early_stop_after_patience_epochs_without_a_better_valid(tiny_ptb, tmp_path, monkeypatch, caplog):
    scripted_valid_ppl(monkeypatch, [50.0, 40.0, 41.0, 39.5, 39.6, 39.7, 10.0, 10.0])
    cfg = compose_cfg(
        [
            *TINY_LM,
            f"dataset.root={tiny_ptb}",
            "trainer.epochs=8",
            "trainer.early_stop_patience=2",
            "trainer.limit_batches=2",
        ]
    )
    with caplog.at_level("INFO", logger="pbexp"):
        results = train(cfg, tmp_path / "run")
    # 39.5 at epoch 4 is the last improvement; epochs 5 and 6 do not improve: stop after 6, never reach 7's 10.0
    epochs = [json.loads(line)["epoch"] for line in RunDir(tmp_path / "run").metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert results["stopped_early"] is True and results["epochs"] == 6 and results["valid/ppl"] == 39.5
    assert "early stop after epoch 6: valid ppl has not improved for 2 epochs (best 39.5)" in caplog.text
    assert RunDir(tmp_path / "run").read_results()["stopped_early"] is True


def test_without_patience_every_epoch_runs(tiny_ptb, tmp_path, monkeypatch):
    scripted_valid_ppl(monkeypatch, [50.0, 60.0, 70.0])
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=3", "trainer.limit_batches=2"])
    results = train(cfg, tmp_path / "run")
    assert results["stopped_early"] is False and results["epochs"] == 3


# ---------------------------------------------------------------- warm start


@pytest.fixture
def finished_run(tiny_ptb, tmp_path):
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1"])
    return tmp_path / "a", train(cfg, tmp_path / "a")


def test_init_from_a_run_starts_from_its_best_weights(finished_run, tiny_ptb, tmp_path):
    import torch

    from pbexp.training import checkpoint as ckpt

    run_a, _ = finished_run
    # SGD at a vanishing lr: B's weights can only be A's if the warm start copied them
    cfg = compose_cfg(
        [*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1", "trainer.lr=1e-9", f"trainer.init_from={run_a}"]
    )
    train(cfg, tmp_path / "b")
    a = ckpt.load(RunDir(run_a).best)["model"]
    b = ckpt.load(RunDir(tmp_path / "b").best)["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
    fresh = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1", "trainer.lr=1e-9"])
    train(fresh, tmp_path / "c")
    c = ckpt.load(RunDir(tmp_path / "c").best)["model"]
    assert not torch.allclose(c["decoder.weight"], a["decoder.weight"])  # the test can tell the difference


def test_init_from_a_model_of_other_shapes_names_the_key(finished_run, tiny_ptb, tmp_path):
    from pbexp.errors import ConfigError

    run_a, _ = finished_run
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "model.hidden_size=24", f"trainer.init_from={run_a}"])
    with pytest.raises(ConfigError, match="trainer.init_from=.*a checkpoint of a model with this run's shapes"):
        train(cfg, tmp_path / "b")


def test_init_from_nowhere_is_refused_before_any_work(tiny_ptb, tmp_path):
    from pbexp.errors import ConfigError

    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", f"trainer.init_from={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="a run dir or a .pt checkpoint that exists"):
        train(cfg, tmp_path / "b")
    assert not RunDir(tmp_path / "b").checkpoints.exists()


# ---------------------------------------------------------------- pbexp-eval


def write_hydra_config(run_dir, cfg):
    """What Hydra writes beside a run (train() called directly does not)."""
    from omegaconf import OmegaConf

    RunDir(run_dir).hydra.mkdir(exist_ok=True)
    OmegaConf.save(cfg, RunDir(run_dir).config)


def test_eval_gives_training_own_valid_and_test_numbers(tiny_ptb, tmp_path):
    from pbexp.evaluate import evaluate_run

    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=2"])
    run = RunDir(tmp_path / "a")
    results = train(cfg, run)
    write_hydra_config(run.path, cfg)
    for split in ("valid", "test"):
        out = evaluate_run(run.path, split)
        assert out["ppl"] == pytest.approx(results[f"{split}/ppl"], rel=1e-9)
        assert out["checkpoint"].endswith(run.best.name) and out["split"] == split
    # a checkpoint file too, and an override of the evaluation (other batch columns, other numbers)
    last = evaluate_run(run.last, "valid", ["trainer.eval_batch_size=3"])
    assert last["checkpoint"].endswith(run.last.name) and last["ppl"] != results["valid/ppl"]


def test_eval_cli_prints_json_and_bad_input_is_one_line(tiny_ptb, tmp_path):
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1"])
    results = train(cfg, tmp_path / "a")
    write_hydra_config(tmp_path / "a", cfg)
    ok = run_cli([str(tmp_path / "a")], cwd=tmp_path, env=cli_env(), module="pbexp.evaluate")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout)["ppl"] == pytest.approx(results["test/ppl"], rel=1e-9)
    for args, message in (
        ([str(tmp_path / "nowhere")], "no run config"),
        ([str(tmp_path / "a"), "--split", "train"], "--split='train' is not allowed"),
    ):
        bad = run_cli(args, cwd=tmp_path, env=cli_env(), module="pbexp.evaluate")
        assert bad.returncode == 2 and message in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_a_checkpoint_temp_file_left_by_a_killed_process_is_removed_on_resume(tiny_ptb, tmp_path):
    """SIGKILL inside a checkpoint write leaves <checkpoint name>.<random>.tmp (files.write_atomic's temp file)
    beside it; nothing else ever deleted it."""
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.max_steps=3", "trainer.epochs=0"])
    run = RunDir(tmp_path / "run")
    train(cfg, run)
    leftover = run.last.with_name(run.last.name + ".k1ll3d.tmp")
    leftover.write_bytes(b"half a checkpoint")
    train(cfg, run)  # resumes from the last checkpoint
    assert not leftover.exists() and run.last.exists()
