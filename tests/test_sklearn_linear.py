"""The scikit-learn baseline (model=sklearn_linear) against NBSVM's independent implementation of the same
naive-Bayes ratios, and on a corpus it must separate."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers.configs import make_model
from pbexp.errors import ConfigError
from pbexp.models.classifiers import NBSVM
from pbexp.rundir import RunDir

WORDS = ["<pad>", "<unk>", "good", "bad", "film", "plot", "not", "great", "dull", "the"]


def task_of(x, y):
    return SimpleNamespace(data=SimpleNamespace(vocab=SimpleNamespace(itos=WORDS)), splits={"train": (x, y)})


def corpus(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, len(WORDS), (n, 7), generator=g)
    y = torch.arange(n) % 2
    x[y == 1, 0], x[y == 0, 0] = 2, 3  # "good" in positive reviews, "bad" in negative ones
    x[torch.arange(n) % 3 == 0, 5:] = 0  # some shorter reviews
    return x, y


def test_nb_ratios_agree_with_nbsvms_own_counting(tmp_path: Path):
    """Two implementations (sklearn's CountVectorizer on text, our hashing on ids) of the same ratios."""
    x, y = corpus()
    sk = make_model(
        "sklearn_linear", vocab_size=len(WORDS), num_classes=2, max_len=7, weighting="nb", ngrams=2, alpha=1.0
    )
    sk.fit(task_of(x, y), tmp_path)
    nb = make_model("nbsvm", vocab_size=len(WORDS), num_classes=2, max_len=7, ngrams=2, alpha=1.0)
    nb.fit_statistics(x, y)
    known = dict(zip(nb.keys.tolist(), nb.ratio[:, 1].tolist()))  # class 1 against the rest, as sklearn's
    vocab = sk.vectorizer.vocabulary_
    for word in ("good", "bad", "film", "not"):
        assert sk.ratio[vocab[word]] == pytest.approx(known[WORDS.index(word)], rel=1e-5)
    assert len(vocab) == sum(k != NBSVM.NO_KEY for k in known)  # the same set of features


@pytest.mark.parametrize("weighting", ["nb", "tfidf"])
def test_separates_a_separable_corpus_and_returns_log_probabilities(tmp_path: Path, weighting):
    x, y = corpus()
    model = make_model("sklearn_linear", vocab_size=len(WORDS), num_classes=2, max_len=7, weighting=weighting, C=10.0)
    model.fit(task_of(x, y), RunDir(tmp_path))  # as the trainer hands it in
    out = model(x)
    assert (out.argmax(1) == y).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(len(y)))
    assert RunDir(tmp_path).artifact("sklearn.pkl").exists()


@pytest.mark.parametrize(
    "hyper, key",
    [
        (dict(weighting="bm25"), "model.weighting"),
        (dict(ngrams=0), "model.ngrams"),
        (dict(C=0), "model.C"),
        (dict(min_df=1.5), "model.min_df"),
        (dict(alpha="1"), "model.alpha"),
    ],
)
def test_bad_hyper_parameters_name_the_key(hyper, key):
    with pytest.raises(ConfigError, match=key):
        make_model("sklearn_linear", vocab_size=len(WORDS), num_classes=2, max_len=7, **hyper)


def test_nb_weighting_needs_two_classes():
    with pytest.raises(ConfigError, match="model.weighting.*tfidf"):
        make_model("sklearn_linear", vocab_size=len(WORDS), num_classes=3, max_len=7, weighting="nb")
