"""Ready for the GPU on a machine without one (issue 23): a resume whose tensors go to another device than the
CPU, a checkpoint from a machine with more GPUs, torchrun with more processes than GPUs, trainer.compile on a
recurrent model. CUDA is faked where the code asks torch about it; the meta device stands in for a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers.configs import compose_cfg, make_model
from pbexp.errors import ConfigError, PbexpError
from pbexp.training import checkpoint as ckpt
from pbexp.training import distributed
from pbexp.training.logger import RunLogger
from pbexp.training.tasks import build_task
from pbexp.training.trainer import Trainer

CPU = torch.device("cpu")


def tiny_lm_trainer(tiny_lm_cfg, run_dir, device=CPU, model=None):
    from pbexp.config import instantiate
    from pbexp.models import build_model

    cfg = tiny_lm_cfg
    data = instantiate(cfg.dataset)
    task = build_task(data, cfg.trainer, device)
    if model is None:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.vocab, task.kind, **task.model_kwargs())
    return Trainer(cfg.trainer, task, model, run_dir, device, cfg.seed)


@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter")  # into meta weights: a no-op
def test_resume_onto_another_device_restores_the_cpu_rng_state(tiny_lm_cfg, tmp_path):
    # A resume on a GPU loaded the checkpoint onto the trainer's device, RNG state included, and torch takes only a
    # CPU ByteTensor. The meta device stands in for the GPU: the weights may go there, the RNG state may not.
    tiny_lm_cfg.model.dropout = 0.5  # training draws random numbers
    tiny_lm_cfg.trainer.max_steps = 3
    trainer = tiny_lm_trainer(tiny_lm_cfg, tmp_path)
    trainer.run_batches(RunLogger(tmp_path, enabled=False))
    trainer.save_last()
    after_save = torch.rand(5)  # what the generator gives right after the checkpoint was taken
    torch.manual_seed(1234)  # another state, as a fresh process would have
    on_meta = copy.deepcopy(trainer.model).to("meta")
    resumed = tiny_lm_trainer(tiny_lm_cfg, tmp_path, torch.device("meta"), on_meta)
    assert resumed.resume()
    assert (resumed.step, resumed.batch_in_epoch) == (3, 3)
    assert torch.equal(torch.rand(5), after_save)
    assert resumed.epoch_loss.device.type == "meta"  # the trainer's own tensors do go to its device


def test_a_mid_epoch_checkpoint_of_two_processes_is_refused_to_one(tiny_lm_cfg, tmp_path):
    # Its carried state and loss sums are two processes' halves of the batch: one process has no place for them.
    from pbexp.rundir import RunDir

    tiny_lm_cfg.trainer.max_steps = 3
    trainer = tiny_lm_trainer(tiny_lm_cfg, tmp_path)
    trainer.run_batches(RunLogger(tmp_path, enabled=False))
    trainer.save_last()
    last = RunDir(tmp_path).last
    state = ckpt.load(last)
    assert len(state["ranks"]) == 1 and state["batch_in_epoch"] == 3
    ckpt.save_atomic({**state, "ranks": state["ranks"] * 2}, last)  # as rank 0 of a two-process run writes it
    with pytest.raises(PbexpError) as e:
        tiny_lm_trainer(tiny_lm_cfg, tmp_path).resume()
    assert "\n" not in str(e.value) and "mid-epoch by 2 process" in str(e.value) and "nproc_per_node" in str(e.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_resume_on_the_gpu_restores_the_cpu_and_cuda_rng_states(tiny_lm_cfg, tmp_path):
    from pbexp.config import instantiate
    from pbexp.models import build_model

    cfg, cuda = tiny_lm_cfg, torch.device("cuda")
    cfg.model.dropout, cfg.trainer.max_steps = 0.5, 3
    data = instantiate(cfg.dataset)

    def trainer():
        task = build_task(data, cfg.trainer, cuda)
        model = build_model(cfg.model, data.vocab, task.kind, **task.model_kwargs()).to(cuda)
        return Trainer(cfg.trainer, task, model, tmp_path, cuda, cfg.seed)

    first = trainer()
    first.run_batches(RunLogger(tmp_path, enabled=False))
    first.save_last()
    after_save = torch.rand(5), torch.rand(5, device=cuda)
    torch.manual_seed(1234)
    resumed = trainer()
    assert resumed.resume() and resumed.step == 3
    assert torch.equal(torch.rand(5), after_save[0]) and torch.equal(torch.rand(5, device=cuda), after_save[1])
    assert resumed.epoch_loss.device.type == "cuda" and resumed.task.hidden[0].device.type == "cuda"


def test_checkpoint_from_a_machine_with_more_gpus_restores_the_ones_present(monkeypatch):
    # Saved on 2 GPUs, resumed on 1: device 1's state has no device to go to (torch raises for it).
    cpu = {k: v for k, v in ckpt.rng_state().items() if k != "cuda"}  # as they are now: restoring them changes nothing
    saved = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restored = []

    def set_rng_state(state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 1:
            raise IndexError("list index out of range")  # torch.cuda.default_generators[index] on a 1-GPU machine
        assert state.dtype == torch.uint8 and state.device.type == "cpu"
        restored.append((index, state.clone()))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)  # what set_rng_state_all calls
    monkeypatch.setattr(torch.cuda.random, "device_count", lambda: 1)
    ckpt.set_rng_state({**cpu, "cuda": saved})
    assert [i for i, _ in restored] == [0] and torch.equal(restored[0][1], saved[0])


@pytest.mark.parametrize("rank", [0, 1])
def test_more_processes_than_gpus_is_refused_in_one_line_on_every_rank(monkeypatch, rank):
    # torchrun --nproc_per_node=2 on a one-GPU machine: rank 1 would ask for cuda:1; rank 0 would wait for it.
    for key, value in {"RANK": rank, "WORLD_SIZE": 2, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": 2}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def never(*args, **kwargs):
        raise AssertionError("a GPU was picked or a process group joined before the refusal")

    monkeypatch.setattr(torch.cuda, "set_device", never)
    monkeypatch.setattr(torch.distributed, "init_process_group", never)
    with pytest.raises(PbexpError) as e:
        distributed.init(distributed.from_env(), torch.device("cuda"))
    msg = str(e.value)
    assert "\n" not in msg and "--nproc_per_node=1" in msg and "trainer.device=cpu" in msg, msg


def test_a_gpu_index_under_torchrun_is_refused(monkeypatch):
    # Each process takes the GPU of its local rank; trainer.device=cuda:1 would otherwise be ignored silently.
    for key, value in {"RANK": 0, "WORLD_SIZE": 2, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 2}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: None)
    with pytest.raises(ConfigError) as e:
        distributed.init(distributed.from_env(), torch.device("cuda", 1))
    assert e.value.key == "trainer.device" and e.value.value == "cuda:1"


def test_an_error_rank_0_raises_reaches_the_others_as_an_error_of_its_kind():
    # run_on_main sends rank 0's error to the others, which unpickle it: ConfigError's constructor takes three
    # arguments, so it does not unpickle, and a process failing there would leave rank 0 waiting.
    from pbexp.search import Pruned

    pruned = Pruned("trial 3 pruned after epoch 2")
    assert distributed._portable(pruned) is pruned
    sent = distributed._portable(ConfigError("trainer.lr", -1, "a number > 0"))
    assert type(sent) is PbexpError and str(sent) == "trainer.lr=-1 is not allowed: a number > 0 (on rank 0)"
    assert type(distributed._portable(ValueError("bad"))) is ValueError


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("lstm", {"vocab_size": 20, "emb_size": 8, "hidden_size": 8, "num_layers": 1}),
        ("gru_clf", {"vocab_size": 20, "num_classes": 2, "max_len": 12, "pad_idx": 0}),
    ],
)
def test_compile_is_refused_for_recurrent_models(tmp_path, name, sizes):
    cfg = compose_cfg(["trainer.compile=true"])
    model = make_model(name, **sizes)
    with pytest.raises(ConfigError) as e:
        Trainer(cfg.trainer, None, model, tmp_path, torch.device("cpu"), cfg.seed)  # the task plays no part here
    assert e.value.key == "trainer.compile" and e.value.value is True and "\n" not in str(e.value)
    assert "GRU" in str(e.value) or "LSTM" in str(e.value)  # it names what is recurrent


def test_compile_is_kept_for_models_without_recurrent_layers(tmp_path):
    cfg = compose_cfg(["dataset=imdb", "model=cnn", "trainer.compile=true"])
    model = make_model("cnn", vocab_size=20, num_classes=2, max_len=12, pad_idx=0)
    trainer = Trainer(cfg.trainer, None, model, tmp_path, torch.device("cpu"), cfg.seed)
    assert isinstance(trainer.net, torch._dynamo.eval_frame.OptimizedModule) and trainer.net._orig_mod is model
