"""Fault injection for the resume tests: ``PBEXP_KILL_AT=step:N`` SIGKILLs the process right after
optimiser step N; ``PBEXP_KILL_AT=checkpoint:N`` SIGKILLs it in the middle of the N-th checkpoint
write (temp file written, not yet renamed). Unset, it costs one dict lookup at start-up."""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("PBEXP_KILL_AT", "")
_KIND, _, _N = _SPEC.partition(":")
_AT = int(_N) if _N.isdigit() else -1
_counts = {"checkpoint": 0}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int) -> None:
    if _KIND == "step" and step == _AT:
        _die()


def during_checkpoint() -> None:
    if _KIND == "checkpoint":
        _counts["checkpoint"] += 1
        if _counts["checkpoint"] == _AT:
            _die()
