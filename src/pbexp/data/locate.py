"""Where data files are looked for, in order, and the one message when they are nowhere.

1. ``dataset.root`` (``<root>/<subdir>/`` or ``<root>/`` itself),
2. a local mirror folder named by the env var ``PBEXP_DATA_MIRROR`` (same layout),
3. the canonical download, checked against a sha256 (done by the dataset module, via :func:`download`),
then a :class:`DataError` that says exactly what to put where.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pbexp.errors import DataError

MIRROR_ENV = "PBEXP_DATA_MIRROR"
CACHE_ENV = "PBEXP_CACHE_DIR"
log = logging.getLogger("pbexp")


def user_cache_dir() -> Path:
    """Where derived files (tokenised tensors, trained word vectors) are cached: $PBEXP_CACHE_DIR, else
    $XDG_CACHE_HOME/pbexp, else ~/.cache/pbexp. Never next to the user's data."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pbexp"


def search_dirs(root: str | Path, subdir: str) -> list[Path]:
    """The folders looked in, in order."""
    dirs = [Path(root) / subdir, Path(root)]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        dirs += [Path(mirror) / subdir, Path(mirror)]
    return dirs


def find(root: str | Path, subdir: str, names: Sequence[str]) -> Path | None:
    """The first search folder that holds every one of ``names`` (files or folders), else None. Passing
    over a ``root`` that exists (a file, or a folder lacking some names) is logged: the user named it."""
    for i, d in enumerate(search_dirs(root, subdir)):
        if all((d / n).exists() for n in names):
            if i >= 2 and Path(root).exists():
                log.warning(
                    "dataset.root=%s %s; using %s instead", root, _what_is_missing(Path(root), subdir, names), d
                )
            return d
    return None


def _what_is_missing(root: Path, subdir: str, names: Sequence[str]) -> str:
    if not root.is_dir():
        return "is a file, not a folder"
    folder = root / subdir if (root / subdir).is_dir() else root
    return f"holds no {', '.join(n for n in names if not (folder / n).exists())} (looked in {folder})"


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically; raise DataError on failure or checksum mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        if sha256 is not None and (got := sha256_of(tmp)) != sha256:
            raise DataError(f"download of {url} has sha256 {got}, expected {sha256}; not using it")
        os.replace(tmp, dest)
        return dest
    except DataError:
        raise
    except Exception as e:  # network down, 404, disk full: all mean "not downloadable here"
        raise DataError(f"could not download {url}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def missing_error(dataset: str, root: str | Path, subdir: str, names: Sequence[str], extra: str = "") -> DataError:
    looked = ", ".join(str(d) for d in search_dirs(root, subdir))
    want = ", ".join(names)
    msg = (
        f"{dataset} data not found: need {want} in one of [{looked}]. "
        f"Put the files in {Path(root) / subdir}/ (or set dataset.root=<folder>, "
        f"or {MIRROR_ENV}=<folder holding {subdir}/>)."
    )
    return DataError(msg + (" " + extra if extra else ""))
