"""Model building: a model config is ``_target_`` + hyper-parameters (one class, one YAML)."""

from __future__ import annotations

from pbexp.config import instantiate
from omegaconf import DictConfig, OmegaConf

from pbexp.models.embeddings import load_pretrained

# Keys handled here, not by the model's constructor.
BUILDER_KEYS = ("pretrained", "freeze_embeddings")


def build_model(model_cfg: DictConfig, vocab, **task_kwargs):
    """Instantiate the model with the sizes the task knows (vocab size, classes, ...), then load
    pretrained embeddings if asked."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    extra = {k: cfg.pop(k, None) for k in BUILDER_KEYS}
    model = instantiate(cfg, **task_kwargs)
    if extra["pretrained"]:
        load_pretrained(model.embedding, vocab, extra["pretrained"], freeze=bool(extra["freeze_embeddings"]))
    elif extra["freeze_embeddings"]:
        from pbexp.errors import ConfigError
        raise ConfigError("model.freeze_embeddings", True, "only together with model.pretrained=<file>")
    return model
