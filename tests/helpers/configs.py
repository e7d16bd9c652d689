"""The repository, the data mirror, and configs composed from the real config tree."""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from pbexp.models import BUILDER_KEYS, TRAINER_KEYS
from pbexp.train import CONFIG_DIR  # pbexp.train also registers the Optuna sweeper plugin the configs name

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PBEXP_DATA_MIRROR") or REPO.parent / "shared" / "data")

# The sizes of a language model small enough to train in seconds on the tiny PTB (helpers.data.write_tiny_ptb)...
TINY_LM_SIZES = [
    "model.emb_size=16",
    "model.hidden_size=16",
    "model.num_layers=1",
    "model.dropout=0.0",
    "trainer.batch_size=4",
    "trainer.bptt=8",
    "trainer.eval_batch_size=4",
]
# ...and how it trains there.
TINY_LM = [
    *TINY_LM_SIZES,
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


# ---------------------------------------------------------------- defaults from the YAML (the one place they live)
# The constructors and loaders have no Python defaults for the keys their YAML sets (issue 14): a test that
# builds one directly takes the rest from the composed YAML and names only what it varies.


@functools.cache
def _composed(group: str, name: str) -> dict:
    cfg = compose_cfg([f"{group}={name}"])[group]  # as pbexp-train composes it: a YAML's defaults list included
    return OmegaConf.to_container(cfg, resolve=True)


def model_defaults(name: str) -> dict:
    """The constructor keys of configs/model/<name>.yaml (composed): no _target_, recipe, pretrained,
    freeze_embeddings."""
    skip = ("_target_", *TRAINER_KEYS, *BUILDER_KEYS)
    return {k: v for k, v in copy.deepcopy(_composed("model", name)).items() if k not in skip}


def make_model(name: str, **overrides):
    """The class configs/model/<name>.yaml names, built with its defaults and ``overrides`` (the task's sizes,
    ``vocab_size=...`` and for a classifier ``num_classes``, ``max_len``, ``pad_idx``, among them)."""
    return get_class(_composed("model", name)["_target_"])(**{**model_defaults(name), **overrides})


def dataset_defaults(name: str) -> dict:
    """The loader keys of configs/dataset/<name>.yaml (composed), without _target_."""
    return {k: v for k, v in copy.deepcopy(_composed("dataset", name)).items() if k != "_target_"}


def load_dataset(name: str, **overrides):
    """The loader configs/dataset/<name>.yaml names, called with its defaults and ``overrides`` (``root=...``)."""
    return get_method(_composed("dataset", name)["_target_"])(**{**dataset_defaults(name), **overrides})


def search_yaml(**sweeper) -> str:
    """An Optuna search of the user's own (hparams_search/<name>.yaml in a --config-dir): over a learning rate
    from useless to good unless ``params`` says otherwise; ``sweeper``: hydra.sweeper's other settings."""
    params = sweeper.pop("params", {"trainer.lr": "tag(log, interval(0.001, 30.0))"})
    body = {
        "defaults": [{"override /hydra/sweeper": "pbexp_optuna"}],
        "hydra": {"sweeper": {"direction": "minimize", **sweeper, "params": params}},
    }
    return "# @package _global_\n" + yaml.safe_dump(body, sort_keys=False)
