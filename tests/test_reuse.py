"""Issue 15.4: stopping when validation stalls, warm starts, evaluating a finished run."""

import json

import pytest

from pbexp.train import train
from pbexp.training.tasks import LMTask

from conftest import compose_cfg, TINY_LM


def scripted_valid_ppl(monkeypatch, values):
    """LMTask.evaluate on valid returns these perplexities, epoch after epoch (test is computed for real)."""
    real, calls = LMTask.evaluate, iter(values)

    def evaluate(self, model, split, tick=None):
        out = real(self, model, split, tick)
        return {**out, "ppl": next(calls)} if split == "valid" else out

    monkeypatch.setattr(LMTask, "evaluate", evaluate)


def test_early_stop_after_patience_epochs_without_a_better_valid(tiny_ptb, tmp_path, monkeypatch, caplog):
    scripted_valid_ppl(monkeypatch, [50.0, 40.0, 41.0, 39.5, 39.6, 39.7, 10.0, 10.0])
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=8", "trainer.early_stop_patience=2",
                       "trainer.limit_batches=2"])
    with caplog.at_level("INFO", logger="pbexp"):
        results = train(cfg, tmp_path / "run")
    # 39.5 at epoch 4 is the last improvement; epochs 5 and 6 do not improve: stop after 6, never reach 7's 10.0
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert results["stopped_early"] is True and results["epochs"] == 6 and results["valid/ppl"] == 39.5
    assert "early stop after epoch 6: valid ppl has not improved for 2 epochs (best 39.5)" in caplog.text
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stopped_early"] is True


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
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1", "trainer.lr=1e-9",
                       f"trainer.init_from={run_a}"])
    train(cfg, tmp_path / "b")
    a = ckpt.load(run_a / "checkpoints" / "best.pt")["model"]
    b = ckpt.load(tmp_path / "b" / "checkpoints" / "best.pt")["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
    fresh = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1", "trainer.lr=1e-9"])
    train(fresh, tmp_path / "c")
    c = ckpt.load(tmp_path / "c" / "checkpoints" / "best.pt")["model"]
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
    assert not (tmp_path / "b" / "checkpoints").exists()


# ---------------------------------------------------------------- pbexp-eval

def write_hydra_config(run_dir, cfg):
    """What Hydra writes beside a run (train() called directly does not)."""
    from omegaconf import OmegaConf
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def test_eval_gives_training_own_valid_and_test_numbers(tiny_ptb, tmp_path):
    from pbexp.evaluate import evaluate_run
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=2"])
    results = train(cfg, tmp_path / "a")
    write_hydra_config(tmp_path / "a", cfg)
    for split in ("valid", "test"):
        out = evaluate_run(tmp_path / "a", split)
        assert out["ppl"] == pytest.approx(results[f"{split}/ppl"], rel=1e-9)
        assert out["checkpoint"].endswith("best.pt") and out["split"] == split
    # a checkpoint file too, and an override of the evaluation (other batch columns, other numbers)
    last = evaluate_run(tmp_path / "a" / "checkpoints" / "last.pt", "valid", ["trainer.eval_batch_size=3"])
    assert last["checkpoint"].endswith("last.pt") and last["ppl"] != results["valid/ppl"]


def test_eval_cli_prints_json_and_bad_input_is_one_line(tiny_ptb, tmp_path):
    from conftest import cli_env, run_cli
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.epochs=1"])
    results = train(cfg, tmp_path / "a")
    write_hydra_config(tmp_path / "a", cfg)
    ok = run_cli([str(tmp_path / "a")], cwd=tmp_path, env=cli_env(), module="pbexp.evaluate")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout)["ppl"] == pytest.approx(results["test/ppl"], rel=1e-9)
    for args, message in (([str(tmp_path / "nowhere")], "no run config"),
                          ([str(tmp_path / "a"), "--split", "train"], "--split='train' is not allowed")):
        bad = run_cli(args, cwd=tmp_path, env=cli_env(), module="pbexp.evaluate")
        assert bad.returncode == 2 and message in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_a_checkpoint_temp_file_left_by_a_killed_process_is_removed_on_resume(tiny_ptb, tmp_path):
    """SIGKILL inside a checkpoint write leaves last.pt.<random>.tmp; nothing else ever deleted it."""
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.max_steps=3", "trainer.epochs=0"])
    train(cfg, tmp_path / "run")
    leftover = tmp_path / "run" / "checkpoints" / "last.pt.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train(cfg, tmp_path / "run")  # resumes from last.pt
    assert not leftover.exists() and (tmp_path / "run" / "checkpoints" / "last.pt").exists()
