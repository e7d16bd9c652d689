"""A cache of derived tensors: one file per key, the key a hash of everything the tensors depend on.

A dataset module that builds tensors slowly (tokenising, counting) names the inputs that change them
(a fingerprint of the source data, its settings, a format version) and gets ``<cache dir>/<name>-<key>.pt``::

    cache = TensorCache("imdb", {"format": 1, "source": file_fingerprint(archive), "max_len": 400})
    payload = cache.load()
    if payload is None:
        payload = build()
        cache.save(payload)

The payload is a dict of tensors and plain values (lists, strings, numbers): it is read back with
``weights_only=True``, so a cache file can never run code. The cache only saves time: a missing,
foreign or half-written file is a miss, and a failed write is logged and otherwise ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from pbexp.data.locate import user_cache_dir
from pbexp.files import write_atomic

log = logging.getLogger(__name__)

_KEY = "key"  # stored in the payload too: a file renamed or copied by hand is not trusted by its name alone


def file_fingerprint(path: Path) -> str:
    """Changes when the file changes: its resolved path, size and modification time (cheap, unlike a hash
    of a large archive)."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def tree_fingerprint(root: Path, files: Iterable[str]) -> str:
    """Changes when any of ``files`` (paths relative to ``root``, in a fixed order) changes, or the set does."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for rel in files:
        st = (root / rel).stat()
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(fields: dict) -> str:
    """16 hex digits of a hash of ``fields`` (JSON-serialisable; key order does not matter)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class TensorCache:
    """The cache file for one set of inputs: ``<cache_dir>/<name>-<key>.pt``; ``cache_dir`` defaults to the
    user's cache folder (``locate.user_cache_dir``), never beside the data."""

    def __init__(self, name: str, fields: dict, cache_dir: str | os.PathLike | None = None):
        self.key = cache_key(fields)
        self.path = Path(cache_dir if cache_dir is not None else user_cache_dir()) / f"{name}-{self.key}.pt"

    def load(self) -> dict | None:
        """The cached payload, or None when there is none for this key."""
        if not self.path.is_file():
            return None
        try:
            payload = torch.load(self.path, weights_only=True)
        except Exception as e:  # a foreign or damaged file: the caller rebuilds and overwrites it
            log.warning("ignoring unreadable cache %s (%s); rebuilding", self.path, e)
            return None
        if not isinstance(payload, dict) or payload.get(_KEY) != self.key:
            return None
        log.info("loaded cached tensors from %s", self.path)
        return {k: v for k, v in payload.items() if k != _KEY}

    def save(self, payload: dict) -> Path | None:
        """Write the payload atomically (readers see the old file or the whole new one); the path, or None
        when it could not be written."""
        try:
            write_atomic(self.path, lambda tmp: torch.save({**payload, _KEY: self.key}, tmp))
        except OSError as e:
            log.warning("cannot write cache %s (%s); carrying on without it", self.path, e)
            return None
        log.info("cached tensors in %s", self.path)
        return self.path
