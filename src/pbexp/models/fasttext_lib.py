"""The fastText library (Joulin et al. 2017) as a baseline, run by the same ``pbexp-train`` command.

It trains itself (its own multi-threaded SGD; see ``self_trained``) and reads the same tokens as our
models, so the comparison is like for like.
Needs the optional extra: ``pip install 'pbexp[fasttext]'`` (fasttext-numpy2-wheel).
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch

from pbexp.checks import check_choice, check_int, check_number
from pbexp.errors import Diverged, PbexpError
from pbexp.models.self_trained import SelfTrainedModel

log = logging.getLogger(__name__)
LOSSES = ("softmax", "hs", "ns")


class FastTextLib(SelfTrainedModel):
    """Hyper-parameters are fastText's own (``dim``, ``epoch``, ``lr``, ``word_ngrams``, ``bucket``, ...)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,  # defaults: configs/model/fasttext_lib.yaml
        dim: int,
        epoch: int,
        lr: float,
        word_ngrams: int,
        bucket: int,
        min_count: int,
        loss: str,
        threads: int,
        seed: int,
    ):
        for key, value in (
            ("dim", dim),
            ("epoch", epoch),
            ("word_ngrams", word_ngrams),
            ("bucket", bucket),
            ("min_count", min_count),
            ("threads", threads),
        ):
            check_int(f"model.{key}", value)
        check_number("model.lr", lr, 0, low_open=True)
        check_choice("model.loss", loss, LOSSES)
        super().__init__(num_classes, pad_idx)
        self.params = dict(
            dim=dim,
            epoch=epoch,
            lr=lr,
            wordNgrams=word_ngrams,
            bucket=bucket,
            minCount=min_count,
            loss=loss,
            thread=threads,
            seed=seed,
            verbose=0,
        )
        self.epochs = epoch
        self.ft = None

    def set_threads(self, n: int) -> None:
        """trainer.num_threads, honoured by fastText's own loop."""
        self.params["thread"] = n

    def fit(self, task, run_dir: str | os.PathLike) -> None:
        try:
            import fasttext
        except ImportError as e:
            raise PbexpError("model=fasttext_lib needs the fastText library: pip install 'pbexp[fasttext]'") from e
        self.itos = task.data.vocab.itos
        x, y = task.splits["train"]
        fd, path = tempfile.mkstemp(dir=os.fspath(run_dir), prefix="fasttext-train.", suffix=".txt")
        try:
            # fastText reads the file in order with one pass per epoch: shuffle it (the split is sorted).
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.params["seed"]))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for label, line in zip(y[order].tolist(), self.lines(x[order])):
                    f.write(f"__label__{label} {line}\n")
            log.info("fastText library: training on %d examples (%s)", len(y), self.params)
            try:
                self.ft = fasttext.train_supervised(input=path, **self.params)
            except RuntimeError as e:
                if "NaN" not in str(e):
                    raise
                lr = self.params["lr"]
                raise Diverged(
                    f"fastText: {e} The learning rate {lr:g} may be too high (try model.lr={lr / 4:g}); "
                    "on very small data fastText also needs model.epoch >= 5"
                ) from e
        finally:
            os.unlink(path)
        self.ft.save_model(str(self.artifact(run_dir, "fasttext.bin")))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of each class, [B, num_classes], in class-index order."""
        labels, probs = self.ft.predict(self.lines(x), k=self.num_classes)
        out = torch.full((len(x), self.num_classes), -1e9)
        for i, (ls, ps) in enumerate(zip(labels, probs)):
            for label, p in zip(ls, ps):
                out[i, int(label.removeprefix("__label__"))] = float(max(p, 1e-12))
        return torch.where(out > 0, out.log(), out)
