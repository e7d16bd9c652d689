"""The repository, the data mirror, and configs composed from the real config tree."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir

from pbexp.train import CONFIG_DIR  # pbexp.train also registers the Optuna sweeper plugin the configs name

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PBEXP_DATA_MIRROR") or REPO.parent / "shared" / "data")

# A language model small enough to train in seconds on the tiny PTB (helpers.data.write_tiny_ptb).
TINY_LM = [
    "model.emb_size=16",
    "model.hidden_size=16",
    "model.num_layers=1",
    "model.dropout=0.0",
    "trainer.batch_size=4",
    "trainer.bptt=8",
    "trainer.eval_batch_size=4",
    "trainer.log_every=5",
    "trainer.epochs=2",
    "trainer.lr=5",
    "trainer.checkpoint_every=0",
    "dataset.download=false",
]


def compose_cfg(overrides=()):
    """configs/train.yaml with ``overrides``, as the command line would compose it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
