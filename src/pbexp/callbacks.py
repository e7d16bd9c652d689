"""Hydra callbacks: a sweep whose jobs failed exits non-zero once every job has run."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("pbexp")


class SweepStatus(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        failed = []
        for path in sorted(Path(config.hydra.sweep.dir).glob("*/results.json")):
            try:
                status = json.loads(path.read_text(encoding="utf-8")).get("status")
            except (OSError, ValueError):
                status = "unreadable"
            if status != "completed":
                failed.append(f"{path.parent.name} ({status})")
        if failed:
            print(f"pbexp-train: {len(failed)} sweep job(s) did not complete: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)
