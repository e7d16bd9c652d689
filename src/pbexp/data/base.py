"""What a dataset module hands to the trainer: a vocabulary plus ready numericalised tensors.

A dataset module (one per dataset, configured by one YAML under configs/dataset/) is a callable
that returns one of these: a function, or a class deriving from one of them. The ``task`` attribute is the
dataset's kind: it picks the task object in training/tasks.py, and the task's words name the kind in messages
(no list of dataset names says which kind each one is).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pbexp.data.vocab import Vocab

EOS = "<eos>"  # the end-of-sentence token a language-modelling corpus appends to each line


@dataclass
class LMData:
    """A word-level language-modelling corpus: each split is one long 1-D stream of token ids."""

    vocab: Vocab
    train: torch.Tensor  # LongTensor [N_train]
    valid: torch.Tensor
    test: torch.Tensor
    task: str = field(default="lm", init=False)

    def training_sentences(self) -> list[torch.Tensor]:
        """The training stream cut after each end-of-sentence token (for word vectors trained on it)."""
        ends = (self.train == self.vocab[EOS]).nonzero().flatten() + 1
        return [s for s in torch.tensor_split(self.train, ends.tolist()) if len(s)]


@dataclass
class ClassificationData:
    """Fixed-length sequence classification: x is [N, max_len] token ids right-padded with
    ``pad_idx``; y is [N] class indices into ``classes``."""

    vocab: Vocab
    classes: list[str]
    max_len: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    pad_idx: int = 0
    task: str = field(default="clf", init=False)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def training_sentences(self) -> list[torch.Tensor]:
        """Each training example's tokens, pads dropped (for word vectors trained on them)."""
        return [row[row != self.pad_idx] for row in self.train_x]
