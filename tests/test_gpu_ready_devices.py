"""Ready for the GPU and for several processes before either is lent (issue 23), checked on the CPU: labels
meet the logits of every classifier, strict determinism with cuBLAS's workspace set before CUDA starts, the
LM's carried state in fp32 under autocast, sparse gradients refused under NCCL, and a fast suite that cannot
reach a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers.cli import cli_env
from helpers.configs import CONFIG_DIR, TINY_LM, compose_cfg, make_model
from pbexp.config import validate
from pbexp.data.base import ClassificationData
from pbexp.data.vocab import Vocab
from pbexp.errors import ConfigError, DataError
from pbexp.models import model_kind
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.train import train
from pbexp.training import distributed, runtime
from pbexp.training.tasks import ClassificationTask

# Taken when this module is imported, before any test's fixtures patch it (tests/conftest.py).
REAL_IS_AVAILABLE = torch.cuda.is_available
MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
CLASSIFIERS = [n for n in MODELS if model_kind(compose_cfg([f"model={n}"]).model) == "clf"]
LANGUAGE_MODELS = [n for n in MODELS if n not in CLASSIFIERS]
# Small tables keep the tests fast (the fastText library's NaNs on this data with 1,000 buckets, and at random
# at its default lr 0.5: seen once in a full run on 2026-12-06).
SMALL = {"fasttext": {"buckets": 1000}, "fasttext_lib": {"bucket": 100_000, "threads": 1, "epoch": 5, "lr": 0.1}}


@pytest.fixture
def restore_determinism():
    """runtime.setup changes process-wide switches; put them back for the tests that follow."""
    mode, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture
def no_cublas_config(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "x")  # records the original, so the teardown restores it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


def tiny_clf_data(n=24, max_len=50, vocab=40, seed=0) -> ClassificationData:
    """Two classes told apart by the first token (2 or 3), the rest random, some rows padded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, vocab, (n, max_len), generator=g)
    y = torch.arange(n) % 2
    x[:, 0] = 2 + y
    x[torch.arange(n) % 3 == 0, max_len // 2 :] = 0
    words = Vocab(["<pad>", "<unk>", "good", "bad", *(f"w{i}" for i in range(4, vocab))])
    return ClassificationData(words, ["neg", "pos"], max_len, x, y, x, y, x, y)


# ---------------------------------------------------------------- 2: labels go where the logits are


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifiers_labels_meet_its_logits_whatever_the_runs_device(name, tmp_path):
    """The run's device is `meta` (no values: anything put there by mistake fails); the model answers where it
    answers (its weights' device, or the CPU for one that trains itself): the evaluation is computed there."""
    data = tiny_clf_data()
    on_cpu = ClassificationTask(data, batch_size=8, eval_batch_size=7)
    model = make_model(name, **on_cpu.model_kwargs(), **SMALL.get(name, {}))
    if isinstance(model, SelfTrainedModel):
        model.fit(on_cpu, tmp_path)
    elif hasattr(model, "fit_statistics"):
        model.fit_statistics(*data.split("train"))
    task = ClassificationTask(data, batch_size=8, eval_batch_size=7, device="meta")
    preds, loss = task.predict(model, "valid")
    model.eval()
    with torch.no_grad():
        logits = model(data.valid_x)
    assert torch.equal(preds, logits.argmax(-1))
    assert loss == pytest.approx(F.cross_entropy(logits, data.valid_y).item(), rel=1e-5)


# ---------------------------------------------------------------- 4: strict determinism, cuBLAS workspace first


def test_deterministic_setup_sets_the_cublas_workspace_before_asking_cuda(
    no_cublas_config, restore_determinism, monkeypatch
):
    seen = []  # CUBLAS_WORKSPACE_CONFIG at the first question to CUDA (trainer.device=auto asks)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: seen.append(os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
    cfg = compose_cfg(TINY_LM)
    assert cfg.trainer.deterministic is True and cfg.trainer.device == "auto"
    runtime.setup(cfg.trainer, cfg.seed)
    assert seen and seen[0] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_deterministic_must_be_a_bool():
    with pytest.raises(ConfigError, match="trainer.deterministic=1 is not allowed"):
        validate(compose_cfg([*TINY_LM, "trainer.deterministic=1"]))


def test_a_users_cublas_workspace_is_kept_and_false_turns_determinism_off(
    no_cublas_config, restore_determinism, monkeypatch
):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    torch.use_deterministic_algorithms(True)  # as an earlier run in this process (a sweep) left it
    cfg = compose_cfg([*TINY_LM, "trainer.deterministic=false"])
    runtime.setup(cfg.trainer, cfg.seed)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("fasttext_lib", "sklearn_linear")])
def test_a_training_step_of_every_model_runs_under_strict_determinism(name, no_cublas_config, restore_determinism):
    cfg = compose_cfg(TINY_LM)
    runtime.setup(cfg.trainer, cfg.seed)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    if name in LANGUAGE_MODELS:
        model = make_model(name, vocab_size=30, emb_size=8, hidden_size=8, num_layers=2)  # each config's dropout
        x = torch.randint(0, 30, (6, 3))
        out, _ = model(x[:-1], model.init_hidden(3))
        loss = F.cross_entropy(out.reshape(-1, 30), x[1:].reshape(-1))
    else:
        data = tiny_clf_data()
        kwargs = ClassificationTask(data, batch_size=8, eval_batch_size=8).model_kwargs()
        model = make_model(name, **kwargs, **SMALL.get(name, {}), **({"sparse": True} if name == "fasttext" else {}))
        if hasattr(model, "fit_statistics"):
            model.fit_statistics(*data.split("train"))
        loss = F.cross_entropy(model(data.train_x), data.train_y)
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # SGD takes the sparse gradients too
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


# ---------------------------------------------------------------- 5: the carried LM state under autocast


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_the_carried_hidden_state_keeps_the_weights_dtype_under_autocast(cell, dtype):
    model = make_model("lstm", vocab_size=30, cell=cell, emb_size=8, hidden_size=8, num_layers=2, dropout=0.0)
    x = torch.randint(0, 30, (5, 3))
    hidden = model.init_hidden(3)
    try:
        with torch.autocast("cpu", dtype=dtype):
            _, carried = model(x, hidden)
            _, raw = model.rnn(model.embedding(x), hidden)  # the RNN's own answer, in its autocast dtype
    except RuntimeError as e:
        pytest.skip(f"CPU autocast runs no {cell} in {dtype}: {str(e).splitlines()[0]}")
    carried, raw = (carried, raw) if cell == "LSTM" else ((carried,), (raw,))
    for h, r in zip(carried, raw):
        assert h.dtype == torch.float32
        assert torch.equal(h, r.float())


# ---------------------------------------------------------------- 7: sparse gradients and NCCL


@pytest.mark.parametrize(
    "world_size, device, refused",
    [(2, "cuda", True), (2, "cpu", False), (1, "cuda", False)],
    ids=["nccl", "gloo", "one-gpu"],
)
def test_a_sparse_model_is_refused_only_where_nccl_would_all_reduce(
    world_size, device, refused, tmp_path, monkeypatch, no_cublas_config, restore_determinism
):
    """experiment=imdb_fasttext_whole (model.sparse=true) as torchrun would start it; no data, so a run that
    gets past the check stops at the data instead."""
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)  # (CI sets it) dataset.root alone says where the data is
    monkeypatch.setattr(runtime, "pick_device", lambda name: torch.device(device))
    monkeypatch.setattr(distributed, "init", lambda world, dev: dev)  # the process group is not the point
    cfg = compose_cfg(["experiment=imdb_fasttext_whole", f"dataset.root={tmp_path / 'none'}", "dataset.download=false"])
    assert cfg.model.sparse is True
    with pytest.raises(Exception) as e:
        train(cfg, tmp_path / "run")
    if refused:
        assert isinstance(e.value, ConfigError) and e.value.key == "model.sparse" and "\n" not in str(e.value)
        assert str(e.value).startswith("model.sparse=True is not allowed: false when 2 processes train on GPUs")
    else:
        assert isinstance(e.value, DataError), e.value  # past the check, at the data


# ---------------------------------------------------------------- 8: the fast suite stays on the CPU


@pytest.fixture
def gpu_underneath(monkeypatch):
    """What torch would see on a GPU machine: a CUDA build with one device."""
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", lambda: 1, raising=False)
    assert REAL_IS_AVAILABLE()  # torch itself would reach a GPU here


def test_a_test_not_marked_cuda_cannot_reach_the_gpu(gpu_underneath):
    cfg = compose_cfg(TINY_LM)  # sets no device: trainer.device=auto
    assert runtime.pick_device(cfg.trainer.device) == torch.device("cpu")
    assert cli_env()["CUDA_VISIBLE_DEVICES"] == ""  # nor can a run it starts


@pytest.mark.cuda
def test_a_test_marked_cuda_sees_the_gpu(gpu_underneath):
    assert torch.cuda.is_available()
    assert "CUDA_VISIBLE_DEVICES" not in cli_env()
