"""The contract of a model that trains itself (the fastText library, scikit-learn): ``pbexp-train`` hands it
the task instead of running its own loop, then evaluates it like any classifier, so the metrics, TensorBoard
tags and results are the same as for the models we train.

A subclass implements ``fit(task, run_dir)`` (train on ``task.splits["train"]``, save its files at
``self.artifact(run_dir, name)``: ``RunDir(run_dir).artifact(name)``) and ``__call__(x) -> [B, num_classes]``
log-probabilities, and sets ``epochs``.
It reads the same tokens as our models (the dataset's vocabulary, truncation and ``<unk>``): ``lines``
turns a batch of ids back into space-separated text.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pbexp.rundir import RunDir


class SelfTrainedModel:
    epochs = 1  # passes over the training data, for the logs

    def __init__(self, num_classes: int, pad_idx: int):
        self.num_classes, self.pad_idx = num_classes, pad_idx
        self.itos: list[str] = []

    def set_threads(self, n: int) -> None:
        """trainer.num_threads; a library that runs on one thread ignores it."""

    def fit(self, task, run_dir: str | os.PathLike) -> None:
        raise NotImplementedError

    @staticmethod
    def artifact(run_dir: str | os.PathLike, name: str) -> Path:
        """Where the model saves its file ``name`` in the run directory (the folder made if missing)."""
        path = RunDir(run_dir).artifact(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lines(self, x: torch.Tensor) -> list[str]:
        return [" ".join(self.itos[i] for i in row.tolist() if i != self.pad_idx) for row in x]

    # The calls every model gets: train() moves it to the device and counts its parameters, the task's
    # evaluation puts it in eval mode. Nothing here for pbexp to optimise.
    def to(self, device):
        return self

    def eval(self):
        return self

    def parameters(self):
        return iter(())
