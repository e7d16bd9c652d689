"""Every config in the tree composes with hydra.compose and builds what it names."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pbexp.train import CONFIG_DIR

from conftest import compose_cfg

MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
LM_MODELS = ["lstm", "gru", "rnn_tanh", "rnn_relu", "irnn"]


def test_default_is_lstm_on_ptb():
    cfg = compose_cfg()
    assert cfg.model.cell == "LSTM" and cfg.dataset._target_.endswith("load_ptb")
    assert cfg.trainer.optimizer == "sgd"


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_composes(name):
    cfg = compose_cfg([f"model={name}"])
    assert OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("name,cell,init", [("lstm", "LSTM", "uniform"), ("gru", "GRU", "uniform"),
                                            ("rnn_tanh", "RNN_TANH", "uniform"), ("rnn_relu", "RNN_RELU", "uniform"),
                                            ("irnn", "RNN_RELU", "identity")])
def test_lm_model_configs_build_the_named_cell(name, cell, init):
    from pbexp.models import build_model
    cfg = compose_cfg([f"model={name}", "model.emb_size=8", "model.hidden_size=8"])
    model = build_model(cfg.model, vocab=None, vocab_size=30)
    assert model.cell == cell and cfg.model.init == init


def test_public_override_names_exist():
    keys = ["model.emb_size=10", "model.hidden_size=10", "model.num_layers=1", "model.dropout=0.3",
            "model.tie_weights=true", "model.init=identity", "trainer.optimizer=adam", "trainer.lr=0.5",
            "trainer.clip=1", "trainer.batch_size=8", "trainer.bptt=12", "trainer.epochs=2", "trainer.max_steps=7",
            "seed=3"]
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


def test_gru_is_a_language_model_on_lm_data_and_a_classifier_on_clf_data():
    from pbexp.models import build_model, model_config
    cfg = compose_cfg(["model=gru", "model.emb_size=8", "model.hidden_size=8", "model.clf.hidden_size=6"])
    lm = build_model(cfg.model, None, "lm", vocab_size=20)
    clf = build_model(cfg.model, None, "clf", vocab_size=20, num_classes=2, max_len=10, pad_idx=0)
    assert type(lm).__name__ == "RNNLanguageModel" and lm.cell == "GRU"
    assert type(clf).__name__ == "GRUClassifier"
    assert "clf" not in model_config(cfg.model, "lm") and model_config(cfg.model, "clf")["hidden_size"] == 6
