"""model.pretrained=word2vec: vectors trained on the training split only, cached, loaded into the embedding."""

import logging

import pytest
import torch
from omegaconf import OmegaConf

from helpers.configs import model_defaults
from pbexp.data.base import ClassificationData, LMData
from pbexp.data.vocab import Vocab
from pbexp.errors import ConfigError
from pbexp.models import build_model
from pbexp.models.embeddings import read_vectors
from pbexp.models.word2vec import word2vec_file

pytest.importorskip("gensim")

WORDS = ["<pad>", "<unk>", "good", "great", "fine", "bad", "awful", "poor", "film", "the", "<eos>"]


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PBEXP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def corpus(n=2000, seed=0):
    """good/great/fine always between "the" and "film"; bad/awful/poor always between <unk> and <eos>."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(3, (n,), generator=g).tolist()
    return [torch.tensor([9, 2 + w, 8]) if i % 2 else torch.tensor([1, 5 + w, 10]) for i, w in enumerate(words)]


def test_vectors_are_cached_by_corpus_and_learn_shared_contexts(user_cache, caplog, monkeypatch):
    from pbexp.models import word2vec

    monkeypatch.setitem(word2vec.SETTINGS, "sample", 0)  # every word here is "frequent": keep them all
    vocab = Vocab(WORDS)
    first = word2vec_file(corpus(), vocab, dim=16)
    assert first.parent == user_cache
    vectors, dim = read_vectors(first)
    assert dim == 16 and {"good", "bad", "film"} <= set(vectors)
    with caplog.at_level(logging.INFO, logger="pbexp.models.word2vec"):
        assert word2vec_file(corpus(), vocab, dim=16) == first
    assert "cached vectors" in caplog.text
    assert word2vec_file(corpus(seed=1), vocab, dim=16) != first  # other training text, other vectors
    cos = lambda a, b: torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0).item()
    assert min(cos("good", "great"), cos("bad", "awful")) > max(cos("good", "bad"), cos("great", "poor"))


def test_classification_sentences_drop_pads_and_lm_sentences_end_at_eos():
    vocab = Vocab(WORDS)
    x = torch.tensor([[2, 8, 0, 0], [5, 6, 7, 9]])
    clf = ClassificationData(vocab, ["neg", "pos"], 4, x, torch.tensor([1, 0]), x, x[:, 0], x, x[:, 0])
    assert [s.tolist() for s in clf.training_sentences()] == [[2, 8], [5, 6, 7, 9]]
    stream = torch.tensor([9, 8, 10, 2, 10, 5, 6])  # "the film <eos> good <eos> bad awful" (no final <eos>)
    lm = LMData(vocab, stream, stream, stream)
    assert [s.tolist() for s in lm.training_sentences()] == [[9, 8, 10], [2, 10], [5, 6]]


def test_build_model_loads_the_trained_vectors_into_the_embedding():
    vocab = Vocab(WORDS)
    cfg = OmegaConf.create(
        {
            **model_defaults("cnn"),
            "_target_": "pbexp.models.classifiers.CNNClassifier",
            "emb_size": 12,
            "widths": [2],
            "filters": 3,
            "pretrained": "word2vec",
            "freeze_embeddings": False,
        }
    )
    model = build_model(cfg, vocab, "clf", corpus, 0, vocab_size=len(WORDS), num_classes=2, max_len=5, pad_idx=0)
    vectors, _ = read_vectors(word2vec_file(corpus(), vocab, dim=12))
    for word in ("good", "bad", "film"):
        torch.testing.assert_close(model.embedding.weight[vocab[word]].detach(), vectors[word])


def test_a_model_without_an_embedding_refuses_pretrained_vectors():
    cfg = OmegaConf.create(
        {
            **model_defaults("nbsvm"),
            "_target_": "pbexp.models.classifiers.NBSVM",
            "max_features": 10,
            "pretrained": "word2vec",
            "freeze_embeddings": False,
        }
    )
    with pytest.raises(ConfigError, match="model.pretrained.*NBSVM has no word embedding"):
        build_model(cfg, Vocab(WORDS), "clf", corpus, 0, vocab_size=len(WORDS), num_classes=2, max_len=5, pad_idx=0)
