"""One way to write a file that others may read at any moment: a temp file beside it, then a rename."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from pbexp.errors import DiskFull

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# After a writer that hides the OS error (torch.save raises RuntimeError("... iostream error")), a folder
# where this much more cannot be written counts as full.
_PROBE_BYTES = 64 * 1024


def write_atomic(path: str | Path, data: bytes | str | Callable[[str], None]) -> None:
    """A reader sees no file or the whole file; a failed write (disk full, a kill) leaves nothing half-written.
    ``data`` is the content, or a function that writes the content to the temp path it is given (torch.save).
    The temp file is unique, so two writers never share one. A full disk or quota (ENOSPC, EDQUOT) is
    :class:`DiskFull`, naming the folder and the space needed, with the temp file removed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            if not callable(data):
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if callable(data):
            data(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a results or data file is for others to read too
        os.replace(tmp, path)
    except Exception as e:
        code = no_space_errno(e)
        if code is None and callable(data) and not isinstance(e, OSError) and tmp is not None:
            code = _probe_no_space(tmp)
        if code is None:
            raise
        written = _size(tmp)
        _release(e)
        _remove(tmp)  # before measuring what is free: the space it held is free again
        raise DiskFull(_disk_full_message(path, code, _needed(path, data, written)), path.parent, code) from e
    finally:
        if tmp is not None:
            _remove(tmp)


def no_space_errno(e: BaseException) -> int | None:
    """ENOSPC or EDQUOT when ``e``, or an error it was raised from or while handling, is a full disk or quota."""
    seen = 0
    while e is not None and seen < 8:  # a chain is short; the bound only guards against a cycle
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e.errno
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def human_size(n: int) -> str:
    """Bytes in the unit a person reads: 512 B, 14.0 kB, 1.3 MB, 2.0 GB (powers of 1000, as df -H)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _disk_full_message(path: Path, code: int, needed: str) -> str:
    what = "free space there or raise your quota" if code == errno.EDQUOT else "free space there"
    free = _free(path.parent)
    free_now = "" if free is None else f"; {human_size(free)} free there now"
    return (
        f"disk full: {path.name} could not be written in {path.parent} ({os.strerror(code)}; it needs "
        f"{needed}{free_now}). Nothing already written was changed: {what}, then run the same command again"
    )


def _needed(path: Path, data, written: int | None) -> str:
    """The space the write needs, and how it is known: exactly (content given), about the size of the file
    it replaces (a new checkpoint is the size of the old one), or more than what it had written."""
    if not callable(data):
        return f"{human_size(len(data.encode('utf-8') if isinstance(data, str) else data))}, the file's size"
    replaced = _size(path)
    if replaced is not None and replaced >= (written or 0):
        return f"about {human_size(replaced)}, the size of the file it replaces"
    if written:
        return f"more than {human_size(written)}, what it had written when the disk filled up"
    return "an unknown amount: nothing could be written"


def _release(e: BaseException) -> None:
    """Drop the locals of the writer's finished frames: torch.save's frames hold its file open, and an
    unlinked file's space comes back only once it is closed (the error, kept for its chain, keeps them)."""
    seen = 0
    while e is not None and seen < 8:
        traceback.clear_frames(e.__traceback__)
        e, seen = e.__cause__ or e.__context__, seen + 1


def _probe_no_space(tmp: str) -> int | None:
    """ENOSPC or EDQUOT when ``tmp`` cannot grow by _PROBE_BYTES (fsync: some file systems report it only then)."""
    try:
        with open(tmp, "ab") as f:
            f.write(bytes(_PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.errno if e.errno in NO_SPACE else None
    return None


def _size(path) -> int | None:
    try:
        return os.path.getsize(path) if path is not None else None
    except OSError:
        return None


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
