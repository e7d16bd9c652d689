"""The numbers in a run's results recomputed independently from what a run leaves behind.

A tiny LM and a tiny classifier are trained through the real code (``pbexp.train.train``); then the best
checkpoint's weights are loaded into plain modules (the LM: the hand-written one of
helpers.word_language_model), the data is read from the text files written here, batched the way
pytorch/examples' word_language_model does it (or one review at a time), and the metrics are computed with
``F.cross_entropy`` / sklearn. Nothing of pbexp's evaluation, batching or metrics code is used for the
reference, so a bug there (a dropped last window, a wrong average) shows up
as a mismatch. Plus a hand-worked unit test of ``classification_metrics``.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch import nn

from helpers import word_language_model as ref
from helpers.configs import TINY_LM, compose_cfg
from helpers.data import read_ptb_reference, write_tree
from pbexp.rundir import RunDir
from pbexp.train import train
from pbexp.training.metrics import classification_metrics

# ---------------------------------------------------------------- language model


def reference_lm(state: dict) -> ref.ReferenceRNNModel:
    """The hand-written LSTM language model of helpers.word_language_model, sized from and loaded with a
    checkpoint's state dict."""
    vocab, emb = state["embedding.weight"].shape
    layers = sum(k.startswith("rnn.weight_ih_l") for k in state)
    model = ref.ReferenceRNNModel("LSTM", vocab, emb, state["rnn.weight_hh_l0"].shape[1], layers)
    model.load_state_dict(state, strict=True)  # every key used, none missing
    return model


def test_lm_valid_and_test_perplexity_match_an_independent_recomputation(tiny_ptb, tmp_path):
    bptt, eval_bsz = 8, 5
    run = RunDir(tmp_path / "run")
    results = train(compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", f"trainer.eval_batch_size={eval_bsz}"]), run)

    itos, ids = read_ptb_reference(tiny_ptb / "ptb")
    # vocab.txt is the training words in order of first appearance, so ids mean the same on both sides
    assert run.vocab.read_text(encoding="utf-8").splitlines() == itos
    model = reference_lm(torch.load(run.best, weights_only=True)["model"])
    # The sizes were picked so that both splits end in a short bptt window and valid has a ragged tail
    # (tokens that do not fill a column): counting either wrongly changes the number.
    assert len(ids["valid"]) % eval_bsz
    for split in ("valid", "test"):
        source = ref.batchify(ids[split], eval_bsz)
        assert (source.size(0) - 1) % bptt, f"{split}: pick sizes that leave a short last window"
        loss = ref.evaluate(model, source, bptt)
        assert results[f"{split}/loss"] == pytest.approx(loss, rel=1e-6), split
        assert results[f"{split}/ppl"] == pytest.approx(math.exp(loss), rel=1e-6), split


# ---------------------------------------------------------------- classifier

WORDS = [f"w{i}" for i in range(30)]


def noisy_reviews(n_train: int, n_test: dict, seed: int = 0):
    """Reviews of filler words plus a sentiment cue that is right only 3 times in 4, so the classifier
    makes mistakes both ways and the metrics are not all 1. ``n_test`` per label: unequal classes make
    macro precision and recall differ from accuracy (their micro versions). Lowercase words and single
    spaces only: ``text.split()`` is exactly the project's tokenisation."""
    rng = random.Random(seed)

    def text(label):
        cue = ("good" if label == "pos" else "awful") if rng.random() < 0.75 else rng.choice(["good", "awful"])
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        words.insert(rng.randrange(len(words) + 1), cue)
        return " ".join(words)

    counts = {("train", "neg"): n_train, ("train", "pos"): n_train, **{("test", k): n for k, n in n_test.items()}}
    return {
        (split, label): {i: (7 if label == "pos" else 2, text(label)) for i in range(n)}
        for (split, label), n in counts.items()
    }


class PlainKimCNN(nn.Module):
    """The Kim CNN from a checkpoint, in plain modules, run on one unpadded review at a time: every window
    that starts on a word (the last ones reach into <pad>), ReLU, max over windows, concat, linear."""

    def __init__(self, state: dict, pad: int):
        super().__init__()
        self.pad = pad
        self.embedding = nn.Embedding(*state["embedding.weight"].shape)
        shapes = [state[f"convs.{i}.weight"].shape for i in range(sum(k.startswith("convs.") for k in state) // 2)]
        self.convs = nn.ModuleList(nn.Conv1d(emb, filters, width) for filters, emb, width in shapes)
        self.fc = nn.Linear(state["fc.weight"].shape[1], state["fc.weight"].shape[0])
        self.load_state_dict(state, strict=True)

    @torch.no_grad()
    def forward(self, ids: list[int]) -> torch.Tensor:
        widest = max(c.kernel_size[0] for c in self.convs)
        e = self.embedding(torch.tensor(ids + [self.pad] * (widest - 1))).t()[None]  # [1, E, n + widest - 1]
        pooled = [F.relu(conv(e))[0, :, : len(ids)].max(1).values for conv in self.convs]
        return self.fc(torch.cat(pooled))


def test_classifier_metrics_match_sklearn_on_an_independent_forward_pass(tmp_path, monkeypatch):
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    max_len, eval_bsz = 12, 16
    reviews = noisy_reviews(n_train=60, n_test={"neg": 27, "pos": 18})
    write_tree(tmp_path / "data" / "imdb", reviews=reviews, noise=False)
    run = tmp_path / "run"
    cfg = compose_cfg(
        [
            "dataset=imdb",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.download=false",
            "dataset.cache=false",
            f"dataset.max_len={max_len}",
            "model=cnn",
            "model.emb_size=8",
            "model.filters=4",
            "model.widths=[2,3]",
            "trainer.epochs=3",
            "trainer.batch_size=8",
            "trainer.lr=0.05",
            f"trainer.eval_batch_size={eval_bsz}",
            "trainer.log_every=5",
        ]
    )
    results = train(cfg, run)

    itos = RunDir(run).vocab.read_text(encoding="utf-8").splitlines()
    stoi = {w: i for i, w in enumerate(itos)}
    model = PlainKimCNN(torch.load(RunDir(run).best, weights_only=True)["model"], stoi["<pad>"])

    def predict(items):
        """(labels, logits) of (label, text) pairs: head max_len words, unknown words -> <unk>."""
        logits = torch.stack([model([stoi.get(w, stoi["<unk>"]) for w in text.split()[:max_len]]) for _, text in items])
        return [label for label, _ in items], logits

    def split_items(split):
        return [
            (c, reviews[(split, name)][i][1])
            for c, name in enumerate(("neg", "pos"))
            for i in sorted(reviews[(split, name)])
        ]

    # valid is a seeded stratified tenth of train: its membership is the one thing taken from pbexp
    from pbexp.data.imdb import stratified_split

    train_items = split_items("train")
    _, valid_idx = stratified_split([c for c, _ in train_items], cfg.dataset.valid_fraction, cfg.dataset.split_seed)
    splits = {"valid": [train_items[i] for i in valid_idx], "test": split_items("test")}
    assert len(splits["test"]) % eval_bsz, "the last evaluation batch should be a partial one"

    for split, items in splits.items():
        y, logits = predict(items)
        pred = logits.argmax(-1).tolist()
        p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        expected = {
            "acc": accuracy_score(y, pred),
            "precision": p,
            "recall": r,
            "f1": f,
            "loss": F.cross_entropy(logits, torch.tensor(y)).item(),
        }
        for key, value in expected.items():
            assert results[f"{split}/{key}"] == pytest.approx(value, rel=1e-6, abs=1e-12), f"{split}/{key}"
        assert results[f"{split}/confusion"] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    # The check is only as sharp as the predictions are mixed: errors both ways and unequal classes, so
    # macro precision and recall are not the accuracy (their micro versions) and a swapped average shows.
    conf = results["test/confusion"]
    assert conf[0][1] and conf[1][0]
    assert results["test/precision"] != pytest.approx(results["test/acc"])
    assert results["test/recall"] != pytest.approx(results["test/acc"])


# ---------------------------------------------------------------- classification_metrics by hand


def test_classification_metrics_on_a_hand_counted_binary_confusion():
    # true neg: 4 predicted neg, 1 predicted pos; true pos: 3 predicted neg, 2 predicted pos
    y_true = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    y_pred = [0, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    m = classification_metrics(y_true, y_pred, ["neg", "pos"])
    assert m["confusion"] == [[4, 1], [3, 2]]
    assert m["acc"] == pytest.approx(6 / 10)
    # per class: neg P = 4/7, R = 4/5; pos P = 2/3, R = 2/5; F1 = 2PR / (P + R)
    p_neg, r_neg, p_pos, r_pos = 4 / 7, 4 / 5, 2 / 3, 2 / 5
    f_neg, f_pos = 2 * p_neg * r_neg / (p_neg + r_neg), 2 * p_pos * r_pos / (p_pos + r_pos)  # 2/3, 1/2
    assert (m["precision_neg"], m["recall_neg"], m["f1_neg"]) == pytest.approx((p_neg, r_neg, f_neg))
    assert (m["precision_pos"], m["recall_pos"], m["f1_pos"]) == pytest.approx((p_pos, r_pos, f_pos))
    # macro: the plain mean over classes (micro precision would be the accuracy, 0.6)
    assert m["precision"] == pytest.approx((4 / 7 + 2 / 3) / 2)  # 0.6190...
    assert m["recall"] == pytest.approx((4 / 5 + 2 / 5) / 2)  # 0.6
    assert m["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # 0.5833...


def test_classification_metrics_count_a_never_predicted_class_as_zero_precision():
    # three classes, each one true somewhere; "c" is never predicted, so its precision is 0 by the function's
    # convention (zero_division=0), not NaN. Confusion rows = true class, columns = predicted class.
    y_true = [0, 0, 1, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 0, 1]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion"] == [[1, 1, 0], [1, 2, 0], [1, 1, 0]]
    assert m["acc"] == pytest.approx(3 / 7)
    precision = [1 / 3, 2 / 4, 0.0]  # column sums 3, 4, 0
    recall = [1 / 2, 2 / 3, 0 / 2]  # row sums 2, 3, 2
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]  # 0.4, 4/7, 0
    for name, p, r, f in zip("abc", precision, recall, f1):
        assert (m[f"precision_{name}"], m[f"recall_{name}"], m[f"f1_{name}"]) == pytest.approx((p, r, f)), name
    assert m["precision"] == pytest.approx(sum(precision) / 3)
    assert m["recall"] == pytest.approx(sum(recall) / 3)
    assert m["f1"] == pytest.approx((0.4 + 4 / 7) / 3)
