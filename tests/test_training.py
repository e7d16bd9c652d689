import json

import pytest
import torch

from helpers.configs import TINY_LM, compose_cfg
from pbexp.rundir import RunDir
from pbexp.train import train
from pbexp.training import checkpoint as ckpt
from pbexp.training.trainer import _zaremba_factor


def test_two_epochs_lower_validation_perplexity(tiny_lm_cfg, tmp_path):
    run = RunDir(tmp_path / "run")
    results = train(tiny_lm_cfg, run)
    lines = [json.loads(l) for l in run.metrics.read_text().splitlines()]  # the raw lines: one per epoch
    assert [l["epoch"] for l in lines] == [1, 2]
    assert lines[1]["valid/ppl"] < lines[0]["valid/ppl"]
    # The grammar has ~12 word types; a model that learned something is far below uniform.
    assert results["valid/ppl"] < 0.5 * len(run.vocab.read_text().split())
    assert results["status"] == "completed" and results["epochs"] == 2
    assert results["test/ppl"] > 1 and results["train/ppl"] > 1


def test_results_match_metrics_and_best_checkpoint(tiny_lm_cfg, tmp_path):
    run = RunDir(tmp_path / "run")
    results = train(tiny_lm_cfg, run)
    lines = run.read_metrics()
    best = min(lines, key=lambda l: l["valid/ppl"])
    assert results["valid/ppl"] == pytest.approx(best["valid/ppl"])
    assert results["train/ppl"] == pytest.approx(lines[-1]["train/ppl"])
    state = ckpt.load(run.best)
    assert state["epoch"] == best["epoch"]
    last = ckpt.load(run.last)
    assert last["epoch"] == 3 and last["step"] == results["steps"]  # the next epoch to run
    assert set(last) >= {"model", "optimizer", "scheduler", "ranks"}
    # one process's own state (carried hidden state, loss sums, RNG), on the CPU whatever device trained
    (own,) = last["ranks"]
    assert set(own) >= {"rng", "task", "epoch_loss", "epoch_count"}
    assert own["rng"]["torch"].device.type == "cpu"


def test_max_steps_stops_early(tiny_ptb, tmp_path):
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.max_steps=3", "trainer.epochs=5"])
    results = train(cfg, tmp_path / "run")
    assert results["steps"] == 3 and results["epochs"] == 1


def test_epochs_zero_means_no_epoch_limit_with_max_steps(tiny_ptb, tmp_path):
    """epochs=0 trained 0 steps and reported completed; it is 'no epoch limit' when max_steps is set."""
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.max_steps=75", "trainer.epochs=0"])
    from pbexp.config import instantiate
    from pbexp.training.tasks import build_task

    per_epoch = build_task(instantiate(cfg.dataset), cfg.trainer, "cpu").num_batches()
    assert per_epoch < 75  # so the run must go on past the first epoch
    results = train(cfg, tmp_path / "run")
    assert results["status"] == "completed" and results["steps"] == 75


def test_progress_covers_the_steps_that_run_and_evaluation_is_announced(tiny_ptb, tmp_path, caplog):
    """The bar's total and ETA covered the whole epoch when max_steps stopped far sooner; the test pass ran
    in silence."""
    from pbexp.training.logger import Progress

    ticks = {}
    real_tick = Progress.tick

    def counting_tick(self):
        ticks[self.desc] = ticks.get(self.desc, 0) + 1
        real_tick(self)

    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.max_steps=3"])
    with caplog.at_level("INFO", logger="pbexp"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(Progress, "tick", counting_tick)
        train(cfg, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records]
    assert "epoch 1: 3 batches" in lines, [l for l in lines if "batches" in l]
    # each evaluation has its own bar, advanced once per batch of the split (TINY_LM: bptt 8, eval batch 4 columns)
    for split in ("valid", "test"):
        tokens = len((tiny_ptb / "ptb" / f"ptb.{split}.txt").read_text().split()) + len(
            (tiny_ptb / "ptb" / f"ptb.{split}.txt").read_text().splitlines()
        )  # + one <eos> a line
        rows = tokens // cfg.trainer.eval_batch_size
        expected = -(-(rows - 1) // cfg.trainer.bptt)
        assert f"evaluating on {split}: {expected} batches" in lines, [l for l in lines if "evaluating" in l]
        assert ticks[f"evaluating on {split}"] == expected
    assert any(l.startswith("test: loss ") and l.endswith(" s)") for l in lines)


def test_same_seed_gives_identical_results(tiny_lm_cfg, tmp_path):
    a = train(tiny_lm_cfg, tmp_path / "a")
    b = train(tiny_lm_cfg, tmp_path / "b")
    for key in ("train/ppl", "valid/ppl", "test/ppl"):
        assert a[key] == b[key]


def test_plateau_schedule_divides_lr_only_when_valid_does_not_improve():
    from types import SimpleNamespace

    from pbexp.training.trainer import make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=20.0)
    sched = make_scheduler(SimpleNamespace(schedule="plateau", lr_factor=4.0), opt)
    lrs = []
    for valid_ppl in [100.0, 90.0, 95.0, 80.0, 80.0]:  # better, worse, better, equal (= not better)
        sched.step(valid_ppl)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [20.0, 20.0, 5.0, 5.0, 1.25]


def test_zaremba_schedule_factor():
    # Zaremba et al. small: lr constant for 4 epochs, then halved each epoch.
    factors = [_zaremba_factor(e, decay_start=4, decay=0.5) for e in range(7)]
    assert factors == [1, 1, 1, 1, 0.5, 0.25, 0.125]


def test_zaremba_schedule_in_a_run(tiny_ptb, tmp_path):
    cfg = compose_cfg(
        [
            *TINY_LM,
            f"dataset.root={tiny_ptb}",
            "trainer.schedule=zaremba",
            "trainer.decay_start=1",
            "trainer.lr_decay=0.5",
            "trainer.epochs=3",
        ]
    )
    train(cfg, tmp_path / "run")
    lrs = [r["lr"] for r in RunDir(tmp_path / "run").read_metrics()]
    # the epoch records hold the lr each epoch ran at
    assert lrs == [5.0, 2.5, 1.25]


def test_limit_batches_shortens_every_epoch(tiny_ptb, tmp_path):
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.limit_batches=3", "trainer.epochs=2"])
    results = train(cfg, tmp_path / "run")
    lines = RunDir(tmp_path / "run").read_metrics()
    assert results["steps"] == 6 and [l["step"] for l in lines] == [3, 6]


def test_max_minutes_stops_training_then_evaluates_and_tests(tiny_ptb, tmp_path):
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.max_minutes=0.000001", "trainer.epochs=5"])
    results = train(cfg, tmp_path / "run")
    # The budget is checked after every step: the first one spends it; the epoch is evaluated, then tested.
    assert results["steps"] == 1 and results["epochs"] == 1 and results["test/ppl"] > 1


def test_bf16_autocast_trains_or_falls_back_to_fp32_without_cpu_support(tiny_ptb, tmp_path, caplog, monkeypatch):
    """trainer.amp=bf16 runs the forward pass under autocast where the CPU has native bf16; on one without
    (AVX2 only: ~10x slower, and oneDNN's LSTM fails) it trains in fp32 and says so. Checked at the decoder:
    the dtype of its output in every training forward pass."""
    import pbexp.train
    from pbexp.training.trainer import cpu_has_bf16

    train_dtypes = set()
    real_build = pbexp.train.build_model

    def build_and_watch_the_decoder(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.decoder.register_forward_hook(
            lambda module, inputs, out: train_dtypes.add(out.dtype) if module.training else None
        )
        return model

    monkeypatch.setattr(pbexp.train, "build_model", build_and_watch_the_decoder)
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.amp=bf16", "trainer.epochs=1"])
    with caplog.at_level("WARNING", logger="pbexp"):
        results = train(cfg, tmp_path / "bf16")
    assert results["status"] == "completed" and results["steps"] > 0
    fell_back = any("training in fp32 instead" in r.getMessage() for r in caplog.records)
    if cpu_has_bf16():
        assert not fell_back and train_dtypes == {torch.bfloat16}  # the decoder's matmul ran in bf16
    else:
        assert fell_back and train_dtypes == {torch.float32}
