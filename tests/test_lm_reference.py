"""pbexp's language-model training held against an independent re-implementation of the report's code
(pytorch/examples' word_language_model, tests/helpers/word_language_model.py).

Both start from the same weights (drawn by the reference's own initialisation, handed to pbexp through
``trainer.init_from``), both run without dropout on the same text files, and both must produce the same
loss at every step and the same validation loss and learning rate at every epoch (so an lr drop on a plateau
happens at the same epoch). Nothing of pbexp's batching, model, clipping, update or schedule is used on the
reference side.
"""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import word_language_model as ref
from helpers.configs import compose_cfg
from helpers.data import read_ptb_reference
from pbexp.models.lm import CELLS
from pbexp.rundir import RunDir
from pbexp.train import train

EMB, HID, LAYERS, BATCH, BPTT, EVAL_BATCH, CLIP = 12, 16, 2, 4, 8, 10, 0.25


def pbexp_run(tmp_path, tiny_ptb, cell: str, weights: dict, lr: float, *extra: str) -> RunDir:
    """pbexp-train's own code path (train(cfg)) on the tiny corpus, from ``weights``, dropout off."""
    start = tmp_path / "start.pt"
    torch.save({"model": weights}, start)
    run = RunDir(tmp_path / "run")
    cfg = compose_cfg(
        [
            f"model.cell={cell}",
            f"model.emb_size={EMB}",
            f"model.hidden_size={HID}",
            f"model.num_layers={LAYERS}",
            "model.dropout=0.0",
            f"trainer.batch_size={BATCH}",
            f"trainer.bptt={BPTT}",
            f"trainer.eval_batch_size={EVAL_BATCH}",
            "trainer.optimizer=sgd",
            f"trainer.lr={lr}",
            f"trainer.clip={CLIP}",
            "trainer.schedule=plateau",
            "trainer.lr_factor=4",
            "trainer.checkpoint_every=0",
            f"trainer.init_from={start}",
            f"dataset.root={tiny_ptb}",
            "dataset.download=false",
            *extra,
        ]
    )
    train(cfg, run)
    return run


def reference_model(cell: str, vocab_size: int, seed: int = 0) -> ref.ReferenceRNNModel:
    torch.manual_seed(seed)
    return ref.ReferenceRNNModel(cell, vocab_size, EMB, HID, LAYERS)


def step_losses(run: RunDir) -> list[float]:
    acc = EventAccumulator(str(run.tb), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("train/loss")]


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_twenty_steps_give_the_reference_losses(cell, tiny_ptb, tmp_path):
    itos, ids = read_ptb_reference(tiny_ptb / "ptb")
    model = reference_model(cell, len(itos))
    run = pbexp_run(tmp_path, tiny_ptb, cell, model.state_dict(), 5.0, "trainer.max_steps=20", "trainer.log_every=1")
    expected = ref.train_epoch(model, ref.batchify(ids["train"], BATCH), BPTT, lr=5.0, clip=CLIP, max_steps=20)
    got = step_losses(run)
    assert len(got) == 20
    assert got == pytest.approx(expected, rel=1e-5)
    assert min(expected[-5:]) < expected[0] * 0.95  # it learned: the comparison is not between two flat lines


@pytest.fixture
def float64():
    """Both sides in float64 for a whole run: over hundreds of SGD steps two correct float32 implementations
    drift apart by rounding alone (1e-4 after two epochs here, as far as float32 is from float64), which
    would blur the epoch where validation stops improving."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_the_lr_drops_on_a_plateau_at_the_reference_epoch(tiny_ptb, tmp_path, float64):
    # lr 5 on the tiny corpus: validation stops improving at epoch 8, and lr / 4 follows.
    itos, ids = read_ptb_reference(tiny_ptb / "ptb")
    model = reference_model("LSTM", len(itos), seed=1)
    epochs, lr = 10, 5.0
    run = pbexp_run(tmp_path, tiny_ptb, "LSTM", model.state_dict(), lr, f"trainer.epochs={epochs}")
    expected = ref.fit(
        model,
        ref.batchify(ids["train"], BATCH),
        ref.batchify(ids["valid"], EVAL_BATCH),
        BPTT,
        lr=lr,
        clip=CLIP,
        epochs=epochs,
    )
    got = run.read_metrics()
    assert [r["lr"] for r in got] == pytest.approx([r["lr"] for r in expected], rel=1e-12)
    assert [r["valid/loss"] for r in got] == pytest.approx([r["valid_loss"] for r in expected], rel=1e-5)
    assert any(r["lr"] < lr for r in expected), "pick settings under which the lr drops at least once"
