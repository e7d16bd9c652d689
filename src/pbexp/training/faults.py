"""Fault injection for the resume tests: ``PBEXP_KILL_AT=step:N`` SIGKILLs the process right after
optimiser step N; ``PBEXP_KILL_AT=checkpoint:N`` SIGKILLs it in the middle of the N-th checkpoint
write (temp file written, not yet renamed; writes of the best weights count too). ``PBEXP_KILL_SIGNAL=SIGTERM``
(or SIGINT, ...) sends that signal at the kill point instead of SIGKILL: a user's Ctrl-C or a
scheduler's SIGTERM arriving at a known step, with no race against the run finishing first.
Unset, it costs one dict lookup at start-up."""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("PBEXP_KILL_AT", "")
_KIND, _, _N = _SPEC.partition(":")
_AT = int(_N) if _N.isdigit() else -1
_SIGNAL = getattr(signal, os.environ.get("PBEXP_KILL_SIGNAL") or "SIGKILL")
_counts = {"checkpoint": 0}


def _die() -> None:
    os.kill(os.getpid(), _SIGNAL)


def after_step(step: int) -> None:
    if _KIND == "step" and step == _AT:
        _die()


def during_checkpoint() -> None:
    if _KIND == "checkpoint":
        _counts["checkpoint"] += 1
        if _counts["checkpoint"] == _AT:
            _die()
