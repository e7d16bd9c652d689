"""Penn Treebank (Mikolov's preprocessed LM version): three text files, one sentence a line.

Each line is split on whitespace and ``<eos>`` appended, as pytorch/examples' ``Corpus`` does.
The vocabulary is built from the training file only, in order of first appearance, so index 0
is the first word of the corpus; valid/test words outside it are an error (the preprocessed
PTB maps rare words to ``<unk>`` already, so this only fires on a wrong file).
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
from pathlib import Path

import torch

from pbexp.data import locate
from pbexp.data.base import EOS, LMData
from pbexp.data.vocab import Vocab
from pbexp.errors import DataError
from pbexp.files import write_atomic

log = logging.getLogger(__name__)

FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
# The canonical archive of Mikolov's RNNLM toolkit; the three files inside are checked one by one.
ARCHIVE_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"


def read_lines(path: Path) -> list[list[str]]:
    """The words of each line, with ``<eos>`` appended. Raises DataError on empty or non-text files."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); expected PTB's one-sentence-a-line format") from e
    lines = [line.split() + [EOS] for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty; expected one sentence a line (PTB's ptb.*.txt format)")
    if any(len(w) > 100 for line in lines[:1000] for w in line):
        raise DataError(f"{path} does not look like PTB text (words over 100 characters); is it the right file?")
    return lines


def build_vocab(lines: list[list[str]]) -> Vocab:
    vocab = Vocab()
    for line in lines:
        for w in line:
            vocab.add(w)
    return vocab


def numericalise(lines: list[list[str]], vocab: Vocab, path: Path) -> torch.Tensor:
    ids = []
    for n, line in enumerate(lines, 1):
        for w in line:
            idx = vocab.stoi.get(w)
            if idx is None:
                raise DataError(
                    f"{path} line {n}: word {w!r} is not in the training vocabulary "
                    "(PTB maps rare words to <unk>; is this the right file?)"
                )
            ids.append(idx)
    return torch.tensor(ids, dtype=torch.long)


def download_ptb(dest: Path) -> Path:
    """Fetch the canonical archive and extract the three files (each sha256-checked) into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = locate.download(ARCHIVE_URL, Path(tmp) / "simple-examples.tgz")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for name, digest in SHA256.items():
                member = tar.getmember(f"./simple-examples/data/{name}")
                data = tar.extractfile(member).read()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise DataError(f"{name} in {ARCHIVE_URL} does not match its known sha256")
                write_atomic(dest / name, data)  # a disk error leaves no half-written file
    return dest


def load_ptb(root: str | Path, *, download: bool) -> LMData:
    """Find, read and numericalise PTB. See data/locate.py for where it looks. Defaults: configs/dataset/ptb.yaml."""
    names = list(FILES.values())
    folder = locate.find(root, "ptb", names)
    if folder is None and download:
        try:
            folder = download_ptb(Path(root) / "ptb")
        except (DataError, KeyError, tarfile.TarError, OSError) as e:
            raise locate.missing_error("Penn Treebank", root, "ptb", names, extra=f"(download failed: {e})") from e
    if folder is None:
        raise locate.missing_error("Penn Treebank", root, "ptb", names)
    log.info("reading Penn Treebank from %s", folder)
    lines = {split: read_lines(folder / name) for split, name in FILES.items()}
    vocab = build_vocab(lines["train"])
    tensors = {split: numericalise(lines[split], vocab, folder / FILES[split]) for split in FILES}
    log.info(
        "PTB: vocab %d, tokens train %d valid %d test %d",
        len(vocab),
        *(len(tensors[s]) for s in ("train", "valid", "test")),
    )
    return LMData(vocab=vocab, **tensors)
