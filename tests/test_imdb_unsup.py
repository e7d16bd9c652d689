"""dataset.unsup=true: IMDB's unlabelled reviews (aclImdb/train/unsup/) read apart from every split, tokenised
like the labelled ones with the train split's vocabulary, cached, and used by model.pretrained=word2vec only."""

import functools
import logging
import os
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath

import pytest
import torch
from omegaconf import OmegaConf

import pbexp.data.imdb as imdb
from helpers.cli import main_in_process
from helpers.configs import load_dataset, model_defaults
from helpers.data import COUNT, isolate_imdb, tiny_reviews, write_archive, write_tree
from pbexp.data.cache import cache_key, file_fingerprint
from pbexp.data.tokenize import TOKENIZER_VERSION, tokenize
from pbexp.data.tokenize_pool import PAD, UNK
from pbexp.errors import ConfigError, DataError

REAL_DATA = Path(os.environ.get("PBEXP_DATA_MIRROR", "/work/shared/data")) / "imdb" / "aclImdb_v1.tar.gz"

# The unlabelled reviews of the tiny tree, by id (numeric order 0, 2, 3, 10 differs from the names' text order),
# and their tokens worked out by hand from tokenize.py's rules: lowercase, <br /> is a space, punctuation apart.
UNSUP = {
    3: "Great FILM!<br />One zebra, two.",
    10: "ten nine eight seven six five four three two one unsup_only_word",
    0: "",
    2: "BAD film... Bad bad",
}
UNSUP_TOKENS = {
    0: [],
    2: ["bad", "film", ".", ".", ".", "bad", "bad"],
    3: ["great", "film", "!", "one", "zebra", ",", "two", "."],
    10: ["ten", "nine", "eight", "seven", "six", "five", "four", "three", "two", "one", "unsup_only_word"],
}
NOT_IN_TRAIN = {"zebra", ",", "unsup_only_word"}  # in no train review of tiny_reviews(): <unk>


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate_imdb(tmp_path, monkeypatch)


def write_unsup_tree(parent: Path, unsup=UNSUP) -> Path:
    """tiny_reviews() in the aclImdb layout (README, *.feat, ... too) plus ``unsup`` as train/unsup/<id>_0.txt."""
    top = write_tree(parent)
    (top / "train" / "unsup" / "0_0.txt").unlink()  # write_tree's own unlabelled review
    for rid, text in unsup.items():
        (top / "train" / "unsup" / f"{rid}_0.txt").write_text(text, encoding="utf-8")
    return top


@pytest.fixture
def folder_root(tmp_path) -> Path:
    write_unsup_tree(tmp_path / "folder-root" / "imdb")
    return tmp_path / "folder-root"


@pytest.fixture
def archive_root(tmp_path) -> Path:
    write_archive(write_unsup_tree(tmp_path / "src"), tmp_path / "archive-root" / "imdb" / "aclImdb_v1.tar.gz")
    return tmp_path / "archive-root"


@pytest.fixture
def builds(monkeypatch):
    """The settings of each build of the tensors (i.e. each time the cache was not used)."""
    calls = []
    real = imdb._build

    def counting(source, **settings):
        calls.append(settings)
        return real(source, **settings)

    monkeypatch.setattr(imdb, "_build", counting)
    return calls


def expected_ids(tokens: list[str], vocab, max_len: int, truncate: str = "head") -> list[int]:
    kept = tokens[:max_len] if truncate == "head" else tokens[-max_len:]
    return [vocab.stoi.get(w, UNK) for w in kept]


def rows(x: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(r[r != PAD].tolist()) for r in x]


# --------------------------------------------------------------------------- the tiny tree


@pytest.mark.parametrize("form", ["archive", "folder"])
@pytest.mark.parametrize("truncate", ["head", "tail"])
def test_unlabelled_tokens_match_the_hand_computed_ones(form, truncate, archive_root, folder_root):
    root = archive_root if form == "archive" else folder_root
    d = load_dataset("imdb", root=root, max_len=8, truncate=truncate, unsup=True)
    assert [t.dtype for t in d.unlabelled] == [torch.int64] * 4 and all(t.dim() == 1 for t in d.unlabelled)
    ids = sorted(UNSUP_TOKENS)  # id order
    assert [t.tolist() for t in d.unlabelled] == [expected_ids(UNSUP_TOKENS[i], d.vocab, 8, truncate) for i in ids]
    # spelled out for two of them: <unk> for the words no train review has, the head or the tail of a long one
    great, film, one, two = (d.vocab[w] for w in ("great", "film", "one", "two"))
    assert d.unlabelled[2].tolist() == [great, film, d.vocab["!"], one, UNK, UNK, two, d.vocab["."]]
    if truncate == "head":
        kept = [d.vocab[w] for w in ("ten", "nine", "eight", "seven", "six", "five", "four", "three")]
    else:  # the last 8, unsup_only_word (-> <unk>) last
        kept = [d.vocab[w] for w in ("seven", "six", "five", "four", "three", "two", "one")] + [UNK]
    assert d.unlabelled[3].tolist() == kept
    assert not any(w in d.vocab for w in NOT_IN_TRAIN)


def test_archive_and_folder_give_the_same_unlabelled_reviews(archive_root, folder_root):
    from_archive = imdb.read_reviews(archive_root / "imdb" / "aclImdb_v1.tar.gz", unsup=True)
    from_folder = imdb.read_reviews(folder_root / "imdb" / "aclImdb", unsup=True)
    assert from_archive == from_folder
    unlabelled = [r for r in from_archive if r.split == "unsup"]
    assert [(r.id, r.label, r.rating, r.text) for r in unlabelled] == [(i, -1, 0, UNSUP[i]) for i in sorted(UNSUP)]
    assert from_archive[: -len(UNSUP)] == imdb.read_reviews(archive_root / "imdb" / "aclImdb_v1.tar.gz")
    assert all(r.split != "unsup" for r in from_archive[: -len(UNSUP)])
    a = load_dataset("imdb", root=archive_root, max_len=8, unsup=True)
    f = load_dataset("imdb", root=folder_root, max_len=8, unsup=True)
    assert [t.tolist() for t in a.unlabelled] == [t.tolist() for t in f.unlabelled]


def test_labelled_splits_and_vocabulary_are_the_same_with_unsup_on_and_off(archive_root):
    on = load_dataset("imdb", root=archive_root, max_len=12, unsup=True)
    off = load_dataset("imdb", root=archive_root, max_len=12, unsup=False)
    assert on.vocab.itos == off.vocab.itos
    for split in ("train", "valid", "test"):
        for a, b in zip(on.split(split), off.split(split)):
            assert torch.equal(a, b), split
    assert off.unlabelled == [] and len(on.unlabelled) == len(UNSUP)
    # as many labelled examples as the tree has labelled reviews (counted from what was written), none more
    written = tiny_reviews()
    assert len(on.train_y) + len(on.valid_y) == sum(len(written[("train", c)]) for c in ("pos", "neg"))
    assert len(on.test_y) == sum(len(written[("test", c)]) for c in ("pos", "neg"))
    # no unlabelled review's ids appear as a labelled example (the reversed count is in no labelled review)
    labelled = set(rows(on.train_x)) | set(rows(on.valid_x)) | set(rows(on.test_x))
    assert not labelled & {tuple(t.tolist()) for t in on.unlabelled if len(t)}
    reversed_count = tuple(on.vocab[w] for w in COUNT.split()[::-1][:4])
    assert reversed_count == tuple(on.unlabelled[3][:4].tolist())


def test_unlabelled_words_never_enter_the_vocabulary(tmp_path):
    """A word used only (and often) by unlabelled reviews stays <unk>; a train word they repeat keeps its place."""
    many = {i: "unsup_only_word " * 50 + "zebra " * 50 for i in range(20)}
    write_unsup_tree(tmp_path / "root" / "imdb", unsup=many)
    on = load_dataset("imdb", root=tmp_path / "root", max_len=200, unsup=True)
    off = load_dataset("imdb", root=tmp_path / "root", max_len=200, unsup=False)
    assert on.vocab.itos == off.vocab.itos and "unsup_only_word" not in on.vocab and "zebra" not in on.vocab
    assert all(t.tolist() == [UNK] * 100 for t in on.unlabelled)


def test_unsup_off_ignores_the_unsup_folder_even_when_malformed(tmp_path):
    top = write_unsup_tree(tmp_path / "root" / "imdb")
    (top / "train" / "unsup" / "not_a_review.txt").write_text("x")
    assert load_dataset("imdb", root=tmp_path / "root", max_len=8).unlabelled == []
    with pytest.raises(DataError, match=r"not_a_review\.txt.*<id>_<rating>\.txt"):
        load_dataset("imdb", root=tmp_path / "root", max_len=8, unsup=True)


@pytest.mark.parametrize("form", ["archive", "folder"])
def test_unsup_without_unlabelled_reviews_says_so(tmp_path, form):
    # labelled reviews only, as in the shared mirror's copy
    if form == "archive":
        write_archive(write_tree(tmp_path / "src", noise=False), tmp_path / "root" / "imdb" / "aclImdb_v1.tar.gz")
    else:
        write_tree(tmp_path / "root" / "imdb", noise=False)
    assert len(load_dataset("imdb", root=tmp_path / "root", max_len=8).test_y) == 6
    with pytest.raises(DataError) as e:
        load_dataset("imdb", root=tmp_path / "root", max_len=8, unsup=True)
    msg = str(e.value)
    assert "\n" not in msg and "aclImdb/train/unsup/" in msg and "dataset.unsup=false" in msg
    assert str(tmp_path / "root" / "imdb") in msg


# --------------------------------------------------------------------------- cache


def test_unsup_is_cached_under_its_own_key(archive_root, builds, tmp_path, caplog):
    first = load_dataset("imdb", root=archive_root, max_len=8, unsup=True)
    with caplog.at_level(logging.INFO, logger="pbexp.data.cache"):
        second = load_dataset("imdb", root=archive_root, max_len=8, unsup=True)
    assert len(builds) == 1 and "loaded cached tensors" in caplog.text
    assert [t.tolist() for t in second.unlabelled] == [t.tolist() for t in first.unlabelled]
    assert second.unlabelled[2].dtype == torch.int64
    off = load_dataset("imdb", root=archive_root, max_len=8, unsup=False)
    assert len(builds) == 2 and off.unlabelled == []  # not the unsup file's payload
    assert len(list((tmp_path / "user-cache").glob("imdb-*.pt"))) == 2
    load_dataset("imdb", root=archive_root, max_len=8, unsup=False)
    load_dataset("imdb", root=archive_root, max_len=8, unsup=True)
    assert len(builds) == 2


def test_unsup_off_keeps_the_cache_key_from_before_the_option(archive_root, tmp_path):
    """Caches written before dataset.unsup existed stay good: the key of unsup=false has no unsup field."""
    load_dataset("imdb", root=archive_root, max_len=8, unsup=False)
    settings = dict(
        max_len=8, max_vocab=25000, min_freq=1, valid_fraction=0.1, split_seed=0, truncate="head", lowercase=True
    )
    archive = archive_root / "imdb" / "aclImdb_v1.tar.gz"
    fields = {"format": imdb.CACHE_FORMAT, "tokenizer": TOKENIZER_VERSION, "source": file_fingerprint(archive)}
    old_key = cache_key({**fields, **settings})
    assert [p.name for p in (tmp_path / "user-cache").glob("imdb-*.pt")] == [f"imdb-{old_key}.pt"]


def test_a_changed_unlabelled_review_rebuilds_only_with_unsup(folder_root, builds):
    load_dataset("imdb", root=folder_root, max_len=8, unsup=True)
    load_dataset("imdb", root=folder_root, max_len=8, unsup=False)
    assert len(builds) == 2
    (folder_root / "imdb" / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("Great great")
    assert load_dataset("imdb", root=folder_root, max_len=8, unsup=False).unlabelled == []
    assert len(builds) == 2  # unsup=false never looks at train/unsup/
    d = load_dataset("imdb", root=folder_root, max_len=8, unsup=True)
    assert len(builds) == 3 and d.unlabelled[0].tolist() == [d.vocab["great"]] * 2


# --------------------------------------------------------------------------- the option


@pytest.mark.parametrize("value", ["maybe", "true", 1, 0, None])
def test_a_bad_value_is_a_config_error_naming_the_key(archive_root, value):
    with pytest.raises(ConfigError) as e:
        load_dataset("imdb", root=archive_root, unsup=value)
    assert e.value.key == "dataset.unsup" and str(e.value) == f"dataset.unsup={value!r} is not allowed: true or false"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("dataset.unsup=maybe", "dataset.unsup='maybe' is not allowed: true or false"),
        ("dataset.unsup=2", "dataset.unsup=2 is not allowed: true or false"),
        ("dataset.unsup=true", "has no unlabelled reviews (aclImdb/train/unsup/<id>_0.txt)"),  # none in this tree
    ],
)
def test_cli_refuses_in_one_line(tmp_path, capsys, override, needle):
    folder = write_tree(tmp_path / "src", noise=False)
    write_archive(folder, tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz")
    args = ["dataset=imdb", f"dataset.root={tmp_path / 'data'}", "dataset.download=false", "dataset.max_len=8"]
    capsys.readouterr()
    code = main_in_process([*args, "model=fasttext", override, f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


# --------------------------------------------------------------------------- word2vec


def test_word_vector_text_is_train_plus_unlabelled_never_valid_or_test(archive_root, caplog):
    d = load_dataset("imdb", root=archive_root, max_len=8, unsup=True)
    with caplog.at_level(logging.INFO, logger="pbexp.data.imdb"):
        sentences = d.training_sentences()
    corpus = [tuple(s.tolist()) for s in sentences]
    train = rows(d.train_x)
    unlabelled = [tuple(expected_ids(UNSUP_TOKENS[i], d.vocab, 8)) for i in sorted(UNSUP_TOKENS)]
    assert corpus == train + unlabelled
    assert not set(rows(d.valid_x)) & set(corpus) and not set(rows(d.test_x)) & set(corpus)
    n_train_tokens, n_unsup_tokens = sum(map(len, train)), sum(map(len, unlabelled))
    assert (
        f"{len(train)} train reviews ({n_train_tokens} tokens) + 4 unlabelled reviews ({n_unsup_tokens} tokens)"
        in caplog.text
    )
    off = load_dataset("imdb", root=archive_root, max_len=8, unsup=False)
    assert [tuple(s.tolist()) for s in off.training_sentences()] == train


def test_word2vec_trains_on_the_unlabelled_reviews_too_and_caches_them_apart(archive_root, monkeypatch, tmp_path):
    pytest.importorskip("gensim")
    from pbexp.models import build_model, word2vec

    seen = []
    real = word2vec.word2vec_file

    def recording(sentences, vocab, dim, seed=0):
        seen.append([tuple(s.tolist()) for s in sentences])
        return real(sentences, vocab, dim, seed)

    monkeypatch.setattr(word2vec, "word2vec_file", recording)
    cfg = OmegaConf.create(
        {
            **model_defaults("cnn"),
            "_target_": "pbexp.models.classifiers.CNNClassifier",
            "emb_size": 6,
            "widths": [2],
            "filters": 3,
            "pretrained": "word2vec",
            "freeze_embeddings": False,
        }
    )
    files = {}
    for unsup in (False, True):
        d = load_dataset("imdb", root=archive_root, max_len=8, unsup=unsup)
        sizes = dict(vocab_size=len(d.vocab), num_classes=2, max_len=8, pad_idx=PAD)
        build_model(cfg, d.vocab, "clf", d.training_sentences, 0, **sizes)
        files[unsup] = set((tmp_path / "user-cache").glob("word2vec-*.txt"))
    on = load_dataset("imdb", root=archive_root, max_len=8, unsup=True)
    unlabelled = [tuple(expected_ids(UNSUP_TOKENS[i], on.vocab, 8)) for i in sorted(UNSUP_TOKENS)]
    assert seen == [rows(on.train_x), rows(on.train_x) + unlabelled]
    assert len(files[False]) == 1 and len(files[True]) == 2  # another corpus, another cached vectors file


# --------------------------------------------------------------------------- the real archive


@functools.cache
def real_unsup_members() -> dict[int, str]:
    """An independent read of the real archive with tarfile: {id: text} of its aclImdb/train/unsup/*.txt."""
    out = {}
    with tarfile.open(REAL_DATA, "r:gz") as tf:
        for m in tf:
            p = PurePosixPath(m.name)
            if m.isfile() and p.parent == PurePosixPath("aclImdb/train/unsup") and p.suffix == ".txt":
                out[int(p.stem.split("_")[0])] = tf.extractfile(m).read().decode("utf-8")
    return out


needs_real = pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"real IMDB archive not at {REAL_DATA}")


@needs_real
def test_real_archive_unlabelled_reviews_are_the_tar_members(tmp_path):
    """As many as the archive's train/unsup/*.txt members (50,000 in Stanford's archive), with their texts; the
    shared mirror's copy has none, and dataset.unsup=true then says so instead of giving an empty list."""
    members = real_unsup_members()
    reviews = imdb.read_reviews(REAL_DATA, unsup=True)
    unlabelled = [r for r in reviews if r.split == "unsup"]
    assert len(unlabelled) == len(members)
    assert {r.id: r.text for r in unlabelled} == members
    assert sum(r.split in ("train", "test") for r in reviews) == 50_000
    if members:
        assert len(members) == 50_000
    else:
        with pytest.raises(DataError, match=r"no unlabelled reviews \(aclImdb/train/unsup/"):
            load_dataset("imdb", root=REAL_DATA.parent.parent, cache_dir=tmp_path, unsup=True)


@pytest.mark.slow
@needs_real
def test_real_archive_with_unsup_end_to_end(tmp_path):
    """Two cold builds, of 100k and of 50k reviews (about a minute together on two busy cores)."""
    members = real_unsup_members()
    if not members:
        pytest.skip(f"{REAL_DATA} has no train/unsup/ reviews")
    on = load_dataset("imdb", root=REAL_DATA.parent.parent, cache_dir=tmp_path, unsup=True)
    off = load_dataset("imdb", root=REAL_DATA.parent.parent, cache_dir=tmp_path, unsup=False)
    assert len(on.unlabelled) == len(members) == 50_000
    assert on.vocab.itos == off.vocab.itos
    for split in ("train", "valid", "test"):
        for a, b in zip(on.split(split), off.split(split)):
            assert torch.equal(a, b), split
    assert (len(on.train_y), len(on.valid_y), len(on.test_y)) == (22_500, 2_500, 25_000)
    ids = sorted(members)
    for k in range(0, len(ids), 997):  # an independent tokenisation of every 997th, from the tar member's text
        want = expected_ids(tokenize(members[ids[k]]), on.vocab, on.max_len)
        assert on.unlabelled[k].tolist() == want, ids[k]
    sentences = on.training_sentences()
    assert len(sentences) == 22_500 + 50_000
    assert Counter(len(s) for s in sentences[22_500:]) == Counter(len(t) for t in on.unlabelled)
