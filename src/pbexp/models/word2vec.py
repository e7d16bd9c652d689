"""Word vectors trained on the training split (and a dataset's unlabelled text), for ``model.pretrained=word2vec``.

Skip-gram with negative sampling (Mikolov et al. 2013), by gensim, over the training split's token ids as
words (so the vectors see exactly the model's tokens, ``<unk>`` included), plus the unlabelled reviews of
``dataset=imdb dataset.unsup=true`` (the dataset's ``training_sentences()`` says which); valid and test text
never shape them. Written in GloVe's text format to the user's cache folder, named by a hash of the corpus, the
vocabulary and the settings, then loaded like any pretrained file. Needs the optional extra
``pip install 'pbexp[word2vec]'``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from pathlib import Path

import torch

from pbexp.data.locate import user_cache_dir
from pbexp.data.vocab import Vocab
from pbexp.errors import PbexpError
from pbexp.files import write_atomic

log = logging.getLogger(__name__)
NAME = "word2vec"  # the value of model.pretrained that asks for these vectors
SETTINGS = dict(window=5, negative=5, epochs=5, min_count=1, sg=1, sample=1e-3)  # word2vec's defaults, skip-gram


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


def word2vec_file(sentences: list[torch.Tensor], vocab: Vocab, dim: int, seed: int = 0) -> Path:
    """The cached vectors file for these training ``sentences`` (1-D id tensors: the training split's, then any
    unlabelled text's), trained if missing."""
    h = hashlib.sha256(repr((dim, seed, SETTINGS, vocab.itos)).encode())
    for s in sentences:
        h.update(s.numpy().tobytes())
    path = user_cache_dir() / f"word2vec-{h.hexdigest()[:16]}.txt"
    if path.is_file():
        log.info("word2vec: cached vectors %s", path)
        return path
    try:
        from gensim.models import Word2Vec
    except ImportError as e:
        raise PbexpError("model.pretrained=word2vec needs gensim: pip install 'pbexp[word2vec]'") from e
    words = [[vocab.itos[i] for i in s.tolist()] for s in sentences]
    log.info(
        "word2vec: training %d-d skip-gram vectors on %d sentences (%d tokens) ...",
        dim,
        len(words),
        sum(map(len, words)),
    )
    t0 = time.perf_counter()
    logging.getLogger("gensim").setLevel(logging.WARNING)  # its INFO is a progress line a second
    # One worker and a fixed string hash (gensim seeds each word's initial vector with Python's salted
    # hash()): the same corpus and seed give the same vectors in every process.
    model = Word2Vec(words, vector_size=dim, seed=seed, workers=1, hashfxn=_stable_hash, **SETTINGS)
    # atomic: a concurrent run sees no file or the whole file
    write_atomic(
        path,
        "".join(
            word + " " + " ".join(f"{v:.6f}" for v in model.wv[word].tolist()) + "\n" for word in model.wv.index_to_key
        ),
    )
    log.info("word2vec: %d vectors in %.0f s -> %s", len(model.wv), time.perf_counter() - t0, path)
    return path
