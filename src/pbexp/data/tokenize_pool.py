"""Texts -> vocabulary -> fixed-length id rows, tokenised in one process per core.

Tokenising is most of a cold build (pure-Python regex, see tokenize.py), so it runs in one process per
core. Each worker keeps its texts' tokens between the two steps: it sends its vocabulary counts, gets the
final vocabulary back and returns its id matrix, so no token list is ever sent between processes.

The rows use :data:`SPECIALS`: ``<pad>`` = 0 fills a short text's row, ``<unk>`` = 1 stands for a word
outside the vocabulary.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable

import numpy as np

from pbexp.data.tokenize import tokenize
from pbexp.data.vocab import Vocab

SPECIALS = ["<pad>", "<unk>"]  # so <pad> = 0 and <unk> = 1
PAD, UNK = 0, 1
TRUNCATE = ("head", "tail")  # which end of a long text is kept


def numericalise(token_lists: list[list[str]], itos: list[str], max_len: int, truncate: str) -> np.ndarray:
    """[N, max_len] int32 ids: each text cut to max_len tokens (its start or its end), right-padded with <pad>."""
    stoi = {w: i for i, w in enumerate(itos)}
    out = np.full((len(token_lists), max_len), PAD, dtype=np.int32)
    for row, toks in zip(out, token_lists):
        toks = toks[:max_len] if truncate == "head" else toks[-max_len:]
        row[: len(toks)] = [stoi.get(t, UNK) for t in toks]
    return out


def _tokenise_and_count(texts: list[str], counted: list[bool], lowercase: bool) -> tuple[list[list[str]], Counter]:
    tokens = [tokenize(t, lowercase) for t in texts]
    counts = Counter()
    for toks, c in zip(tokens, counted):
        if c:
            counts.update(toks)
    return tokens, counts


def _worker(conn, texts, counted, lowercase, max_len, truncate) -> None:
    tokens, counts = _tokenise_and_count(texts, counted, lowercase)
    conn.send((counts, [len(t) for t in tokens]))
    itos = conn.recv()
    conn.send(numericalise(tokens, itos, max_len, truncate))
    conn.close()


def _workers() -> int:
    """Tokenising processes: one per usable core (at most 8), or 1 where forking is unavailable or not allowed."""
    if "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return 1  # spawned workers would re-import torch (costs more than it saves); daemons may not have children
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


def tokenise_to_ids(
    texts: list[str],
    counted: list[bool],
    lowercase: bool,
    max_len: int,
    truncate: str,
    make_vocab: Callable[[Counter], Vocab],
) -> tuple[Vocab, np.ndarray, np.ndarray]:
    """(vocabulary, [N, max_len] int32 ids, int64 token count of each text). ``make_vocab`` turns the token
    counts of the ``counted`` texts (the training split: never valid or test) into the vocabulary, whose
    first words must be :data:`SPECIALS`; an error it raises stops the workers and reaches the caller."""
    n_proc = _workers()
    # Strided, not contiguous: counted and uncounted texts (train, test) are then spread evenly.
    chunks = [slice(i, None, n_proc) for i in range(n_proc)]
    ctx = mp.get_context("fork") if n_proc > 1 else None
    procs, conns = [], []
    try:
        for sl in chunks[1:]:  # this process does the first chunk itself
            here, there = ctx.Pipe()
            p = ctx.Process(
                target=_worker, args=(there, texts[sl], counted[sl], lowercase, max_len, truncate), daemon=True
            )
            p.start()
            there.close()
            procs.append(p)
            conns.append(here)
        tokens, counts = _tokenise_and_count(texts[chunks[0]], counted[chunks[0]], lowercase)
        lengths = np.zeros(len(texts), dtype=np.int64)
        lengths[chunks[0]] = [len(t) for t in tokens]
        for sl, conn in zip(chunks[1:], conns):
            c, n = conn.recv()
            counts.update(c)
            lengths[sl] = n
        vocab = make_vocab(counts)
        for conn in conns:
            conn.send(vocab.itos)
        ids = np.empty((len(texts), max_len), dtype=np.int32)
        ids[chunks[0]] = numericalise(tokens, vocab.itos, max_len, truncate)
        for sl, conn in zip(chunks[1:], conns):
            ids[sl] = conn.recv()
    except EOFError as e:
        raise RuntimeError("a tokeniser worker process died; see its traceback above") from e
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return vocab, ids, lengths
