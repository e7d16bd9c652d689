"""The generic tensor cache (pbexp.data.cache): keys, fingerprints, round trip, and writes that fail."""

import logging
import os

import pytest
import torch

import pbexp.data.cache as cache_module
from pbexp.data.cache import TensorCache, cache_key, file_fingerprint, tree_fingerprint


def payload():
    return {"itos": ["<pad>", "<unk>", "a"], "max_len": 3, "x": torch.arange(6, dtype=torch.int32).reshape(2, 3)}


def test_round_trip(tmp_path, caplog):
    cache = TensorCache("toy", {"source": "s", "max_len": 3}, tmp_path)
    assert cache.load() is None  # nothing written yet
    assert cache.save(payload()) == cache.path
    assert cache.path.parent == tmp_path and cache.path.name == f"toy-{cache.key}.pt"
    with caplog.at_level(logging.INFO, logger="pbexp.data.cache"):
        got = TensorCache("toy", {"max_len": 3, "source": "s"}, tmp_path).load()  # key order does not matter
    assert "loaded cached tensors" in caplog.text
    assert got.keys() == payload().keys()  # the stored key is not handed back
    assert got["itos"] == payload()["itos"] and got["max_len"] == 3 and torch.equal(got["x"], payload()["x"])
    assert oct(cache.path.stat().st_mode & 0o777) == oct(0o644)  # others sharing the cache may read it


def test_the_default_folder_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PBEXP_CACHE_DIR", str(tmp_path / "user-cache"))
    assert TensorCache("toy", {}).path.parent == tmp_path / "user-cache"


def test_a_changed_fingerprint_misses(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"one")
    TensorCache("toy", {"source": file_fingerprint(data)}, tmp_path).save(payload())
    assert TensorCache("toy", {"source": file_fingerprint(data)}, tmp_path).load() is not None
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert TensorCache("toy", {"source": file_fingerprint(data)}, tmp_path).load() is None
    assert TensorCache("toy", {"source": "other"}, tmp_path).load() is None
    assert TensorCache("other", {"source": file_fingerprint(data)}, tmp_path).load() is None


def test_tree_fingerprint_sees_a_changed_added_or_renamed_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.txt").write_text("one")
    first = tree_fingerprint(tmp_path, ["a/1.txt"])
    assert tree_fingerprint(tmp_path, ["a/1.txt"]) == first
    (tmp_path / "a" / "1.txt").write_text("one!")  # another size
    changed = tree_fingerprint(tmp_path, ["a/1.txt"])
    assert changed != first
    (tmp_path / "a" / "2.txt").write_text("two")
    added = tree_fingerprint(tmp_path, ["a/1.txt", "a/2.txt"])
    assert added != changed
    (tmp_path / "a" / "1.txt").rename(tmp_path / "a" / "3.txt")  # same size and time, another name
    assert tree_fingerprint(tmp_path, ["a/2.txt", "a/3.txt"]) != added


def test_cache_key_is_stable_and_short():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert len(cache_key({})) == 16 and int(cache_key({}), 16) >= 0


def test_a_file_whose_stored_key_differs_misses(tmp_path):
    """A cache file copied or renamed by hand is not trusted by its name alone."""
    cache = TensorCache("toy", {"v": 1}, tmp_path)
    TensorCache("toy", {"v": 2}, tmp_path).save(payload())
    os.replace(TensorCache("toy", {"v": 2}, tmp_path).path, cache.path)
    assert cache.load() is None


def test_an_unreadable_file_misses_with_a_warning_and_is_overwritten(tmp_path, caplog):
    cache = TensorCache("toy", {"v": 1}, tmp_path)
    cache.path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="pbexp.data.cache"):
        assert cache.load() is None
    assert "ignoring unreadable cache" in caplog.text
    cache.save(payload())
    assert cache.load() is not None


def test_a_payload_that_would_run_code_is_not_loaded(tmp_path, caplog):
    """weights_only=True: a pickled object other than tensors and plain values is refused, never run."""
    cache = TensorCache("toy", {"v": 1}, tmp_path)
    torch.save({"key": cache.key, "obj": logging.getLogger("x")}, cache.path)
    with caplog.at_level(logging.WARNING, logger="pbexp.data.cache"):
        assert cache.load() is None
    assert "ignoring unreadable cache" in caplog.text


def _half_write_then(error):
    """A torch.save that writes part of the file to the temp path it is given, then fails."""

    def save(obj, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise error

    return save


def test_a_write_that_fails_leaves_no_file_and_carries_on(tmp_path, monkeypatch, caplog):
    cache = TensorCache("toy", {"v": 1}, tmp_path)
    monkeypatch.setattr(cache_module.torch, "save", _half_write_then(OSError(28, "No space left on device")))
    with caplog.at_level(logging.WARNING, logger="pbexp.data.cache"):
        assert cache.save(payload()) is None
    assert "cannot write cache" in caplog.text
    assert list(tmp_path.iterdir()) == []  # neither the cache file nor a temp file
    assert cache.load() is None


def test_a_write_killed_before_the_rename_leaves_no_file(tmp_path, monkeypatch):
    cache = TensorCache("toy", {"v": 1}, tmp_path)
    cache.save(payload())
    old = cache.path.read_bytes()
    monkeypatch.setattr(cache_module.torch, "save", _half_write_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # a kill is not swallowed
        cache.save({**payload(), "max_len": 4})
    assert [p.name for p in tmp_path.iterdir()] == [cache.path.name]  # no temp file left
    assert cache.path.read_bytes() == old  # the old file is whole
    fresh = TensorCache("toy", {"v": 2}, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fresh.save(payload())
    assert not fresh.path.exists()
