"""Fault injection for the resume tests: ``PBEXP_KILL_AT=step:N`` SIGKILLs the process right after
optimiser step N; ``PBEXP_KILL_AT=checkpoint:N`` SIGKILLs it in the middle of the N-th checkpoint
write (temp file written, not yet renamed; writes of the best weights count too). ``PBEXP_KILL_SIGNAL=SIGTERM``
(or SIGINT, ...) sends that signal at the kill point instead of SIGKILL: a user's Ctrl-C or a
scheduler's SIGTERM arriving at a known step, with no race against the run finishing first.
``PBEXP_DISK_FULL_AT=checkpoint:N`` makes the N-th checkpoint write (counted the same way) fail as on a
full disk: OSError ENOSPC at the same point, for files.write_atomic to handle. ``PBEXP_KILL_TARGET=sweep``
sends the signal to the sweep's own process instead (where a terminal's Ctrl-C or a scheduler's SIGTERM lands),
when the job runs in a launcher's worker.
Unset, it costs one dict lookup at start-up."""

from __future__ import annotations

import errno
import os
import signal


def _at(spec: str) -> tuple[str, int]:
    kind, _, n = spec.partition(":")
    return kind, int(n) if n.isdigit() else -1


_KIND, _AT = _at(os.environ.get("PBEXP_KILL_AT", ""))
_FULL_KIND, _FULL_AT = _at(os.environ.get("PBEXP_DISK_FULL_AT", ""))
_SIGNAL = getattr(signal, os.environ.get("PBEXP_KILL_SIGNAL") or "SIGKILL")
_counts = {"checkpoint": 0}


def _die() -> None:
    pid = os.getpid()
    if os.environ.get("PBEXP_KILL_TARGET") == "sweep":
        from pbexp.callbacks import SWEEP_PID

        pid = int(os.environ.get(SWEEP_PID) or pid)
    os.kill(pid, _SIGNAL)


def after_step(step: int) -> None:
    if _KIND == "step" and step == _AT:
        _die()


def during_checkpoint() -> None:
    if _KIND == "checkpoint" or _FULL_KIND == "checkpoint":
        _counts["checkpoint"] += 1
        if _KIND == "checkpoint" and _counts["checkpoint"] == _AT:
            _die()
        if _FULL_KIND == "checkpoint" and _counts["checkpoint"] == _FULL_AT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
