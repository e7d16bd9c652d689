"""The IMDB data module on a tiny aclImdb tree written here (as a folder and as a tar.gz)."""

import inspect
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

import pbexp.data.imdb as imdb
import pbexp.data.tokenize_pool as tokenize_pool
from helpers.configs import REPO, load_dataset
from helpers.data import COUNT, N_TRAIN, isolate_imdb, tiny_reviews, write_archive, write_tree
from pbexp.data.imdb import CLASSES, Review, load_imdb, read_reviews, stratified_split
from pbexp.data.tokenize import tokenize
from pbexp.data.tokenize_pool import PAD, UNK, numericalise
from pbexp.errors import ConfigError, DataError

REAL_DATA = Path(os.environ.get("PBEXP_DATA_MIRROR", "/work/shared/data")) / "imdb" / "aclImdb_v1.tar.gz"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate_imdb(tmp_path, monkeypatch)


@pytest.fixture
def folder_root(tmp_path) -> Path:
    """A data root holding imdb/aclImdb/ (extracted form)."""
    write_tree(tmp_path / "folder-root" / "imdb")
    return tmp_path / "folder-root"


@pytest.fixture
def archive_root(tmp_path) -> Path:
    """A data root holding imdb/aclImdb_v1.tar.gz (archive form)."""
    folder = write_tree(tmp_path / "src")
    write_archive(folder, tmp_path / "archive-root" / "imdb" / "aclImdb_v1.tar.gz")
    return tmp_path / "archive-root"


def archive_of(root: Path) -> Path:
    return root / "imdb" / "aclImdb_v1.tar.gz"


@pytest.fixture
def count_reads(monkeypatch):
    """How often the reviews were read from disk (i.e. the cache was not used)."""
    calls = []
    real = imdb.read_reviews

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(imdb, "read_reviews", counting)
    return calls


# --------------------------------------------------------------------------- reading


def test_archive_and_folder_give_the_same_reviews_in_sorted_order(archive_root, folder_root):
    from_archive = read_reviews(archive_of(archive_root))
    from_folder = read_reviews(folder_root / "imdb" / "aclImdb")
    assert from_archive == from_folder
    assert len(from_archive) == 2 * N_TRAIN + 6  # unsup/, README, *.feat, urls, .DS_Store ignored
    keys = [(r.split, r.label, r.id) for r in from_archive]
    expected = (
        [("train", 0, i) for i in range(N_TRAIN)]
        + [("train", 1, i) for i in range(N_TRAIN)]
        + [("test", 0, i) for i in range(3)]
        + [("test", 1, i) for i in range(3)]
    )
    assert keys == expected


def test_labels_ratings_ids_and_text_are_parsed(archive_root):
    reviews = {(r.split, CLASSES[r.label], r.id): r for r in read_reviews(archive_of(archive_root))}
    text = f"Great film! uniq_train_pos_10<br /><br />{COUNT}"
    assert reviews[("train", "pos", 10)] == Review("train", 1, 9, 10, text)
    assert reviews[("train", "neg", 3)].rating == 4 and reviews[("train", "neg", 3)].label == 0
    assert reviews[("test", "neg", 1)] == Review("test", 0, 2, 1, "bad")
    assert all(7 <= r.rating <= 10 for r in reviews.values() if r.label == 1)
    assert all(1 <= r.rating <= 4 for r in reviews.values() if r.label == 0)


def test_read_reviews_accepts_the_folder_that_holds_aclImdb(folder_root):
    assert read_reviews(folder_root / "imdb") == read_reviews(folder_root / "imdb" / "aclImdb")


def test_load_from_archive_and_folder_gives_identical_tensors(archive_root, folder_root):
    a = load_dataset("imdb", root=archive_root, max_len=8)
    f = load_dataset("imdb", root=folder_root, max_len=8)
    assert a.vocab.itos == f.vocab.itos
    for split in ("train", "valid", "test"):
        for ta, tf in zip(a.split(split), f.split(split)):
            assert torch.equal(ta, tf)


def test_data_found_at_root_itself_and_in_the_mirror(tmp_path, archive_root, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(archive_of(archive_root), flat / "aclImdb_v1.tar.gz")
    assert len(load_dataset("imdb", root=flat, max_len=4).test_y) == 6

    monkeypatch.setenv("PBEXP_DATA_MIRROR", str(archive_root))
    assert imdb.find_imdb(tmp_path / "empty") == archive_of(archive_root)
    assert len(load_dataset("imdb", root=tmp_path / "empty", max_len=4).test_y) == 6


# --------------------------------------------------------------------------- tensors


def test_shapes_classes_and_labels(archive_root):
    d = load_dataset("imdb", root=archive_root, max_len=6)
    assert d.classes == ["neg", "pos"] and d.task == "clf" and d.pad_idx == 0 and d.max_len == 6
    assert d.vocab.itos[:2] == ["<pad>", "<unk>"]
    n_valid = 2 * round(0.1 * N_TRAIN)
    assert d.train_x.shape == (2 * N_TRAIN - n_valid, 6) and d.valid_x.shape == (n_valid, 6)
    assert d.test_x.shape == (6, 6) and d.test_y.tolist() == [0, 0, 0, 1, 1, 1]
    for x, y in (d.split("train"), d.split("valid"), d.split("test")):
        assert x.dtype == torch.int64 and y.dtype == torch.int64 and len(x) == len(y)


def test_vocabulary_comes_from_the_train_split_only(archive_root):
    d = load_dataset("imdb", root=archive_root, max_len=20, valid_fraction=0.3)
    train_ids, valid_ids = stratified_split([0] * N_TRAIN + [1] * N_TRAIN, 0.3, 0)
    uniq = [f"uniq_train_{lab}_{i}" for lab in ("neg", "pos") for i in range(N_TRAIN)]
    assert all(uniq[i] in d.vocab for i in train_ids)
    assert not any(uniq[i] in d.vocab for i in valid_ids)  # valid words are unknown, like test words
    assert "zebra" not in d.vocab and "unsup_only_word" not in d.vocab
    zebra_review = tokenize("Bad zebra.")  # test neg id 2
    assert d.test_x[2, : len(zebra_review)].tolist() == [d.vocab["bad"], UNK, d.vocab["."]]
    # every valid review has its own unique word mapped to <unk>
    assert all((row == UNK).sum() == 1 for row in d.valid_x)


@pytest.mark.parametrize("truncate, kept", [("head", "one two three four"), ("tail", "seven eight nine ten")])
def test_truncation_and_padding(archive_root, truncate, kept):
    d = load_dataset("imdb", root=archive_root, max_len=4, truncate=truncate)
    ids = lambda words: [d.vocab[w] for w in words.split()]
    assert d.test_x[0].tolist() == ids(kept)  # test neg 0 has 10 tokens
    assert d.test_x[1].tolist() == [d.vocab["bad"], PAD, PAD, PAD]  # test neg 1 has 1 token


def test_numericalise_cuts_and_pads():
    itos = ["<pad>", "<unk>", "a", "b", "c"]
    toks = [["a", "b", "c", "x"], ["b"], []]
    assert numericalise(toks, itos, 3, "head").tolist() == [[2, 3, 4], [3, 0, 0], [0, 0, 0]]
    assert numericalise(toks, itos, 3, "tail").tolist() == [[3, 4, 1], [3, 0, 0], [0, 0, 0]]
    assert numericalise(toks, itos, 5, "head").tolist()[0] == [2, 3, 4, 1, 0]


def test_lowercase_off_keeps_cased_words(archive_root):
    assert "Great" in load_dataset("imdb", root=archive_root, max_len=4, lowercase=False).vocab
    assert "Great" not in load_dataset("imdb", root=archive_root, max_len=4).vocab


def test_max_vocab_and_min_freq(archive_root):
    assert len(load_dataset("imdb", root=archive_root, max_len=4, max_vocab=5).vocab) == 5
    d = load_dataset("imdb", root=archive_root, max_len=4, min_freq=2)
    assert "film" in d.vocab and not any(w.startswith("uniq_") for w in d.vocab.itos)


def test_one_process_and_several_give_the_same_result(archive_root, monkeypatch):
    monkeypatch.setattr(tokenize_pool, "_workers", lambda: 1)
    one = load_dataset("imdb", root=archive_root, max_len=8, cache=False)
    monkeypatch.setattr(tokenize_pool, "_workers", lambda: 3)
    three = load_dataset("imdb", root=archive_root, max_len=8, cache=False)
    assert one.vocab.itos == three.vocab.itos
    for split in ("train", "valid", "test"):
        for a, b in zip(one.split(split), three.split(split)):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------- split


def test_stratified_split_sizes_and_seed():
    labels = [0] * 100 + [1] * 50
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert sorted(tr.tolist() + va.tolist()) == list(range(150))
    assert sum(labels[i] == 0 for i in va) == 20 and sum(labels[i] == 1 for i in va) == 10
    tr2, va2 = stratified_split(labels, 0.2, seed=0)
    assert va.tolist() == va2.tolist() and tr.tolist() == tr2.tolist()
    assert va.tolist() != stratified_split(labels, 0.2, seed=1)[1].tolist()


def test_split_through_load_is_deterministic(archive_root):
    a = load_dataset("imdb", root=archive_root, max_len=20, valid_fraction=0.3, split_seed=5, cache=False)
    b = load_dataset("imdb", root=archive_root, max_len=20, valid_fraction=0.3, split_seed=5, cache=False)
    c = load_dataset("imdb", root=archive_root, max_len=20, valid_fraction=0.3, split_seed=6, cache=False)
    assert torch.equal(a.valid_x, b.valid_x) and torch.equal(a.train_x, b.train_x)
    assert a.valid_y.tolist().count(0) == a.valid_y.tolist().count(1) == 3
    assert a.vocab.itos != c.vocab.itos  # other train reviews -> other unique words in the vocab


# --------------------------------------------------------------------------- cache


def test_second_call_uses_the_cache(archive_root, count_reads, caplog, tmp_path):
    first = load_dataset("imdb", root=archive_root, max_len=8)
    assert len(count_reads) == 1
    assert list((tmp_path / "user-cache").glob("imdb-*.pt"))
    with caplog.at_level(logging.INFO, logger="pbexp.data.cache"):
        second = load_dataset("imdb", root=archive_root, max_len=8)
    assert len(count_reads) == 1
    assert "loaded cached tensors" in caplog.text
    assert second.vocab.itos == first.vocab.itos
    assert torch.equal(second.train_x, first.train_x) and torch.equal(second.test_y, first.test_y)
    assert second.train_x.dtype == torch.int64


@pytest.mark.parametrize(
    "change",
    [
        dict(max_len=9),
        dict(max_vocab=10),
        dict(min_freq=2),
        dict(valid_fraction=0.3),
        dict(split_seed=1),
        dict(truncate="tail"),
        dict(lowercase=False),
    ],
)
def test_a_changed_setting_rebuilds(archive_root, count_reads, change):
    settings = dict(max_len=8)
    load_dataset("imdb", root=archive_root, **settings)
    load_dataset("imdb", root=archive_root, **{**settings, **change})
    assert len(count_reads) == 2
    load_dataset("imdb", root=archive_root, **{**settings, **change})
    assert len(count_reads) == 2


def test_a_changed_archive_rebuilds(archive_root, count_reads):
    load_dataset("imdb", root=archive_root, max_len=8)
    st = archive_of(archive_root).stat()
    os.utime(archive_of(archive_root), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_dataset("imdb", root=archive_root, max_len=8)
    assert len(count_reads) == 2


def test_a_changed_review_file_rebuilds(folder_root, count_reads):
    load_dataset("imdb", root=folder_root, max_len=8)
    (folder_root / "imdb" / "aclImdb" / "test" / "neg" / "1_2.txt").write_text("bad bad film")
    d = load_dataset("imdb", root=folder_root, max_len=8)
    assert len(count_reads) == 2
    assert d.test_x[1, :3].tolist() == [d.vocab["bad"], d.vocab["bad"], d.vocab["film"]]


def test_cache_off_neither_reads_nor_writes(archive_root, count_reads, tmp_path):
    load_dataset("imdb", root=archive_root, max_len=8, cache=False)
    load_dataset("imdb", root=archive_root, max_len=8, cache=False)
    assert len(count_reads) == 2
    assert not list(archive_root.rglob("*.pt")) and not (tmp_path / "user-cache").exists()


def test_the_cache_lives_in_the_user_cache_not_next_to_the_data(archive_root, count_reads, tmp_path):
    """$PBEXP_CACHE_DIR moved nothing before: ~80 MB per setting was written beside a writable data folder."""
    load_dataset("imdb", root=archive_root, max_len=8)
    load_dataset("imdb", root=archive_root, max_len=8)
    assert len(count_reads) == 1
    assert not list(archive_root.rglob("*.pt"))
    assert len(list((tmp_path / "user-cache").glob("imdb-*.pt"))) == 1


def test_without_pbexp_cache_dir_the_xdg_cache_is_used(archive_root, count_reads, tmp_path, monkeypatch):
    monkeypatch.delenv("PBEXP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_dataset("imdb", root=archive_root, max_len=8)
    assert len(list((tmp_path / "xdg" / "pbexp").glob("imdb-*.pt"))) == 1


def test_explicit_cache_dir_is_used(archive_root, count_reads, tmp_path):
    load_dataset("imdb", root=archive_root, max_len=8, cache_dir=tmp_path / "mine")
    load_dataset("imdb", root=archive_root, max_len=8, cache_dir=tmp_path / "mine")
    assert len(count_reads) == 1
    assert len(list((tmp_path / "mine").glob("imdb-*.pt"))) == 1 and not list(archive_root.rglob("*.pt"))


def test_a_corrupt_cache_file_is_rebuilt(archive_root, count_reads, caplog, tmp_path):
    load_dataset("imdb", root=archive_root, max_len=8)
    (cache_file,) = (tmp_path / "user-cache").glob("imdb-*.pt")
    cache_file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="pbexp.data.cache"):
        d = load_dataset("imdb", root=archive_root, max_len=8)
    assert len(count_reads) == 2 and "ignoring unreadable cache" in caplog.text
    assert len(d.test_y) == 6
    load_dataset("imdb", root=archive_root, max_len=8)  # and the rewritten cache is good again
    assert len(count_reads) == 2


# --------------------------------------------------------------------------- finding / downloading


def test_missing_data_and_failed_download_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(url, dest, sha256=None, timeout=30.0):
        raise DataError(f"could not download {url}: network unreachable")

    monkeypatch.setattr(imdb, "download", offline)
    with pytest.raises(DataError) as e:
        load_dataset("imdb", root=tmp_path / "nothing")
    msg = str(e.value)
    assert "IMDB data not found" in msg and "aclImdb_v1.tar.gz" in msg
    assert str(tmp_path / "nothing" / "imdb") in msg and "network unreachable" in msg


def test_no_download_when_switched_off(tmp_path):
    # the autouse fixture fails the test if the download is tried
    with pytest.raises(DataError, match="IMDB data not found.*dataset.download=false"):
        load_dataset("imdb", root=tmp_path / "nothing", download=False)


def test_download_is_used_when_nothing_is_found(tmp_path, archive_root, monkeypatch):
    got = []

    def fake_download(url, dest, sha256=None, timeout=30.0):
        got.append((url, dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(archive_of(archive_root), dest)
        return dest

    monkeypatch.setattr(imdb, "download", fake_download)
    d = load_dataset("imdb", root=tmp_path / "fresh", max_len=4)
    assert got == [(imdb.URL, tmp_path / "fresh" / "imdb" / "aclImdb_v1.tar.gz")]
    assert len(d.test_y) == 6
    load_dataset("imdb", root=tmp_path / "fresh", max_len=4)  # now found locally
    assert len(got) == 1


def test_a_downloaded_file_that_is_not_imdb_is_rejected_and_deleted(tmp_path, monkeypatch):
    def bad_download(url, dest, sha256=None, timeout=30.0):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"<html>Service unavailable</html>")
        return dest

    monkeypatch.setattr(imdb, "download", bad_download)
    with pytest.raises(DataError, match="not a usable IMDB archive"):
        load_dataset("imdb", root=tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "imdb" / "aclImdb_v1.tar.gz").exists()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(max_len=0), "max_len"),
        (dict(max_len=-3), "max_len"),
        (dict(max_len="400"), "max_len"),
        (dict(max_len=2.5), "max_len"),
        (dict(max_vocab=0), "max_vocab"),
        (dict(max_vocab=-1), "max_vocab"),
        (dict(max_vocab=2), "max_vocab"),
        (dict(min_freq=0), "min_freq"),
        (dict(valid_fraction=0), "valid_fraction"),
        (dict(valid_fraction=1), "valid_fraction"),
        (dict(valid_fraction=1.5), "valid_fraction"),
        (dict(valid_fraction=-0.1), "valid_fraction"),
        (dict(valid_fraction="0.1"), "valid_fraction"),
        (dict(truncate="middle"), "truncate"),
        (dict(lowercase="yes"), "lowercase"),
        (dict(split_seed=-1), "split_seed"),
        (dict(download="no"), "download"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(archive_root, kwargs, key):
    with pytest.raises(ConfigError) as e:
        load_dataset("imdb", root=archive_root, **kwargs)
    assert e.value.key == f"dataset.{key}" and f"dataset.{key}=" in str(e.value)


def test_truncate_error_lists_the_choices(archive_root):
    with pytest.raises(ConfigError, match="head.*tail"):
        load_dataset("imdb", root=archive_root, truncate="middle")


def test_valid_fraction_too_small_for_the_data(archive_root):
    with pytest.raises(ConfigError, match=r"dataset.valid_fraction=0.01.*would put 0 in valid"):
        load_dataset("imdb", root=archive_root, valid_fraction=0.01)


def test_empty_vocabulary(archive_root):
    with pytest.raises(DataError, match="vocabulary .* is empty with min_freq=1000"):
        load_dataset("imdb", root=archive_root, min_freq=1000)


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.9, 0.99])
def test_truncated_archive(archive_root, cut):
    path = archive_of(archive_root)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_dataset("imdb", root=archive_root)
    assert str(path) in str(e.value)


def test_corrupt_archive(archive_root):
    path = archive_of(archive_root)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zero a stretch of the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_reviews(path)
    path.write_bytes(b"this is not a tar.gz at all" * 10)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_reviews(path)


@pytest.mark.parametrize("member", ["../evil.txt", "aclImdb/train/pos/../../../evil.txt", "/etc/evil.txt"])
def test_archive_member_escaping_the_folder_is_rejected(tmp_path, member):
    folder = write_tree(tmp_path / "src")
    archive = write_archive(folder, tmp_path / "bad.tar.gz", extra=[(member, b"gotcha")])
    with pytest.raises(DataError, match="escapes the archive folder") as e:
        read_reviews(archive)
    assert repr(member) in str(e.value)


def test_review_that_is_not_utf8_names_the_file(tmp_path):
    reviews = tiny_reviews()
    folder = write_tree(tmp_path / "src", reviews)
    (folder / "train" / "pos" / "42_8.txt").write_bytes(b"caf\xe9 in latin-1")
    with pytest.raises(DataError, match=r"42_8\.txt is not valid UTF-8"):
        read_reviews(folder)
    archive = write_archive(folder, tmp_path / "a.tar.gz")
    with pytest.raises(DataError, match=r"a\.tar\.gz:aclImdb/train/pos/42_8\.txt is not valid UTF-8"):
        read_reviews(archive)


def test_badly_named_review_file(tmp_path):
    folder = write_tree(tmp_path / "src")
    (folder / "test" / "neg" / "great_review.txt").write_text("hello")
    with pytest.raises(DataError, match=r"great_review\.txt.*<id>_<rating>\.txt"):
        read_reviews(folder)


def test_tree_without_reviews(tmp_path):
    folder = write_tree(tmp_path / "root" / "imdb", reviews={})  # README, unsup, ... but no labelled reviews
    with pytest.raises(DataError, match="no IMDB reviews"):
        read_reviews(folder)
    with pytest.raises(DataError, match="no IMDB reviews"):
        load_dataset("imdb", root=tmp_path / "root")
    archive = write_archive(folder, tmp_path / "empty.tar.gz")
    with pytest.raises(DataError, match="no IMDB reviews"):
        read_reviews(archive)


def test_tree_without_test_split(tmp_path):
    reviews = {k: v for k, v in tiny_reviews().items() if k[0] == "train"}
    write_tree(tmp_path / "root" / "imdb", reviews)
    with pytest.raises(DataError, match="0 test reviews"):
        load_dataset("imdb", root=tmp_path / "root")


def test_missing_path_for_read_reviews(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_reviews(tmp_path / "nope.tar.gz")


# --------------------------------------------------------------------------- config


def test_config_matches_the_function_and_instantiates(archive_root, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "configs" / "dataset" / "imdb.yaml").dataset  # a _global_ package file
    assert cfg._target_ == "pbexp.data.imdb.load_imdb"
    params = inspect.signature(load_imdb).parameters
    keys = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
    assert set(keys) == set(params)  # the YAML sets every argument: it holds the defaults, the function none
    assert all(p.default is inspect.Parameter.empty for p in params.values())
    d = instantiate(cfg, root=str(archive_root), max_len=5, cache_dir=str(tmp_path / "c"))
    assert d.train_x.shape[1] == 5 and d.classes == ["neg", "pos"]


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"real IMDB archive not at {REAL_DATA}")
def test_real_imdb(tmp_path):
    reviews = read_reviews(REAL_DATA)
    assert len(reviews) == 50_000
    assert sum(r.split == "train" and r.label == 1 for r in reviews) == 12_500
    assert sum(r.split == "train" and r.rating == 10 for r in reviews) == 4732  # counts from shared/data/README.md
    first_pos = next(r for r in reviews if r.split == "train" and r.label == 1 and r.id == 0)
    assert first_pos.rating == 9 and first_pos.text.startswith("Bromwell High")

    d = load_dataset("imdb", root=REAL_DATA.parent.parent, cache_dir=tmp_path)
    assert (len(d.train_y), len(d.valid_y), len(d.test_y)) == (22_500, 2_500, 25_000)
    assert d.valid_y.sum() == 1_250 and d.test_y.sum() == 12_500
    assert len(d.vocab) == 25_000 and d.vocab.itos[:2] == ["<pad>", "<unk>"]
    assert (d.train_x[:, 0] != PAD).all()  # no review is empty
    assert d.vocab.itos[2] in {"the", ".", ","}
