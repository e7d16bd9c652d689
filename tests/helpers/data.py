"""Tiny data written by the tests: a PTB-format corpus from a small grammar, an aclImdb tree (as a folder
and as a tar.gz), and an independent reader of PTB files to check the data module against."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import torch

# ---- PTB ----------------------------------------------------------------------------------------


def write_tiny_ptb(folder: Path, seed: int = 0, lines=(300, 40, 40)) -> Path:
    """A PTB-format corpus from a tiny grammar (learnable: the next word is often predictable)."""
    rng = random.Random(seed)
    subjects, verbs, objects = (
        ["the cat", "a dog", "the man", "she"],
        ["sees", "eats", "likes"],
        ["fish", "the ball", "N apples"],
    )

    def sentence():
        return f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} <unk> ."

    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), lines):
        (folder / f"ptb.{split}.txt").write_text("".join(f" {sentence()} \n" for _ in range(n)))
    return folder


def read_ptb_reference(folder: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """An independent read of ptb.{train,valid,test}.txt, as pytorch/examples' ``data.Corpus`` does it:
    each line's words plus ``<eos>``, the vocabulary in order of first appearance in train.
    Returns (itos, {split: LongTensor of ids}). (The files the tests use have no blank lines.)"""
    words = {
        split: [
            w
            for line in (folder / f"ptb.{split}.txt").read_text(encoding="utf-8").splitlines()
            for w in line.split() + ["<eos>"]
        ]
        for split in ("train", "valid", "test")
    }
    stoi: dict[str, int] = {}
    for w in words["train"]:
        stoi.setdefault(w, len(stoi))
    return list(stoi), {split: torch.tensor([stoi[w] for w in ws]) for split, ws in words.items()}


# ---- IMDB ---------------------------------------------------------------------------------------

COUNT = "one two three four five six seven eight nine ten"
N_TRAIN = 11  # per class; ids 0..10 so that numeric and text order differ (10 > 9 but "10" < "9")


def tiny_reviews() -> dict[tuple[str, str], dict[int, tuple[int, str]]]:
    """(split, label) -> {id: (rating, text)}. Every train review has a word of its own (uniq_...),
    test reviews use 'zebra', a word no train review has."""
    return {
        ("train", "pos"): {
            i: (7 + i % 4, f"Great film! uniq_train_pos_{i}<br /><br />{COUNT}") for i in range(N_TRAIN)
        },
        ("train", "neg"): {i: (1 + i % 4, f"Bad film... uniq_train_neg_{i}<br />{COUNT}") for i in range(N_TRAIN)},
        ("test", "pos"): {i: (10, f"A great zebra film, one two {i}") for i in range(3)},
        ("test", "neg"): {0: (1, COUNT.title()), 1: (2, "bad"), 2: (4, "Bad zebra.")},
    }


def write_tree(parent: Path, reviews=None, noise: bool = True) -> Path:
    """Write ``parent/aclImdb/...`` in the original layout (plus files that must be ignored); return aclImdb/."""
    top = parent / "aclImdb"
    for (split, label), items in (tiny_reviews() if reviews is None else reviews).items():
        d = top / split / label
        d.mkdir(parents=True, exist_ok=True)
        for rid, (rating, text) in items.items():
            (d / f"{rid}_{rating}.txt").write_text(text, encoding="utf-8")
    if noise:
        for d in ("train/unsup", "test/pos"):
            (top / d).mkdir(parents=True, exist_ok=True)
        (top / "README").write_text("Large Movie Review Dataset v1.0\n")
        (top / "imdb.vocab").write_text("the\nand\n")
        (top / "train" / "labeledBow.feat").write_text("9 0:9 1:1\n")
        (top / "train" / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0453418/usercomments\n")
        (top / "train" / "unsup" / "0_0.txt").write_text("unlabelled unsup_only_word")
        (top / "test" / "pos" / ".DS_Store").write_bytes(b"\x00\x01")
    return top


def write_archive(folder: Path, archive: Path, extra: list[tuple[str, bytes]] = ()) -> Path:
    """tar.gz of an aclImdb/ folder, members deliberately in reverse order (the reader must sort)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.rglob("*"), reverse=True)
    with tarfile.open(archive, "w:gz") as tf:
        for p in paths:
            tf.add(p, arcname=str(Path("aclImdb") / p.relative_to(folder)), recursive=False)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


def isolate_imdb(tmp_path: Path, monkeypatch) -> None:
    """For an IMDB test: no real data mirror, no network, no writes to ~/.cache."""
    from pbexp.data import imdb

    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    monkeypatch.setenv("PBEXP_CACHE_DIR", str(tmp_path / "user-cache"))

    def no_network(url, dest, sha256=None, timeout=30.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(imdb, "download", no_network)
