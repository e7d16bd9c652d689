"""One way to write a file that others may read at any moment: a temp file beside it, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str | Callable[[str], None]) -> None:
    """A reader sees no file or the whole file; a failed write (disk full, a kill) leaves nothing half-written.
    ``data`` is the content, or a function that writes the content to the temp path it is given (torch.save).
    The temp file is unique, so two writers never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if not callable(data):
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if callable(data):
            data(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a results or data file is for others to read too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
