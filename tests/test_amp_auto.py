"""trainer.amp=auto: bf16 exactly where the hardware has it natively (oneDNN's own report on a CPU), said in the
log and in the run's results ("precision")."""

import pytest
import torch

from helpers.cli import run_cli
from helpers.configs import TINY_LM
from helpers.data import write_tiny_ptb
from pbexp.rundir import RunDir
from pbexp.training import trainer

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpus_native_bf16_and_bf16_falls_back_without_it(monkeypatch, native):
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: native)
    assert trainer.use_bf16("auto", CPU) is native
    assert trainer.use_bf16("bf16", CPU) is native  # asked for, but never the ~10x slower emulation
    assert trainer.use_bf16("none", CPU) is False


def test_a_run_with_auto_says_which_precision_it_trained_in(tmp_path):
    root = write_tiny_ptb(tmp_path / "data")
    done = run_cli([*TINY_LM, "trainer.epochs=1", "trainer.amp=auto", f"dataset.root={root}",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # oneDNN, asked directly
    assert RunDir(tmp_path / "run").read_results()["precision"] == ("bf16" if native else "fp32")
    assert ("trainer.amp=auto: bf16" if native else "trainer.amp=auto: fp32") in done.stdout + done.stderr
