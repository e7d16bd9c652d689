"""Shared fixtures: tiny data written by the tests, configs composed from the real config tree,
and a helper that runs the real CLI in a subprocess."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

# Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP threads
# spinning against other processes make them many times slower: one thread here and in every
# subprocess the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

torch.set_num_threads(1)

from pbexp.train import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PBEXP_DATA_MIRROR") or REPO.parent / "shared" / "data")


def write_tiny_ptb(folder: Path, seed: int = 0, lines=(300, 40, 40)) -> Path:
    """A PTB-format corpus from a tiny grammar (learnable: the next word is often predictable)."""
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "the man", "she"], ["sees", "eats", "likes"], ["fish", "the ball", "N apples"]
    def sentence():
        return f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} <unk> ."
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), lines):
        (folder / f"ptb.{split}.txt").write_text("".join(f" {sentence()} \n" for _ in range(n)))
    return folder


@pytest.fixture
def tiny_ptb(tmp_path) -> Path:
    """A data root holding ptb/ptb.*.txt."""
    write_tiny_ptb(tmp_path / "data" / "ptb")
    return tmp_path / "data"


TINY_LM = ["model.emb_size=16", "model.hidden_size=16", "model.num_layers=1", "model.dropout=0.0",
           "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=4", "trainer.log_every=5",
           "trainer.epochs=2", "trainer.lr=5", "trainer.checkpoint_every=0", "dataset.download=false"]


def compose_cfg(overrides=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def tiny_lm_cfg(tiny_ptb):
    return compose_cfg([*TINY_LM, f"dataset.root={tiny_ptb}"])


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PBEXP_DATA_MIRROR", "HYDRA_FULL_ERROR")}
    env.update(extra)
    return env


def free_port() -> int:
    """A free TCP port on localhost (for torchrun's rendezvous, the TensorBoard server)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args, cwd: Path, env=None, timeout: float = 240, module: str = "pbexp.train"):
    """Run ``python -m pbexp.train <args>`` for real; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def read_ptb_reference(folder: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """An independent read of ptb.{train,valid,test}.txt, as pytorch/examples' ``data.Corpus`` does it:
    each line's words plus ``<eos>``, the vocabulary in order of first appearance in train.
    Returns (itos, {split: LongTensor of ids}). (The files the tests use have no blank lines.)"""
    words = {split: [w for line in (folder / f"ptb.{split}.txt").read_text(encoding="utf-8").splitlines()
                     for w in line.split() + ["<eos>"]]
             for split in ("train", "valid", "test")}
    stoi: dict[str, int] = {}
    for w in words["train"]:
        stoi.setdefault(w, len(stoi))
    return list(stoi), {split: torch.tensor([stoi[w] for w in ws]) for split, ws in words.items()}


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """A test that runs Hydra in-process leaves root handlers bound to that test's captured stdout; once it is
    closed, every later log line turns into a 'Logging error' on stderr. Remove what each test added."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
