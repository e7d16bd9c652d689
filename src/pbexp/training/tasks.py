"""What differs between the two kinds of run, so the trainer's loop has no ``if task == ...``.

A task knows how its batches are cut, what the loss is, whether a hidden state is carried
between batches, which metrics it reports, and what a model must do to serve it (``check_model``: the
contracts in docs/ARCHITECTURE.md). ``LMTask`` follows pytorch/examples' ``batchify`` / ``get_batch``;
``ClassificationTask`` shuffles fixed-length examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from pbexp.data.base import ClassificationData, LMData
from pbexp.errors import ModelContractError
from pbexp.training.metrics import classification_metrics, perplexity

if TYPE_CHECKING:
    from pbexp.training.logger import RunLogger


class Task(Protocol):
    """What the trainer, the evaluator and a self-training model need from a kind of run. A new kind of
    dataset (``data.task`` = its name) is a class with these members, registered in ``TASKS``."""

    kind: str  # "lm" | "clf": the dataset's data.task, and the key models.build_model reads
    unit: str  # what a step counts ("tokens", "examples"): perf/<unit>_per_s
    monitor: str  # the valid metric that picks the best checkpoint...
    monitor_mode: str  # ...and whether lower ("min") or higher ("max") is better
    metric_keys: tuple[str, ...]  # the metrics drawn as train-vs-valid charts in TensorBoard
    data: LMData | ClassificationData  # what the dataset module returned
    blowup_loss: float  # an evaluation loss above this (or not finite) is an explosion, never a result
    # For the line that refuses a model of another kind: "a language model", "a language-modelling dataset",
    # and a model config of this kind to name.
    model_words: str
    dataset_words: str
    example_model: str

    @classmethod
    def from_config(
        cls, data, trainer_cfg: DictConfig, device: torch.device | str, rank: int = 0, world_size: int = 1
    ) -> Task: ...
    def model_kwargs(self) -> dict: ...
    def num_batches(self) -> int: ...
    def start_epoch(self, model, epoch: int, seed: int) -> None: ...
    def train_batches(self, epoch: int, seed: int, start: int = 0) -> Iterator: ...
    def train_loss(self, model, batch) -> tuple[torch.Tensor, int]: ...
    def summarise(self, total_loss: float, count: int) -> dict: ...
    def eval_batches(self, split: str) -> int: ...
    def check_model(self, model) -> None: ...
    def evaluate(self, model, split: str, tick: Callable[[], None] | None = None) -> dict: ...
    def evaluate_examples(
        self, model, split: str, tick: Callable[[], None] | None = None
    ) -> tuple[dict, dict[str, np.ndarray]]: ...
    def log_extras(self, logger: RunLogger, split: str, metrics: dict, step: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``batch_size`` columns: [T, B], dropping the ragged tail.
    Column b holds tokens b*T ... (b+1)*T - 1, so each column is a contiguous piece of text."""
    n = stream.size(0) // batch_size
    return stream[: n * batch_size].view(batch_size, n).t().contiguous()


def check_lm_sizes(data: LMData, batch_size: int, bptt: int, eval_batch_size: int) -> None:
    """Sizes the data cannot fill fail here, not as a many-GB allocation after the model is built."""
    from pbexp.errors import ConfigError

    for key, size, split in (
        ("batch_size", batch_size, "train"),
        ("eval_batch_size", eval_batch_size, "valid"),
        ("eval_batch_size", eval_batch_size, "test"),
    ):
        tokens = getattr(data, split).numel()
        if size > tokens // 2:  # each column needs an input and a next-token target
            raise ConfigError(
                f"trainer.{key}",
                size,
                f"at most {tokens // 2} (the {split} split has {tokens} tokens; each batch column needs two or more)",
            )
    rows = data.train.numel() // batch_size
    if bptt > rows - 1:
        raise ConfigError(
            "trainer.bptt",
            bptt,
            f"at most {rows - 1}: each of the {batch_size} batch columns holds {rows} training tokens",
        )


def input_device(model) -> torch.device:
    """Where a model reads its input: where its weights are; a model without any (one that trains itself: the
    fastText library, scikit-learn) reads it on the CPU, whatever the run's device."""
    weight = next(iter(model.parameters()), None)
    return weight.device if weight is not None else torch.device("cpu")


def detach_hidden(h):
    """Cut the graph at the batch boundary (truncated BPTT) while keeping the values; None (a model that
    carries no state) stays None."""
    if h is None:
        return None
    return tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()


# ---- the model contracts (docs/ARCHITECTURE.md, "Model contracts"), checked before the first step --------------


@contextmanager
def evaluation_mode(model):
    """The model in eval mode without gradients (no dropout: no RNG drawn), its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def contract_error(model, contract: str) -> Callable[[str], ModelContractError]:
    """The error for ``model`` breaking ``contract`` ("language-model", "classifier"), given the problem found."""
    cls = type(model)
    return lambda problem: ModelContractError(f"{cls.__module__}.{cls.__qualname__}", contract, problem)


def shape_words(value) -> str:
    """What a model returned, for a message: a tensor's shape and dtype, else its type."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{'an' if dtype.startswith('int') else 'a'} {dtype} tensor {list(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def is_state(h) -> bool:
    """What a language model may carry between windows: a tensor, a tuple of tensors, or None (no state)."""
    return (
        h is None
        or isinstance(h, torch.Tensor)
        or (isinstance(h, tuple) and all(isinstance(t, torch.Tensor) for t in h))
    )


def check_has_forward(model, broken: Callable[[str], ModelContractError], signature: str) -> None:
    if not isinstance(model, nn.Module):
        raise broken(f"it is a {type(model).__name__}, not a torch.nn.Module")
    if type(model).forward is nn.Module.forward:
        raise broken(f"it has no {signature} method")


def call_forward(model, broken: Callable[[str], ModelContractError], signature: str, *args):
    """model(*args); a TypeError (a forward taking other arguments) is the contract's, in one line."""
    try:
        return model(*args)
    except TypeError as e:
        raise broken(f"{signature} raised TypeError: {str(e).splitlines()[0] if str(e) else ''}") from None


class LMTask:
    """Word-level language modelling; the primary metric is validation perplexity (lower is better)."""

    kind = "lm"
    unit = "tokens"
    monitor, monitor_mode = "ppl", "min"
    metric_keys = ("loss", "ppl")
    model_words, dataset_words, example_model = "a language model", "a language-modelling dataset", "lstm"

    @classmethod
    def from_config(
        cls, data: LMData, trainer_cfg: DictConfig, device: torch.device | str, rank: int = 0, world_size: int = 1
    ) -> LMTask:
        return cls(
            data, trainer_cfg.batch_size, trainer_cfg.bptt, trainer_cfg.eval_batch_size, device, rank, world_size
        )

    def __init__(
        self,
        data: LMData,
        batch_size: int,
        bptt: int,
        eval_batch_size: int,  # defaults: configs/trainer/lm.yaml
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data, self.bptt, self.device = data, bptt, torch.device(device)
        check_lm_sizes(data, batch_size, bptt, eval_batch_size)
        train = batchify(data.train, batch_size)
        # Data parallel: each rank takes its own slice of the batch columns.
        per_rank = batch_size // world_size
        self.train = train[:, rank * per_rank : (rank + 1) * per_rank].contiguous().to(self.device)
        self.eval = {s: batchify(getattr(data, s), eval_batch_size).to(self.device) for s in ("valid", "test")}
        self.hidden = None
        # Perplexity a thousand times a uniform guess over the vocabulary: no model that learned anything
        # scores that; a hidden state that grew without bound over the stream does (IRNN, issue 22).
        self.blowup_loss = math.log(len(data.vocab)) + math.log(1000)

    def model_kwargs(self) -> dict:
        return {"vocab_size": len(self.data.vocab)}

    def num_batches(self) -> int:
        return math.ceil((self.train.size(0) - 1) / self.bptt)

    def windows(self, source: torch.Tensor, start: int = 0):
        """(x, y) windows of ``bptt`` rows, y shifted by one token; the last window may be shorter."""
        for i in range(start * self.bptt, source.size(0) - 1, self.bptt):
            n = min(self.bptt, source.size(0) - 1 - i)
            yield source[i : i + n], source[i + 1 : i + 1 + n]

    def start_epoch(self, model, epoch: int, seed: int) -> None:
        self.hidden = model.init_hidden(self.train.size(1), self.device)

    def train_batches(self, epoch: int, seed: int, start: int = 0):
        return self.windows(self.train, start)

    def train_loss(self, model, batch) -> tuple[torch.Tensor, int]:
        """Mean token NLL of one window, carrying the hidden state from the previous window."""
        x, y = batch
        out, self.hidden = model(x, detach_hidden(self.hidden))
        return F.cross_entropy(out.reshape(-1, out.size(-1)), y.reshape(-1)), y.numel()

    def summarise(self, total_loss: float, count: int) -> dict:
        mean = total_loss / count
        return {"loss": mean, "ppl": perplexity(total_loss, count)}

    def eval_batches(self, split: str) -> int:
        return math.ceil((self.eval[split].size(0) - 1) / self.bptt)

    def check_model(self, model) -> None:
        """The language-model contract, by one forward pass on a tiny piece of the training stream on the run's
        device: ``init_hidden(batch_size, device)`` gives a tensor, a tuple of tensors or None (no carried state);
        ``forward(x [T, B] int64, hidden)`` gives ``(logits [T, B, V] or [T*B, V], hidden)`` of the same kinds."""
        broken = contract_error(model, "language-model")
        if not callable(getattr(model, "init_hidden", None)):
            raise broken(
                "it has no init_hidden(batch_size, device) method (a model that carries no state between windows "
                "returns None from it)"
            )
        check_has_forward(model, broken, "forward(x, hidden)")
        x = self.train[: min(3, self.train.size(0) - 1), :2]
        (steps, columns), words = x.shape, len(self.data.vocab)
        with evaluation_mode(model):
            hidden = model.init_hidden(columns, self.device)
            if not is_state(hidden):
                raise broken(
                    f"init_hidden({columns}, device) returned {shape_words(hidden)}; it returns a tensor, a tuple "
                    "of tensors, or None (no carried state)"
                )
            out = call_forward(model, broken, f"forward(x [{steps}, {columns}] int64, hidden)", x, hidden)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise broken(f"forward(x, hidden) returned {shape_words(out)}; a language model returns (logits, hidden)")
        logits, hidden = out
        allowed = ((steps, columns, words), (steps * columns, words))
        if not (isinstance(logits, torch.Tensor) and logits.is_floating_point() and tuple(logits.shape) in allowed):
            raise broken(
                f"forward(x [{steps}, {columns}] int64, hidden) gave logits as {shape_words(logits)}; expected "
                f"[{steps}, {columns}, {words}] or [{steps * columns}, {words}] floats (steps, batch columns, "
                "vocabulary)"
            )
        if not is_state(hidden):
            raise broken(
                f"forward(x, hidden) returned a hidden state {shape_words(hidden)}; it returns a tensor, a tuple of "
                "tensors, or None (no carried state)"
            )

    def evaluate(self, model, split: str, tick=None) -> dict:
        """Perplexity over the whole split; ``tick()`` after each of its ``eval_batches(split)`` windows."""
        return self.evaluate_examples(model, split, tick)[0]

    @torch.no_grad()
    def evaluate_examples(self, model, split: str, tick=None) -> tuple[dict, dict[str, np.ndarray]]:
        """The metrics of ``evaluate`` and, from the same pass, each piece of text's own: ``loss_sum`` (float64,
        nats summed) and ``tokens`` (int64) of each (window, batch column), in the order of the text (column b
        of window w at b * windows + w: the split's stream read from start to end). The loss is their sum over
        their tokens."""
        model.eval()
        source = self.eval[split]
        hidden = model.init_hidden(source.size(1), self.device)
        sums, tokens = [], []  # per window: [B] on the device; [B] tokens (each column has the window's rows)
        for x, y in self.windows(source):
            out, hidden = model(x, hidden)
            nll = F.cross_entropy(out.reshape(-1, out.size(-1)), y.reshape(-1), reduction="none")
            # summed in float64: the run's loss is the sum of these, so it equals the examples' to the last bits
            sums.append(nll.view(y.shape).double().sum(0))
            tokens.append(torch.full((y.size(1),), y.size(0), dtype=torch.int64))
            if tick is not None:
                tick()
        loss_sum, token_count = torch.stack(sums).t().cpu(), torch.stack(tokens).t()  # [B, W]: the text's order
        nll, count = loss_sum.sum().item(), int(token_count.sum())
        examples = {"loss_sum": loss_sum.reshape(-1).numpy(), "tokens": token_count.reshape(-1).numpy()}
        return {"loss": nll / count, "ppl": perplexity(nll, count)}, examples

    def log_extras(self, logger: RunLogger, split: str, metrics: dict, step: int) -> None:
        pass  # perplexity is all there is

    def state_dict(self) -> dict:
        return {"hidden": self.hidden}

    def load_state_dict(self, state: dict) -> None:
        h = state["hidden"]
        if isinstance(h, (tuple, list)):
            self.hidden = tuple(t.to(self.device) for t in h)
        else:  # a tensor, or None for a model that carries no state
            self.hidden = None if h is None else h.to(self.device)


class ClassificationTask:
    """Fixed-length sequence classification; the primary metric is validation accuracy."""

    kind = "clf"
    unit = "examples"
    monitor, monitor_mode = "acc", "max"
    metric_keys = ("loss", "acc", "f1")
    model_words, dataset_words, example_model = "a classifier", "a classification dataset", "cnn"

    @classmethod
    def from_config(
        cls,
        data: ClassificationData,
        trainer_cfg: DictConfig,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
    ) -> ClassificationTask:
        return cls(data, trainer_cfg.batch_size, trainer_cfg.eval_batch_size, device, rank, world_size)

    def __init__(
        self,
        data: ClassificationData,
        batch_size: int,
        eval_batch_size: int,  # defaults: configs/trainer/clf.yaml
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        # batch_size is the global batch: each of world_size processes takes its share.
        self.data, self.batch_size, self.eval_batch_size = data, batch_size // world_size, eval_batch_size
        self.device, self.rank, self.world_size = torch.device(device), rank, world_size
        self.blowup_loss = math.inf  # a confidently wrong classifier has a large loss and is still a result
        pin = self.device.type == "cuda"
        self.splits = {
            s: tuple(t.pin_memory() if pin else t for t in data.split(s)) for s in ("train", "valid", "test")
        }

    def model_kwargs(self) -> dict:
        return {
            "vocab_size": len(self.data.vocab),
            "num_classes": len(self.data.classes),
            "max_len": self.data.max_len,
            "pad_idx": self.data.pad_idx,
        }

    def num_batches(self) -> int:
        n = len(self.splits["train"][1]) // self.world_size
        return math.ceil(n / self.batch_size)

    def order(self, epoch: int, seed: int) -> torch.Tensor:
        """This rank's shuffled example indices: a function of (seed, epoch) only, so a resumed
        run sees the same order, and ranks see disjoint shares (a distributed sampler)."""
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(len(self.splits["train"][1]), generator=g)
        per_rank = len(perm) // self.world_size
        # Interleaved like DistributedSampler: step k of all ranks together covers the same examples
        # as step k of one process with the whole batch.
        return perm[self.rank :: self.world_size][:per_rank]

    def start_epoch(self, model, epoch: int, seed: int) -> None:
        pass

    def train_batches(self, epoch: int, seed: int, start: int = 0):
        x, y = self.splits["train"]
        idx = self.order(epoch, seed)
        nb = self.device.type == "cuda"
        for i in range(start * self.batch_size, len(idx), self.batch_size):
            j = idx[i : i + self.batch_size]
            yield x[j].to(self.device, non_blocking=nb), y[j].to(self.device, non_blocking=nb)

    def train_loss(self, model, batch) -> tuple[torch.Tensor, int]:
        x, y = batch
        return F.cross_entropy(model(x), y), y.numel()

    def summarise(self, total_loss: float, count: int) -> dict:
        return {"loss": total_loss / count}

    def eval_batches(self, split: str) -> int:
        return math.ceil(len(self.splits[split][1]) / self.eval_batch_size)

    @torch.no_grad()
    def predict(self, model, split: str, tick=None) -> tuple[torch.Tensor, float]:
        model.eval()
        x, y = self.splits[split]
        preds, total, where = [], 0.0, input_device(model)
        for i in range(0, len(y), self.eval_batch_size):
            logits = model(x[i : i + self.eval_batch_size].to(where))
            # The labels go where the logits are: a self-trained model answers on the CPU on a GPU run.
            yb = y[i : i + self.eval_batch_size].to(logits.device)
            total += F.cross_entropy(logits, yb, reduction="sum").item()
            preds.append(logits.argmax(-1).cpu())
            if tick is not None:
                tick()
        return torch.cat(preds), total / max(1, len(y))

    def check_model(self, model) -> None:
        """The classifier contract, by one forward pass on two training examples on the run's device:
        ``forward(x [B, max_len] int64)`` gives logits ``[B, num_classes]``."""
        broken = contract_error(model, "classifier")
        check_has_forward(model, broken, "forward(x)")
        x = self.splits["train"][0][:2].to(input_device(model))
        (batch, length), classes = x.shape, len(self.data.classes)
        with evaluation_mode(model):
            logits = call_forward(model, broken, f"forward(x [{batch}, {length}] int64)", x)
        if not (isinstance(logits, torch.Tensor) and logits.is_floating_point() and logits.shape == (batch, classes)):
            raise broken(
                f"forward(x [{batch}, {length}] int64) returned {shape_words(logits)}; expected logits "
                f"[{batch}, {classes}] floats (examples, classes)"
            )

    def evaluate(self, model, split: str, tick=None) -> dict:
        """Metrics over the whole split; ``tick()`` after each of its ``eval_batches(split)`` batches."""
        return self.evaluate_examples(model, split, tick)[0]

    def evaluate_examples(self, model, split: str, tick=None) -> tuple[dict, dict[str, np.ndarray]]:
        """The metrics of ``evaluate`` and, from the same predictions, each example's ``pred`` and ``label``
        (int64 class indices, in the split's order)."""
        preds, loss = self.predict(model, split, tick)
        labels = self.splits[split][1]
        out = classification_metrics(labels.numpy(), preds.numpy(), self.data.classes)
        out["loss"] = loss
        examples = {"pred": preds.numpy().astype(np.int64), "label": labels.numpy().astype(np.int64)}
        return out, examples

    def log_extras(self, logger: RunLogger, split: str, metrics: dict, step: int) -> None:
        """The confusion matrix, as a figure labelled with the class names."""
        logger.confusion(f"{split}/confusion", metrics["confusion"], self.data.classes, step)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# data.task -> the task class; a new kind of dataset registers its task here.
TASKS: dict[str, type[Task]] = {"lm": LMTask, "clf": ClassificationTask}


def build_task(
    data: LMData | ClassificationData,
    trainer_cfg: DictConfig,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
) -> Task:
    """The task object for a dataset's kind (``data.task``), sized by the trainer config."""
    if data.task not in TASKS:
        raise ValueError(f"unknown task kind {data.task!r}; known: {list(TASKS)}")
    return TASKS[data.task].from_config(data, trainer_cfg, device, rank, world_size)
