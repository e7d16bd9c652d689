"""Every config in the tree composes with hydra.compose, resolves, and builds what it names.

The config tree itself says what exists: the experiment presets, their sizes and sweeps, the models and the
datasets are read from configs/ (globbed), so a new preset, size, sweep value or model is covered without
a new test (as lightning-hydra-template's ``experiment=glob(*)``).
"""

import functools
import inspect
import math
import re
import typing
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from helpers.configs import compose_cfg
from pbexp.config import validate
from pbexp.errors import ConfigError
from pbexp.models import (
    BUILDER_KEYS,
    TASK_KINDS,
    TRAINER_KEYS,
    build_model,
    check_overrides_apply,
    model_config,
    model_kind,
)
from pbexp.train import CONFIG_DIR

CONFIGS = Path(CONFIG_DIR)
MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONFIGS / "dataset").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
SIZE_REF = re.compile(r"\$\{sizes\.\$\{preset\}\.(\w+)\}")


def experiment_yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / "experiment" / f"{name}.yaml").read_text(encoding="utf-8"))


def preset_sizes(name: str) -> list:
    """The sizes an experiment declares under ``sizes:`` (None: it has none, so ``preset`` does not matter)."""
    return list(experiment_yaml(name).get("sizes") or [None])


def sweep_overrides(name: str) -> list[str]:
    """One override per value of each key the preset sweeps (hydra.sweeper.params), split by Hydra's own
    override parser as a multirun does."""
    params = (experiment_yaml(name).get("hydra") or {}).get("sweeper", {}).get("params") or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [f"{o.get_key_element()}={v}" for o in parsed for v in o.sweep_string_iterator()]


def leaves(node, prefix=""):
    """(dotted key, value) of every leaf of a YAML mapping."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def preset_args(name, size):
    return [f"experiment={name}", *([f"preset={size}"] if size is not None else [])]


@functools.cache
def dataset_kind(name: str) -> str:
    """The task kind a dataset config yields: its loader's return type (LMData, ClassificationData) says."""
    loader = get_method(compose_cfg([f"dataset={name}"]).dataset._target_)
    return typing.get_type_hints(loader)["return"].__dataclass_fields__["task"].default


@functools.cache
def model_kinds(name: str) -> str:
    """The one task kind a model config serves: a classifier's constructor takes num_classes (checked here
    independently of models.model_kind, which the builder uses)."""
    cfg = compose_cfg([f"model={name}"]).model
    own = "clf" if "num_classes" in inspect.signature(get_class(cfg._target_)).parameters else "lm"
    assert model_kind(cfg) == own, name
    return own


# ---------------------------------------------------------------- the defaults and overrides


def test_default_is_lstm_on_ptb():
    cfg = compose_cfg()
    assert cfg.model.cell == "LSTM" and cfg.dataset._target_.endswith("load_ptb")
    assert cfg.trainer.optimizer == "sgd"


def test_public_override_names_exist():
    keys = [
        "model.emb_size=10",
        "model.hidden_size=10",
        "model.num_layers=1",
        "model.dropout=0.3",
        "model.tie_weights=true",
        "model.init=identity",
        "trainer.optimizer=adam",
        "trainer.lr=0.5",
        "trainer.clip=1",
        "trainer.batch_size=8",
        "trainer.bptt=12",
        "trainer.epochs=2",
        "trainer.max_steps=7",
        "seed=3",
    ]
    cfg = compose_cfg(keys)
    assert cfg.model.tie_weights is True and cfg.trainer.bptt == 12 and cfg.seed == 3


def test_unknown_key_is_rejected_by_struct_mode():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_cfg(["trainer.lrr=1"])


def test_imdb_dataset_picks_classifier_defaults_but_command_line_wins():
    cfg = compose_cfg(["dataset=imdb"])
    assert cfg.trainer.optimizer == "adam" and cfg.model._target_.endswith("CNNClassifier")
    cfg = compose_cfg(["dataset=imdb", "model=fasttext", "trainer.lr=0.5"])
    assert cfg.model._target_.endswith("FastText") and cfg.trainer.lr == 0.5 and cfg.trainer.optimizer == "adam"


def test_gru_is_the_language_model_and_gru_clf_the_classifier_each_with_its_keys_at_the_top():
    lm = build_model(
        compose_cfg(["model=gru", "model.emb_size=8", "model.hidden_size=8"]).model, None, "lm", vocab_size=20
    )
    cfg = compose_cfg(["dataset=imdb", "model=gru_clf", "model.hidden_size=6"])
    clf = build_model(cfg.model, None, "clf", vocab_size=20, num_classes=2, max_len=10, pad_idx=0)
    assert type(lm).__name__ == "RNNLanguageModel" and lm.cell == "GRU" and lm.hidden_size == 8
    assert type(clf).__name__ == "GRUClassifier" and clf.rnn.hidden_size == 6
    assert not set(TASK_KINDS) & set(compose_cfg(["model=gru"]).model)  # no other task's config nested inside


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["model=gru", "dataset=imdb"],
            "model='gru' is not allowed: a language model, and dataset=imdb is a classification dataset; "
            "use model=gru_clf",
        ),
        (
            ["model=lstm", "dataset=imdb"],
            "model='lstm' is not allowed: a language model, and dataset=imdb is a classification dataset; "
            "use a classifier, e.g. model=cnn",
        ),
        (
            ["model=gru_clf", "dataset=ptb", "trainer.optimizer=adam", "trainer.lr=0.01"],
            "model='gru_clf' is not allowed: a classifier, and dataset=ptb is a language-modelling dataset; "
            "use model=gru",
        ),
    ],
    ids=["gru-on-imdb", "lstm-on-imdb", "gru_clf-on-ptb"],
)
def test_a_model_of_the_other_task_is_refused_in_one_line_before_it_is_built(args, message):
    cfg = compose_cfg(args)
    kind = "clf" if "dataset=imdb" in args else "lm"
    with pytest.raises(ConfigError) as err:
        check_overrides_apply(cfg.model, kind, args)  # what train() calls, before the model is built
    assert str(err.value) == message
    with pytest.raises(ConfigError, match=re.escape("model._target_=")):  # the builder refuses it too
        build_model(cfg.model, None, kind, vocab_size=20, num_classes=2, max_len=10, pad_idx=0)


# ---------------------------------------------------------------- every model on every dataset it accepts


def test_the_tree_says_which_model_goes_with_which_dataset():
    # the rule the matrix below relies on, checked where the answer is known
    assert {name: dataset_kind(name) for name in ("ptb", "imdb")} == {"ptb": "lm", "imdb": "clf"}
    assert [model_kinds(name) for name in ("lstm", "gru", "cnn", "gru_clf")] == ["lm", "lm", "clf", "clf"]
    assert {dataset_kind(name) for name in DATASETS} == set(TASK_KINDS)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_composes_resolves_and_builds_on_every_dataset_it_accepts(name):
    kind = model_kinds(name)
    datasets = [d for d in DATASETS if dataset_kind(d) == kind]
    assert datasets, f"model={name} serves {kind}, which no dataset config yields"
    for dataset in datasets:
        kind = dataset_kind(dataset)
        cfg = compose_cfg([f"dataset={dataset}", f"model={name}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation (trainer.lr: ${model.recipe.lr}, ...)
        validate(cfg)
        sizes = (
            {"vocab_size": 40}
            if kind == "lm"
            else {"vocab_size": 40, "num_classes": 2, "max_len": cfg.dataset.max_len, "pad_idx": 0}
        )
        model = build_model(cfg.model, None, kind, **sizes)
        target = model_config(cfg.model, kind)["_target_"]
        assert f"{type(model).__module__}.{type(model).__name__}" == target, (dataset, kind)


# ---------------------------------------------------------------- every experiment preset, every size

PRESETS = [(name, size) for name in EXPERIMENTS for size in preset_sizes(name)]


@pytest.mark.parametrize("name,size", PRESETS, ids=[f"{n}-{s}" if s else n for n, s in PRESETS])
def test_every_experiment_preset_resolves_at_every_size_it_declares(name, size):
    cfg = compose_cfg(preset_args(name, size))
    OmegaConf.to_container(cfg, resolve=True)  # a misspelt ${sizes.${preset}.epoch} fails here
    validate(cfg)
    raw = experiment_yaml(name)
    for key, value in leaves({k: v for k, v in raw.items() if k not in ("defaults", "hydra", "sizes")}):
        got = OmegaConf.select(cfg, key, throw_on_missing=True)
        ref = SIZE_REF.fullmatch(value) if isinstance(value, str) else None
        if ref:  # this size's budget is the one in force
            assert got == raw["sizes"][size][ref.group(1)], key
        elif not (isinstance(value, str) and "${" in value):  # the preset's own values win over the defaults
            assert got == value, key


TABLES_WITH_CPU_AND_FULL = [n for n in EXPERIMENTS if {"cpu", "full"} <= set(preset_sizes(n))]


@pytest.mark.parametrize("name", TABLES_WITH_CPU_AND_FULL)
def test_the_cpu_size_runs_the_full_jobs_first_steps(name):
    # Issue 22: the cpu tables double as the check that every preset=full job starts without diverging,
    # which holds only if the two sizes differ in nothing but the budget (same model, init, lr, data).
    budget = {"trainer.epochs", "trainer.limit_batches", "preset"}
    for override in sweep_overrides(name) or [None]:
        args = [override] if override else []
        cpu, full = (
            {
                k: v
                for k, v in leaves(OmegaConf.to_container(compose_cfg([*preset_args(name, size), *args]), resolve=True))
                if k not in budget and not k.startswith("sizes.")
            }
            for size in ("cpu", "full")
        )
        assert cpu == full, (name, override)


SWEEPS = [(name, override) for name in EXPERIMENTS for override in sweep_overrides(name)]


@pytest.mark.parametrize("name,override", SWEEPS, ids=[f"{n}-{o}" for n, o in SWEEPS])
def test_every_value_an_experiment_sweeps_composes(name, override):
    # at the experiment's first size: the sizes only set the budget, checked above for each of them
    cfg = compose_cfg([*preset_args(name, preset_sizes(name)[0]), override])
    OmegaConf.to_container(cfg, resolve=True)
    validate(cfg)


def test_the_globs_found_the_presets_their_sizes_and_sweeps():
    # guards the parametrisations above against an empty glob or a YAML layout they no longer read
    assert EXPERIMENTS and {n for n, _ in PRESETS} == set(EXPERIMENTS)
    assert any(size is not None for _, size in PRESETS) and SWEEPS


# ---------------------------------------------------------------- what the LM configs build


@pytest.mark.parametrize(
    "args,cell",
    [
        (["model=lstm"], "LSTM"),
        (["model=gru"], "GRU"),
        (["model=rnn_tanh"], "RNN_TANH"),
        (["model=rnn_relu"], "RNN_RELU"),
        (["model=irnn"], "RNN_RELU"),
        (["model=irnn", "model.identity_scale=0.3"], "RNN_RELU"),
        (["experiment=irnn_question", "model=irnn"], "RNN_RELU"),
    ],
    ids=["lstm", "gru", "rnn_tanh", "rnn_relu", "irnn", "irnn_scale_0.3", "irnn_question"],
)
def test_lm_model_configs_build_the_named_cell_with_the_configured_init(args, cell):
    hidden = 8
    cfg = compose_cfg([*args, "model.emb_size=8", f"model.hidden_size={hidden}"])
    model = build_model(cfg.model, vocab=None, vocab_size=30)
    assert model.cell == cell
    recurrent = {n: p for n, p in model.rnn.named_parameters() if n.startswith("weight_hh")}
    assert len(recurrent) == cfg.model.num_layers
    if cfg.model.init == "identity":  # IRNN: every recurrent matrix is scale * I, every bias 0
        scale = cfg.model.identity_scale
        for n, w in recurrent.items():  # (a gated cell would hold one block per gate)
            assert torch.equal(w, (scale * torch.eye(hidden)).repeat(w.shape[0] // hidden, 1)), n
        assert all(not p.any() for n, p in model.rnn.named_parameters() if n.startswith("bias"))
    else:  # uniform: U(-r, r); io_uniform (the report's code): PyTorch's U(-1/sqrt(H), ...); no identity structure
        r = cfg.model.init_range if cfg.model.init == "uniform" else 1 / math.sqrt(hidden)
        for n, w in recurrent.items():
            assert w.abs().max() <= r and not torch.allclose(w[:hidden], w[:hidden].diag().diag()), n


# ---------------------------------------------------------------- each default in one place (issue 14)

TARGETED = [
    pytest.param(group, name, id=f"{group}={name}")
    for group, names in (("model", MODELS), ("dataset", DATASETS))
    for name in names
]


@pytest.mark.parametrize("group,name", TARGETED)
def test_a_key_the_yaml_sets_has_no_python_default(group, name):
    """The YAML is the one place a default lives: a constructor (loader) parameter that the composed
    configs/<group>/<name>.yaml sets must have no default of its own, or the two could drift apart."""
    cfg = OmegaConf.to_container(compose_cfg([f"{group}={name}"])[group])
    target = cfg.pop("_target_")
    params = inspect.signature(get_class(target) if group == "model" else get_method(target)).parameters
    keys = [k for k in cfg if k not in (*BUILDER_KEYS, *TRAINER_KEYS)]
    assert keys and set(keys) <= set(params), f"{name}.yaml sets keys {target} does not take"
    defaulted = {k: params[k].default for k in keys if params[k].default is not inspect.Parameter.empty}
    assert not defaulted, f"{target} repeats configs/{group}/{name}.yaml's defaults: {defaulted}"
