"""Model building: a model config is ``_target_`` + hyper-parameters (one class, one YAML, one task kind).

A model serves one task kind: a class whose constructor takes ``num_classes`` is a classifier ("clf"),
any other a language model ("lm"). A dataset's kind is its loader's (``data.task``: ``LMData``,
``ClassificationData``). A model picked for a dataset of the other kind is refused before it is built, in a line
naming the dataset the run picked and the models that fit it, in the words of the dataset's task class
(``model=gru`` is the GRU language model; on a classification dataset the GRU is ``model=gru_clf``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from pbexp.config import instantiate
from pbexp.data.vocab import Vocab
from pbexp.errors import ConfigError
from pbexp.models import word2vec
from pbexp.models.embeddings import load_pretrained
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.training.tasks import TASKS

TaskKind = Literal["lm", "clf"]
TASK_KINDS: tuple[TaskKind, ...] = ("lm", "clf")
# Keys handled here, not by the model's constructor.
BUILDER_KEYS = ("pretrained", "freeze_embeddings")
# Keys of a model config that the trainer config reads (trainer/lm.yaml: optimizer and lr from model.recipe).
TRAINER_KEYS = ("recipe",)
# model=gru served both kinds until issue 14 split it: a user who still picks it on IMDB is pointed at its twin.
TWINS = {"gru": "gru_clf", "gru_clf": "gru"}


def model_kind(model_cfg: DictConfig | dict) -> TaskKind | None:
    """The task kind a model config serves (its class's constructor says); None when ``_target_`` names no
    class (instantiate then reports it)."""
    try:
        cls = get_class(str(model_cfg["_target_"]))
    except (KeyError, ImportError, ValueError):
        return None
    return "clf" if "num_classes" in inspect.signature(cls).parameters else "lm"


def check_task_kind(
    model_cfg: DictConfig | dict, kind: TaskKind, name: str | None = None, dataset: str | None = None
) -> None:
    """Refuse a model of another task kind than the dataset's, in one line naming the model (``name``: its config
    name, when known), what it is, the dataset (``dataset``: its config name, when known), what that is and
    what to pick instead: the words come from the task classes (training.tasks.TASKS), not from a list of datasets."""
    own = model_kind(model_cfg)
    if own is None or own == kind:
        return
    fits = TASKS[kind]
    instead = f"model={TWINS[name]}" if name in TWINS else f"{fits.model_words}, e.g. model={fits.example_model}"
    data = f"dataset={dataset}" if dataset else "the dataset"
    key, value = ("model", name) if name else ("model._target_", model_cfg["_target_"])
    raise ConfigError(key, value, f"{TASKS[own].model_words}, and {data} is {fits.dataset_words}; use {instead}")


def picked(group: str, overrides: Iterable[str]) -> str | None:
    """The config a run picked for ``group``: its ``group=`` override, else Hydra's choice; None outside Hydra."""
    name = None
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key == group:
            name = value
    if name is None:
        try:
            name = HydraConfig.get().runtime.choices.get(group)
        except ValueError:  # not under Hydra (train() called directly)
            pass
    return name


def check_overrides_apply(model_cfg: DictConfig, kind: TaskKind, overrides: Iterable[str]) -> None:
    """What train() checks before building: the model the run picked serves the dataset's task kind (``kind``:
    the loaded dataset's ``data.task``). The names in the message are the ``model=`` and ``dataset=`` overrides,
    else Hydra's choices for the groups."""
    overrides = list(overrides)
    check_task_kind(model_cfg, kind, picked("model", overrides), picked("dataset", overrides))


def model_config(model_cfg: DictConfig, kind: TaskKind) -> dict[str, Any]:
    """The plain dict of a model config (``_target_`` + constructor keys + builder keys) for a task kind;
    ConfigError for a model of the other kind."""
    check_task_kind(model_cfg, kind)
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    return {k: v for k, v in cfg.items() if k not in TRAINER_KEYS}


def build_model(
    model_cfg: DictConfig,
    vocab: Vocab | None,
    kind: TaskKind = "lm",
    training_sentences: Callable[[], list[torch.Tensor]] | None = None,
    seed: int = 0,
    **task_kwargs: int,
) -> torch.nn.Module | SelfTrainedModel:
    """Instantiate the model with the sizes the task knows (``task.model_kwargs()``: vocab size, classes, ...),
    then load pretrained embeddings if asked: a GloVe-format file, or ``word2vec`` (vectors trained on
    ``training_sentences()``: the training split, plus the dataset's unlabelled text when it has some, as IMDB
    with ``dataset.unsup=true``; never valid or test)."""
    cfg = model_config(model_cfg, kind)
    extra = {k: cfg.pop(k, None) for k in BUILDER_KEYS}
    model = instantiate(cfg, **task_kwargs)
    if extra["pretrained"]:
        if not isinstance(getattr(model, "embedding", None), torch.nn.Embedding):
            raise ConfigError(
                "model.pretrained",
                extra["pretrained"],
                f"null: {type(model).__name__} has no word embedding to initialise",
            )
        path = extra["pretrained"]
        if path == word2vec.NAME:
            if training_sentences is None:
                raise ConfigError("model.pretrained", path, "a GloVe-format file here (no training text to train on)")
            path = word2vec.word2vec_file(training_sentences(), vocab, model.embedding.embedding_dim, seed)
        load_pretrained(model.embedding, vocab, path, freeze=bool(extra["freeze_embeddings"]))
    elif extra["freeze_embeddings"]:
        raise ConfigError("model.freeze_embeddings", True, "only together with model.pretrained=<file>")
    return model
