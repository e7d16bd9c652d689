"""IMDB movie-review sentiment (aclImdb v1.0): reviews -> tokens -> fixed-length id tensors, cached.

Configured by ``configs/dataset/imdb.yaml``; :func:`load_imdb` is the entry point. The data is the
original ``aclImdb_v1.tar.gz`` (read as a stream, never extracted) or its extracted ``aclImdb/``
folder, laid out as ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``. With ``dataset.unsup=true``
the unlabelled reviews ``aclImdb/train/unsup/<id>_0.txt`` are read too; everything else in it
(``*.feat``, ``urls_*.txt``, README, ...) is ignored.

Steps: find the data (locate.py order, then a download) -> :func:`read_reviews` -> stratified
train/valid split of train -> tokenise (one process per core, tokenize_pool.py) -> vocabulary from
the train split only -> truncate and right-pad to ``max_len``. The result is cached (cache.py), keyed
by the data file and every setting that changes the tensors, so a second run only loads one file.

The unlabelled reviews are tokenised the same way (with the train split's vocabulary: they never add
a word to it) but belong to no split: they are :attr:`ImdbData.unlabelled`, and only word vectors
(``model.pretrained=word2vec``, through :meth:`ImdbData.training_sentences`) train on them.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import tarfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from pbexp.checks import check_bool, check_choice, check_int, check_number
from pbexp.data.base import ClassificationData
from pbexp.data.cache import TensorCache, file_fingerprint, tree_fingerprint
from pbexp.data.locate import download, missing_error, search_dirs
from pbexp.data.tokenize import TOKENIZER_VERSION
from pbexp.data.tokenize_pool import PAD, SPECIALS, TRUNCATE, UNK, tokenise_to_ids
from pbexp.data.vocab import Vocab
from pbexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SUBDIR = "imdb"
ARCHIVE = "aclImdb_v1.tar.gz"
FOLDER = "aclImdb"
NEEDED = [f"{ARCHIVE} (or its extracted {FOLDER}/)"]  # for the "not found" message
SPLITS = ("train", "test")
CLASSES = ["neg", "pos"]  # label index = position here
UNSUP = "unsup"  # the folder under train/ with the unlabelled reviews, and their Review.split
ORDER = (*SPLITS, UNSUP)  # read_reviews' order
CACHE_FORMAT = 1  # bump when the cached payload or the pipeline changes in a way the key does not see

_REVIEW_NAME = re.compile(r"(\d+)_(\d+)\.txt")
_LAYOUT = "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt"
_UNSUP_LAYOUT = "aclImdb/train/unsup/<id>_0.txt"


@dataclass(frozen=True)
class Review:
    split: str  # "train" or "test"; "unsup" for an unlabelled review (train/unsup/)
    label: int  # index into CLASSES: 0 = neg, 1 = pos; -1 for an unlabelled review
    rating: int  # the 1-10 star rating from the file name (0 for an unlabelled review)
    id: int
    text: str


@dataclass
class ImdbData(ClassificationData):
    """IMDB's labelled splits, plus the unlabelled reviews when ``dataset.unsup=true`` (else none).

    ``unlabelled``: one 1-D int64 id tensor per review of ``aclImdb/train/unsup/``, in id order, tokenised,
    cut to ``max_len`` and mapped through ``vocab`` (the train split's: a word of their own is ``<unk>``)
    exactly as a labelled review's row is, without the padding. They are in no split and have no label."""

    unlabelled: list[torch.Tensor] = field(default_factory=list, repr=False)

    def training_sentences(self) -> list[torch.Tensor]:
        """The text word vectors train on: each training example's tokens (pads dropped), then each unlabelled
        review's; never valid or test."""
        train = super().training_sentences()
        log.info(
            "IMDB: word-vector text: %d train reviews (%d tokens) + %d unlabelled reviews (%d tokens)%s",
            len(train),
            sum(len(s) for s in train),
            len(self.unlabelled),
            sum(len(s) for s in self.unlabelled),
            "" if self.unlabelled else " (dataset.unsup=false)",
        )
        return train + self.unlabelled


# --------------------------------------------------------------------------- reading


def read_reviews(path: str | Path, unsup: bool = False) -> list[Review]:
    """All labelled reviews of an ``aclImdb_v1.tar.gz`` archive or an extracted ``aclImdb/`` folder,
    sorted by (split: train then test, label, id) so both forms give the same list; with ``unsup`` the
    unlabelled reviews of ``train/unsup/`` follow them (split "unsup", label -1), sorted by id. One pass
    over an archive either way."""
    path = Path(path)
    if path.is_dir():
        if path.name != FOLDER and (path / FOLDER).is_dir():  # also accept the folder that holds aclImdb/
            path = path / FOLDER
        reviews = _read_folder(path, unsup)
    elif path.is_file():
        reviews = _read_archive(path, unsup)
    else:
        raise DataError(f"IMDB data {path} does not exist")
    if not any(r.split != UNSUP for r in reviews):
        raise DataError(f"no IMDB reviews in {path}: expected files laid out as {_LAYOUT}")
    reviews.sort(key=lambda r: (ORDER.index(r.split), r.label, r.id))
    return reviews


def _parse(parts: tuple[str, ...], where: str, unsup: bool = False) -> tuple[str, int, int, int] | None:
    """(split, label, rating, id) for a path ``split/label/<id>_<rating>.txt`` relative to aclImdb/ (with
    ``unsup`` also ``train/unsup/<id>_0.txt``: ("unsup", -1, 0, id)), or None for any other file (README,
    *.feat, ..., and unsup/ without ``unsup``)."""
    if len(parts) != 3 or parts[0] not in SPLITS or not parts[2].endswith(".txt"):
        return None
    unlabelled = unsup and parts[:2] == ("train", UNSUP)
    if parts[1] not in CLASSES and not unlabelled:
        return None
    m = _REVIEW_NAME.fullmatch(parts[2])
    if m is None:
        raise DataError(f"{where}: review file names must look like <id>_<rating>.txt, e.g. 0_9.txt")
    if unlabelled:
        return UNSUP, -1, int(m.group(2)), int(m.group(1))
    return parts[0], CLASSES.index(parts[1]), int(m.group(2)), int(m.group(1))


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not valid UTF-8 ({e}); IMDB reviews must be UTF-8 text") from e


def _review_dirs(unsup: bool) -> list[tuple[str, str]]:
    """The (split, label) folders under aclImdb/ that hold the reviews read."""
    return [(split, label) for split in SPLITS for label in CLASSES] + ([("train", UNSUP)] if unsup else [])


def _read_folder(folder: Path, unsup: bool) -> list[Review]:
    reviews = []
    for split, label in _review_dirs(unsup):
        d = folder / split / label
        if not d.is_dir():
            continue
        for entry in os.scandir(d):
            meta = _parse((split, label, entry.name), entry.path, unsup)
            if meta is not None and entry.is_file():
                try:
                    with open(entry.path, "rb") as f:
                        data = f.read()
                except OSError as e:
                    raise DataError(f"cannot read IMDB review {entry.path}: {e}") from e
                reviews.append(Review(*meta, text=_decode(data, entry.path)))
    return reviews


def _read_archive(archive: Path, unsup: bool) -> list[Review]:
    reviews = []
    try:
        # One sequential pass over the compressed stream ("r|"), nothing written to disk.
        with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tf:
            for member in tf:
                name = member.name
                parts = PurePosixPath(name).parts
                # We never extract, but a member like this means the archive is not what it claims to be.
                if name.startswith(("/", "\\")) or ".." in parts:
                    raise DataError(
                        f"{archive}: member {name!r} escapes the archive folder "
                        f"(absolute path or '..'); refusing to use this archive"
                    )
                if not member.isfile() or parts[:1] != (FOLDER,):
                    continue
                where = f"{archive}:{name}"
                meta = _parse(parts[1:], where, unsup)
                if meta is not None:
                    data = tf.extractfile(member).read()
                    reviews.append(Review(*meta, text=_decode(data, where)))
            # tarfile stops at the end-of-archive marker and takes a stream cut at a member boundary
            # for the end; reading the gzip stream to its end checks it is complete (end marker, CRC).
            while gz.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"{archive} is not a readable tar.gz archive (truncated or corrupt?): {e}. "
            f"Replace it with a good copy of {ARCHIVE} from {URL}"
        ) from e
    return reviews


# --------------------------------------------------------------------------- finding the data


def find_imdb(root: str | Path) -> Path | None:
    """The archive or extracted folder, looked for in locate.py's order (archive first in each folder)."""
    for d in search_dirs(root, SUBDIR):
        if (d / ARCHIVE).is_file():
            return d / ARCHIVE
        if (d / FOLDER).is_dir():
            return d / FOLDER
    return None


def _download(root: str | Path) -> Path:
    """Fetch the canonical archive into ``<root>/imdb/``. No checksum is published for it, so it is
    accepted when it reads as an archive with the expected layout (and deleted otherwise)."""
    dest = Path(root) / SUBDIR / ARCHIVE
    try:
        log.info("IMDB data not found locally; downloading %s to %s", URL, dest)
        download(URL, dest, sha256=None)
    except DataError as e:
        raise missing_error("IMDB", root, SUBDIR, NEEDED, extra=str(e)) from e
    try:
        reviews = read_reviews(dest)
        if not {r.split for r in reviews} >= set(SPLITS):
            raise DataError(f"{dest} lacks a train or test split")
    except DataError as e:
        dest.unlink(missing_ok=True)
        raise DataError(f"downloaded {URL} is not a usable IMDB archive (deleted it): {e}") from e
    return dest


# --------------------------------------------------------------------------- settings and cache


def _check_settings(max_len, max_vocab, min_freq, valid_fraction, split_seed, truncate, lowercase, unsup) -> None:
    check_int("dataset.max_len", max_len, 1, allowed="an integer >= 1 (tokens kept per review)")
    if max_vocab is not None:
        check_int(
            "dataset.max_vocab",
            max_vocab,
            len(SPECIALS) + 1,
            allowed=f"null (no limit) or an integer >= {len(SPECIALS) + 1} "
            f"(the size includes {' and '.join(SPECIALS)})",
        )
    check_int("dataset.min_freq", min_freq, 1)
    check_number(
        "dataset.valid_fraction",
        valid_fraction,
        0,
        1,
        low_open=True,
        high_open=True,
        allowed="a number strictly between 0 and 1",
    )
    check_int("dataset.split_seed", split_seed, 0)
    check_choice("dataset.truncate", truncate, TRUNCATE, allowed="one of head (keep the start), tail (keep the end)")
    check_bool("dataset.lowercase", lowercase)
    check_bool("dataset.unsup", unsup)


def _fingerprint(source: Path, unsup: bool) -> str:
    """Changes when the data changes: the archive, or every file in the review folders read."""
    if source.is_file():
        return file_fingerprint(source)
    files = [
        f"{split}/{label}/{name}"
        for split, label in _review_dirs(unsup)
        if (source / split / label).is_dir()
        for name in sorted(os.listdir(source / split / label))
    ]
    return tree_fingerprint(source, files)


def _cache(source: Path, settings: dict, cache_dir: str | Path | None) -> TensorCache:
    settings = dict(settings)
    unsup = settings.pop("unsup")
    fields = {"format": CACHE_FORMAT, "tokenizer": TOKENIZER_VERSION, "source": _fingerprint(source, unsup), **settings}
    if unsup:  # only then: the key of unsup=false is the one from before the option, so those caches stay good
        fields["unsup"] = True
    return TensorCache("imdb", fields, cache_dir)


# --------------------------------------------------------------------------- building the tensors


def stratified_split(labels: list[int], valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, valid) indices: a seeded random ``valid_fraction`` of each class goes to valid.
    (Same idea as sklearn's ``train_test_split(stratify=...)``, without its 1.4 s import on every cache miss.)"""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    valid = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_valid = round(valid_fraction * len(members))
        if not 0 < n_valid < len(members):
            raise ConfigError(
                "dataset.valid_fraction",
                valid_fraction,
                f"a fraction that puts some of every class in both train and valid; of the "
                f"{len(members)} {CLASSES[c]!r} training reviews it would put {n_valid} in valid",
            )
        valid.append(rng.permutation(members)[:n_valid])
    valid = np.sort(np.concatenate(valid))
    return np.setdiff1d(np.arange(len(labels)), valid), valid


def _build(source: Path, max_len, max_vocab, min_freq, valid_fraction, split_seed, truncate, lowercase, unsup) -> dict:
    t0 = time.perf_counter()
    log.info("IMDB: reading reviews%s from %s", " and unlabelled reviews" if unsup else "", source)
    reviews = read_reviews(source, unsup=True) if unsup else read_reviews(source)
    unlabelled = [r for r in reviews if r.split == UNSUP]  # last in ``reviews``
    reviews = reviews[: len(reviews) - len(unlabelled)]
    train = [r for r in reviews if r.split == "train"]
    test = [r for r in reviews if r.split == "test"]
    if not train or not test:
        raise DataError(
            f"{source} has {len(train)} train and {len(test)} test reviews; both splits are needed ({_LAYOUT})"
        )
    if unsup and not unlabelled:
        raise DataError(
            f"dataset.unsup=true but {source} has no unlabelled reviews ({_UNSUP_LAYOUT}): this copy leaves "
            f"them out; use the full {ARCHIVE} from {URL} (50,000 of them), or dataset.unsup=false"
        )
    train_idx, valid_idx = stratified_split([r.label for r in train], valid_fraction, split_seed)

    log.info(
        "IMDB: tokenising %d reviews + %d unlabelled (%.1f s so far)",
        len(reviews),
        len(unlabelled),
        time.perf_counter() - t0,
    )
    # The vocabulary sees the train split only: never valid, test or the unlabelled reviews (after them here).
    counted = [False] * (len(reviews) + len(unlabelled))
    for i in train_idx:
        counted[i] = True  # train reviews come first in ``reviews``

    def make_vocab(counts: Counter) -> Vocab:
        vocab = Vocab.from_counts(counts, SPECIALS, max_vocab, min_freq)
        if len(vocab) <= len(SPECIALS):
            raise DataError(
                f"IMDB vocabulary from {len(train_idx)} training reviews in {source} is empty with "
                f"min_freq={min_freq}: no token occurs that often; lower dataset.min_freq"
            )
        return vocab

    texts = [r.text for r in reviews] + [r.text for r in unlabelled]
    vocab, ids, lengths = tokenise_to_ids(texts, counted, lowercase, max_len, truncate, make_vocab)
    ids, unlabelled_ids = ids[: len(reviews)], ids[len(reviews) :]
    lengths, unlabelled_lengths = lengths[: len(reviews)], lengths[len(reviews) :]
    log.info(
        "IMDB: vocab %d words; tokens per review median %d, mean %.0f, %.0f%% longer than max_len=%d",
        len(vocab),
        np.median(lengths),
        lengths.mean(),
        100 * (lengths > max_len).mean(),
        max_len,
    )

    ids = torch.from_numpy(ids)
    labels = torch.tensor([r.label for r in reviews], dtype=torch.int64)
    # clone: a saved view would drag the whole [train + test] storage into the cache file
    train_x, train_y = ids[: len(train)], labels[: len(train)]
    test_x, test_y = ids[len(train) :].clone(), labels[len(train) :].clone()
    tri, vai = torch.from_numpy(train_idx), torch.from_numpy(valid_idx)
    payload = {
        "itos": vocab.itos,
        "classes": list(CLASSES),
        "max_len": max_len,
        "train_x": train_x[tri],
        "train_y": train_y[tri],
        "valid_x": train_x[vai],
        "valid_y": train_y[vai],
        "test_x": test_x,
        "test_y": test_y,
    }
    if unsup:
        # Kept apart, never in a split: each review's ids without the padding, end to end (their rows are
        # mostly padding), and each one's length to cut them apart again.
        kept = np.minimum(unlabelled_lengths, max_len)
        payload["unlabelled_ids"] = torch.from_numpy(unlabelled_ids[np.arange(max_len) < kept[:, None]])
        payload["unlabelled_lengths"] = torch.from_numpy(kept)
        log.info(
            "IMDB: %d unlabelled reviews, %d tokens kept (%.1f%% of them <unk>: outside the train split's "
            "vocabulary), %.0f%% longer than max_len",
            len(unlabelled),
            kept.sum(),
            100 * (payload["unlabelled_ids"] == UNK).float().mean().item() if kept.sum() else 0.0,
            100 * (unlabelled_lengths > max_len).mean(),
        )
    log.info("IMDB: built tensors in %.1f s", time.perf_counter() - t0)
    return payload


def load_imdb(
    root: str | Path,
    *,
    max_len: int,
    max_vocab: int | None,
    min_freq: int,
    valid_fraction: float,
    split_seed: int,
    truncate: str,
    lowercase: bool,
    unsup: bool,
    cache: bool,
    cache_dir: str | Path | None,
    download: bool,
) -> ImdbData:
    """IMDB as fixed-length id sequences with labels (neg=0, pos=1). Defaults: configs/dataset/imdb.yaml.

    ``max_vocab`` counts the specials too; ``valid_fraction`` of train (stratified, seeded by
    ``split_seed``) becomes the validation split; ``truncate`` keeps the head or the tail of long
    reviews. ``unsup=True`` also reads the 50,000 unlabelled reviews (``train/unsup/``) into
    ``ImdbData.unlabelled``, apart from every split (DataError when the data has none); the splits and
    the vocabulary are the same either way. ``cache_dir`` (None: the user's cache folder,
    ``locate.user_cache_dir``) holds the cached tensors; ``cache=False`` neither reads nor writes it.
    ``download=False`` fails at once when the data is not found instead of trying the network.
    """
    settings = dict(
        max_len=max_len,
        max_vocab=max_vocab,
        min_freq=min_freq,
        valid_fraction=valid_fraction,
        split_seed=split_seed,
        truncate=truncate,
        lowercase=lowercase,
        unsup=unsup,
    )
    _check_settings(**settings)
    check_bool("dataset.download", download)

    source = find_imdb(root)
    if source is None:
        if not download:
            raise missing_error("IMDB", root, SUBDIR, NEEDED, extra="(dataset.download=false, so not downloading)")
        source = _download(root)
    cached = _cache(source, settings, cache_dir) if cache else None
    payload = cached.load() if cached else None
    if payload is None:
        payload = _build(source, **settings)
        if cached:
            cached.save(payload)

    # ids are stored as int32 to halve the file; embeddings and losses want int64
    tensors = {f"{s}_{xy}": payload[f"{s}_{xy}"].long() for s in ("train", "valid", "test") for xy in "xy"}
    unlabelled = []
    if unsup:
        unlabelled = list(torch.split(payload["unlabelled_ids"].long(), payload["unlabelled_lengths"].tolist()))
    return ImdbData(
        vocab=Vocab(payload["itos"]),
        classes=list(payload["classes"]),
        max_len=payload["max_len"],
        pad_idx=PAD,
        **tensors,
        unlabelled=unlabelled,
    )
