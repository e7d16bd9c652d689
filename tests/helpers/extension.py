"""A model and a dataset from outside the package, as a researcher adds them: a module on their own import path
(``tinyext``: a stateless bigram language model, a mean-embedding classifier, a loader class for label,text CSV
files, and two models that break their contracts), the data files, and a ``--config-dir`` with their YAML."""

from __future__ import annotations

import random
import sys
from contextlib import contextmanager
from pathlib import Path

MODELS = '''
import torch
from torch import nn


class BigramLM(nn.Module):
    """A language model that carries no state: the next word's logits from the current word alone."""

    def __init__(self, vocab_size, emb_size):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.decoder = nn.Linear(emb_size, vocab_size)

    def init_hidden(self, batch_size, device=None):
        return None

    def forward(self, x, hidden):
        return self.decoder(self.embedding(x)).view(-1, self.decoder.out_features), None  # [T*B, V]


class NoHiddenLM(nn.Module):
    """Breaks the language-model contract: no init_hidden."""

    def __init__(self, vocab_size, emb_size):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.decoder = nn.Linear(emb_size, vocab_size)

    def forward(self, x, hidden):
        return self.decoder(self.embedding(x)), hidden


class MeanEmbeddingClassifier(nn.Module):
    def __init__(self, vocab_size, num_classes, max_len, pad_idx, emb_size):
        super().__init__()
        self.pad_idx = pad_idx
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.fc = nn.Linear(emb_size, num_classes)

    def forward(self, x):
        mask = (x != self.pad_idx).unsqueeze(-1).float()
        return self.fc((self.embedding(x) * mask).sum(1) / mask.sum(1).clamp(min=1))


class PerTokenClassifier(MeanEmbeddingClassifier):
    """Breaks the classifier contract: logits for every token, [B, max_len, C]."""

    def forward(self, x):
        return self.fc(self.embedding(x))
'''

DATA = '''
from pathlib import Path

import torch

from pbexp.data.base import ClassificationData
from pbexp.data.vocab import Vocab


class CsvReviews(ClassificationData):
    """<root>/{train,valid,test}.csv, one "label,text" line each; the vocabulary from the training split."""

    def __init__(self, root, max_len):
        rows = {}
        for split in ("train", "valid", "test"):
            lines = Path(root, f"{split}.csv").read_text(encoding="utf-8").splitlines()
            rows[split] = [line.split(",", 1) for line in lines]
        classes = sorted({label for label, _ in rows["train"]})
        vocab = Vocab(["<pad>", "<unk>"])
        for _, text in rows["train"]:
            for word in text.split():
                vocab.add(word)

        def tensors(split):
            x = torch.zeros(len(rows[split]), max_len, dtype=torch.long)
            for i, (_, text) in enumerate(rows[split]):
                ids = [vocab.stoi.get(w, 1) for w in text.split()][:max_len]
                x[i, : len(ids)] = torch.tensor(ids)
            return x, torch.tensor([classes.index(label) for label, _ in rows[split]])

        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = map(tensors, ("train", "valid", "test"))
        super().__init__(vocab, classes, max_len, train_x, train_y, valid_x, valid_y, test_x, test_y, pad_idx=0)
'''

CONFIGS = {
    "model/bigram_lm.yaml": """\
_target_: tinyext.models.BigramLM
emb_size: 16
recipe:
  optimizer: adam
  lr: 0.05
""",
    "model/no_hidden_lm.yaml": """\
defaults:
  - bigram_lm
  - _self_
_target_: tinyext.models.NoHiddenLM
""",
    "model/mean_clf.yaml": """\
_target_: tinyext.models.MeanEmbeddingClassifier
emb_size: 16
""",
    "model/per_token_clf.yaml": """\
defaults:
  - mean_clf
  - _self_
_target_: tinyext.models.PerTokenClassifier
""",
    "dataset/mycsv.yaml": """\
# @package _global_
defaults:
  - override /trainer: clf
  - override /model: mean_clf
  - _self_

dataset:
  _target_: tinyext.data.CsvReviews
  root: data/mycsv
  max_len: 8
""",
}

POSITIVE, NEGATIVE, NEUTRAL = (
    ["good", "great", "fine", "lovely"],
    ["bad", "awful", "dull", "poor"],
    "the film plot cast",
)


def write_csv_split(path: Path, n: int, rng: random.Random) -> None:
    """n reviews, "pos" or "neg", each with a word of its class among neutral ones (learnable, not trivial: some
    words of the other class too)."""
    lines = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        own, other = (POSITIVE, NEGATIVE) if label == "pos" else (NEGATIVE, POSITIVE)
        words = rng.sample(NEUTRAL.split(), 2) + [rng.choice(own)] + ([rng.choice(other)] if i % 5 == 0 else [])
        rng.shuffle(words)
        lines.append(f"{label},{' '.join(words)}\n")
    path.write_text("".join(lines), encoding="utf-8")


def write_extension(root: Path) -> tuple[Path, Path, Path]:
    """``root/ext/tinyext`` (the code), ``root/conf`` (the --config-dir) and ``root/data/mycsv`` (the CSV files);
    returns (import path, config dir, CSV folder)."""
    package = root / "ext" / "tinyext"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(MODELS.lstrip())
    (package / "data.py").write_text(DATA.lstrip())
    conf = root / "conf"
    for name, text in CONFIGS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    csv = root / "data" / "mycsv"
    csv.mkdir(parents=True)
    rng = random.Random(0)
    for split, n in (("train", 60), ("valid", 20), ("test", 30)):
        write_csv_split(csv / f"{split}.csv", n, rng)
    return root / "ext", conf, csv


@contextmanager
def importable(path: Path):
    """``tinyext`` importable from ``path`` in this process, and forgotten after (another test's tmp_path has its
    own copy)."""
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        for name in [m for m in sys.modules if m == "tinyext" or m.startswith("tinyext.")]:
            del sys.modules[name]
