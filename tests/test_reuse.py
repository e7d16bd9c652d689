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
