"""The model contracts (docs/ARCHITECTURE.md, "Model contracts"): every shipped model meets its task's; a model
that breaks one is refused before the first step in one line naming what is missing or misshapen; a language
model that carries no state (init_hidden gives None) trains, checkpoints and resumes."""

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from helpers.configs import TINY_LM, compose_cfg
from helpers.extension import importable, write_extension
from pbexp.data.base import ClassificationData, LMData
from pbexp.data.vocab import Vocab
from pbexp.errors import ModelContractError
from pbexp.models import build_model, model_kind
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.rundir import RunDir
from pbexp.train import CONFIG_DIR, train
from pbexp.training.tasks import ClassificationTask, LMTask

WORDS, CLASSES, MAX_LEN = 12, 2, 64  # max_len: the report's models read 50 words
MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


def lm_task() -> LMTask:
    stream = torch.arange(200) % WORDS
    data = LMData(Vocab(str(i) for i in range(WORDS)), stream, stream[:50], stream[:50])
    return LMTask(data, batch_size=4, bptt=5, eval_batch_size=2)


def clf_task() -> ClassificationTask:
    x = torch.randint(2, WORDS, (8, MAX_LEN), generator=torch.Generator().manual_seed(0))
    x[::2, MAX_LEN // 2 :] = 0  # some shorter reviews, right-padded
    y = torch.arange(8) % CLASSES
    data = ClassificationData(Vocab(str(i) for i in range(WORDS)), ["neg", "pos"], MAX_LEN, x, y, x, y, x, y)
    return ClassificationTask(data, batch_size=4, eval_batch_size=4)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_in_the_tree_meets_its_tasks_contract(name):
    cfg = compose_cfg([f"model={name}"]).model
    kind = model_kind(cfg)
    task = lm_task() if kind == "lm" else clf_task()
    model = build_model(cfg, None, kind, **task.model_kwargs())
    if isinstance(model, SelfTrainedModel):  # it answers only once it has fitted itself: its own contract
        return
    model.train()
    task.check_model(model)
    assert model.training  # the check's eval mode is undone


# ---------------------------------------------------------------- models that break a contract


class TinyLM(nn.Module):
    def __init__(self, stateless: bool = False):
        super().__init__()
        self.stateless = stateless
        self.embedding = nn.Embedding(WORDS, 4)
        self.rnn = nn.GRU(4, 4)
        self.decoder = nn.Linear(4, WORDS)

    def init_hidden(self, batch_size, device=None):
        return None if self.stateless else torch.zeros(1, batch_size, 4, device=device)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.embedding(x), hidden)
        return self.decoder(out), hidden


class NoInitHidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = nn.Embedding(WORDS, WORDS)

    def forward(self, x, hidden):
        return self.decoder(x), None


class NoForward(TinyLM):
    forward = nn.Module.forward


class LogitsOnly(TinyLM):
    def forward(self, x, hidden):
        return super().forward(x, hidden)[0]


class WrongVocabulary(TinyLM):
    def forward(self, x, hidden):
        logits, hidden = super().forward(x, hidden)
        return logits[..., :-1], hidden


class ListState(TinyLM):
    def init_hidden(self, batch_size, device=None):
        return [torch.zeros(1, batch_size, 4)]


class ForwardWithoutState(TinyLM):
    def forward(self, x):
        return super().forward(x, None)


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(WORDS, 4)
        self.fc = nn.Linear(4, CLASSES)

    def forward(self, x):
        return self.fc(self.embedding(x).mean(1))


class PerToken(TinyClassifier):
    def forward(self, x):
        return self.fc(self.embedding(x))


class WithAttention(TinyClassifier):
    def forward(self, x):
        return super().forward(x), x


class TokenIds(TinyClassifier):
    def forward(self, x):
        return super().forward(x).argmax(-1)


BROKEN = [
    (NoInitHidden, "language-model", "it has no init_hidden(batch_size, device) method"),
    (NoForward, "language-model", "it has no forward(x, hidden) method"),
    (LogitsOnly, "language-model", "returned a float32 tensor [3, 2, 12]; a language model returns (logits, hidden)"),
    (WrongVocabulary, "language-model", "gave logits as a float32 tensor [3, 2, 11]; expected [3, 2, 12] or [6, 12]"),
    (ListState, "language-model", "init_hidden(2, device) returned a list; it returns a tensor, a tuple of tensors"),
    (ForwardWithoutState, "language-model", "forward(x [3, 2] int64, hidden) raised TypeError"),
    (PerToken, "classifier", f"returned a float32 tensor [2, {MAX_LEN}, 2]; expected logits [2, 2]"),
    (WithAttention, "classifier", "returned a tuple of 2; expected logits [2, 2]"),
    (TokenIds, "classifier", "returned an int64 tensor [2]; expected logits [2, 2] floats"),
]


@pytest.mark.parametrize("cls, contract, problem", BROKEN, ids=[c[0].__name__ for c in BROKEN])
def test_a_model_that_breaks_its_contract_is_refused_in_one_line_naming_what_is_wrong(cls, contract, problem):
    task = lm_task() if contract == "language-model" else clf_task()
    with pytest.raises(ModelContractError) as e:
        task.check_model(cls())
    message = str(e.value)
    assert message.startswith(f"model {__name__}.{cls.__name__} does not meet the {contract} contract: "), message
    assert problem in message and "\n" not in message


def test_the_models_that_meet_it_pass():
    lm_task().check_model(TinyLM())
    lm_task().check_model(TinyLM(stateless=True))  # (logits, None) from init_hidden's None
    clf_task().check_model(TinyClassifier())


# ---------------------------------------------------------------- a stateless language model trains and resumes


@pytest.fixture
def bigram_cfg(tmp_path, tiny_ptb):
    """TINY_LM with tinyext.models.BigramLM (helpers/extension.py): no carried state, logits [T*B, V]."""
    ext, _, _ = write_extension(tmp_path / "user")

    def cfg(*overrides):
        cfg = compose_cfg(
            [*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.optimizer=adam", "trainer.lr=0.05", *overrides]
        )
        with open_dict(cfg):
            cfg.model = {"_target_": "tinyext.models.BigramLM", "emb_size": 8, "pretrained": None}
        return cfg

    with importable(ext):
        yield cfg


def test_a_stateless_language_model_trains_and_resumes_like_one_uninterrupted_run(bigram_cfg, tmp_path):
    straight = train(bigram_cfg("trainer.epochs=2"), tmp_path / "straight")
    assert straight["status"] == "completed" and straight["model"] == "BigramLM"
    assert straight["valid/ppl"] < 0.5 * WORDS  # a bigram model learns the tiny grammar
    cut = RunDir(tmp_path / "cut")
    train(bigram_cfg("trainer.epochs=1"), cut)  # its last checkpoint carries the task's state: no hidden state
    resumed = train(bigram_cfg("trainer.epochs=2"), cut)
    assert resumed["steps"] == straight["steps"]
    assert resumed["valid/ppl"] == straight["valid/ppl"] and resumed["test/loss"] == straight["test/loss"]
    examples = cut.read_test_examples()
    assert examples["loss_sum"].sum() / examples["tokens"].sum() == pytest.approx(resumed["test/loss"], rel=1e-9)
