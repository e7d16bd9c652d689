"""Model building: a model config is ``_target_`` + hyper-parameters (one class, one YAML).

A name used by both tasks (``model=gru``: a GRU language model on PTB, a GRU classifier on IMDB)
keeps the language model's keys at the top and the other task's config under a key named after
that task kind (``clf:``); :func:`model_config` picks the one for the dataset's task.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from pbexp.config import instantiate
from pbexp.errors import ConfigError
from pbexp.models import word2vec
from pbexp.models.embeddings import load_pretrained

# Keys handled here, not by the model's constructor.
BUILDER_KEYS = ("pretrained", "freeze_embeddings")
# Keys of a model config that the trainer config reads (trainer/lm.yaml: optimizer and lr from model.recipe).
TRAINER_KEYS = ("recipe",)
TASK_KINDS = ("lm", "clf")


def model_config(model_cfg: DictConfig, kind: str) -> dict:
    """The plain dict of the model config for a task kind (``_target_`` + constructor keys + builder keys)."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    if kind in cfg and isinstance(cfg[kind], dict):
        cfg = cfg[kind]
    return {k: v for k, v in cfg.items() if k not in TASK_KINDS + TRAINER_KEYS}


def check_overrides_apply(model_cfg: DictConfig, kind: str, overrides: list[str]) -> None:
    """A name used by both tasks reads ``model.<kind>.*`` on the other task, so ``model.hidden_size=32`` there
    would change nothing: an error, not a silent no-op."""
    if kind not in model_cfg:
        return
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("model.") and not key.startswith(f"model.{kind}."):
            rest = key[len("model."):]
            raise ConfigError(key, value, f"model.{kind}.{rest}=...: on this dataset the model is configured "
                                          f"under model.{kind} (or pick the {kind} model by its own name)")


def build_model(model_cfg: DictConfig, vocab, kind: str = "lm", training_sentences=None, seed: int = 0,
                **task_kwargs):
    """Instantiate the model with the sizes the task knows (vocab size, classes, ...), then load
    pretrained embeddings if asked: a GloVe-format file, or ``word2vec`` (vectors trained on
    ``training_sentences()``, the training split only)."""
    cfg = model_config(model_cfg, kind)
    extra = {k: cfg.pop(k, None) for k in BUILDER_KEYS}
    model = instantiate(cfg, **task_kwargs)
    if extra["pretrained"]:
        if not isinstance(getattr(model, "embedding", None), torch.nn.Embedding):
            raise ConfigError("model.pretrained", extra["pretrained"],
                              f"null: {type(model).__name__} has no word embedding to initialise")
        path = extra["pretrained"]
        if path == word2vec.NAME:
            if training_sentences is None:
                raise ConfigError("model.pretrained", path, "a GloVe-format file here (no training text to train on)")
            path = word2vec.word2vec_file(training_sentences(), vocab, model.embedding.embedding_dim, seed)
        load_pretrained(model.embedding, vocab, path, freeze=bool(extra["freeze_embeddings"]))
    elif extra["freeze_embeddings"]:
        raise ConfigError("model.freeze_embeddings", True, "only together with model.pretrained=<file>")
    return model
