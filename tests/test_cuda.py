"""CUDA-only checks, skipped on machines without a GPU. scripts/gpu_check.sh runs them (-m cuda) and fails
when one fails, or when torch sees no GPU there (they would all skip and pass)."""

import pytest
import torch

from helpers.configs import TINY_LM, compose_cfg
from pbexp.train import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_lm_trains_on_the_gpu(tiny_ptb, tmp_path, amp):
    cfg = compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.device=cuda", f"trainer.amp={amp}"])
    results = train(cfg, tmp_path / "run")
    assert results["status"] == "completed" and results["valid/ppl"] < 12


def test_gpu_and_cpu_give_close_results(tiny_ptb, tmp_path):
    cpu = train(compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.device=cpu"]), tmp_path / "cpu")
    gpu = train(compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}", "trainer.device=cuda"]), tmp_path / "gpu")
    assert gpu["valid/ppl"] == pytest.approx(cpu["valid/ppl"], rel=0.05)


def test_classification_batches_are_pinned_and_copied_to_the_gpu():
    from pbexp.data.base import ClassificationData
    from pbexp.data.vocab import Vocab
    from pbexp.training.tasks import ClassificationTask

    x, y = torch.randint(2, 10, (8, 5)), torch.randint(0, 2, (8,))
    data = ClassificationData(Vocab([str(i) for i in range(10)]), ["a", "b"], 5, x, y, x, y, x, y)
    task = ClassificationTask(data, batch_size=4, eval_batch_size=256, device="cuda")
    assert task.splits["train"][0].is_pinned()
    xb, yb = next(iter(task.train_batches(1, 0)))
    assert xb.is_cuda and yb.is_cuda
