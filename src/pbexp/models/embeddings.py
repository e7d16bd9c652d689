"""Pretrained word vectors in GloVe's text format (``word v1 v2 ... vd`` a line), plain or zipped."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pbexp.data.vocab import Vocab
from pbexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _lines(path: Path) -> Iterator[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.endswith(".txt")]
            if len(members) != 1:
                raise DataError(f"{path}: expected one .txt file inside the zip, found {members}")
            with zf.open(members[0]) as f:
                yield from io.TextIOWrapper(f, encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            yield from f


def read_vectors(path: str | Path, wanted: set[str] | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Vectors of the ``wanted`` words (all if None), and the file's dimension."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("model.pretrained", str(path), "an existing GloVe-format .txt or .zip file")
    vectors, dim = {}, None
    try:
        for n, line in enumerate(_lines(path), 1):
            parts = line.rstrip().split(" ")
            if len(parts) < 2:
                if not line.strip():
                    continue
                raise DataError(f"{path} line {n}: expected 'word v1 ... vd', got {line[:60]!r}")
            dim = dim or len(parts) - 1
            if len(parts) - 1 != dim:
                raise DataError(f"{path} line {n}: {len(parts) - 1} numbers, but earlier lines have {dim}")
            if wanted is None or parts[0] in wanted:
                try:
                    vec = torch.tensor([float(v) for v in parts[1:]])
                except ValueError as e:
                    raise DataError(f"{path} line {n}: not a number ({e})") from e
                if not torch.isfinite(vec).all():  # nan/inf would surface later as a 'diverged' run
                    raise DataError(f"{path} line {n}: the vector of {parts[0]!r} holds nan or inf")
                vectors[parts[0]] = vec
    except (UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a GloVe text file ({e})") from e
    if dim is None:
        raise DataError(f"{path} holds no vectors")
    return vectors, dim


def load_pretrained(embedding: nn.Embedding, vocab: Vocab, path: str | Path, freeze: bool = False) -> int:
    """Copy the vectors of vocab words found in ``path`` into ``embedding``; returns how many were found.

    Words not in the file keep their initialisation (and stay trainable unless ``freeze``).
    """
    vectors, dim = read_vectors(path, set(vocab.itos))
    if dim != embedding.embedding_dim:
        raise ConfigError(
            "model.pretrained",
            str(path),
            f"vectors of the model's emb_size ({embedding.embedding_dim}); this file has {dim}-d "
            f"vectors, so set model.emb_size={dim}",
        )
    with torch.no_grad():
        for word, vec in vectors.items():
            embedding.weight[vocab[word]] = vec
    embedding.weight.requires_grad_(not freeze)
    if not vectors:
        log.warning(
            "pretrained embeddings: none of the %d vocabulary words is in %s; the embedding keeps its "
            "random initialisation (a file for another language or casing?)",
            len(vocab),
            path,
        )
    log.info(
        "pretrained embeddings: %d of %d vocabulary words found in %s (%.1f %%)%s",
        len(vectors),
        len(vocab),
        path,
        100 * len(vectors) / len(vocab),
        ", frozen" if freeze else "",
    )
    return len(vectors)
