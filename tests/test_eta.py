"""The whole-run ETA in the progress line: Trainer.run_eta against hand-computed cases."""

import pytest
from omegaconf import OmegaConf

from pbexp.training import trainer as trainer_module
from pbexp.training.trainer import Trainer, format_seconds


def at(
    monkeypatch,
    now: float,
    *,
    epochs=10,
    max_steps=0,
    max_minutes=0,
    epoch=3,
    batch=40,
    step=240,
    epoch_time=0.0,
    epoch_start=0.0,
    valid_seconds=5.0,
    time_done=200.0,
) -> Trainer:
    """A trainer 40 batches into epoch 3 of 10 (100 batches an epoch), at 0.5 s a batch."""
    t = object.__new__(Trainer)  # run_eta reads counters only: no model, data or optimiser needed
    t.cfg = OmegaConf.create({"epochs": epochs, "max_steps": max_steps, "max_minutes": max_minutes})
    t.epoch, t.batch_in_epoch, t.step = epoch, batch, step
    t.epoch_time, t._t_epoch, t.valid_seconds, t.time_done = epoch_time, epoch_start, valid_seconds, time_done
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: now)
    return t


def test_eta_counts_this_epoch_the_later_ones_and_their_validations(monkeypatch):
    t = at(monkeypatch, now=20.0)  # 40 batches in 20 s: 0.5 s each
    # 60 batches left now + 7 whole epochs of 100, at 0.5 s; 8 validations of 5 s
    assert t.run_eta(100) == pytest.approx((60 + 700) * 0.5 + 8 * 5.0)


def test_time_before_a_mid_epoch_checkpoint_counts_toward_the_pace(monkeypatch):
    # 10 s spent before the last checkpoint + 10 s since: still 0.5 s a batch
    t = at(monkeypatch, now=110.0, epoch_time=10.0, epoch_start=100.0)
    assert t.run_eta(100) == pytest.approx(760 * 0.5 + 8 * 5.0)


def test_max_steps_and_max_minutes_shorten_it(monkeypatch):
    steps = at(monkeypatch, now=20.0, max_steps=300)  # 60 steps left, one validation
    assert steps.run_eta(100) == pytest.approx(60 * 0.5 + 5.0)
    budget = at(monkeypatch, now=20.0, max_minutes=5)  # 300 s budget, 200 + 20 s spent
    assert budget.run_eta(100) == pytest.approx(80.0)


def test_no_eta_without_a_bound_or_before_the_first_batch(monkeypatch):
    assert at(monkeypatch, now=20.0, epochs=0).run_eta(100) is None
    assert at(monkeypatch, now=20.0, batch=0).run_eta(100) is None


@pytest.mark.parametrize("seconds, text", [(45, "45s"), (750, "12m30s"), (3900, "1h05m"), (59.6, "1m00s")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
