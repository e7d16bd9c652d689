"""A run directory's layout, in one place.

Everything a run writes and every tool reads (train, trainer, logger, report, t-SNE, eval, search,
benches, tests) asks :class:`RunDir` for the path or the record, so the file names below exist only here::

    <run dir>/results.json          the final record (status, metrics, overrides), written atomically
    <run dir>/metrics.jsonl         one JSON record per finished epoch
    <run dir>/test_examples.npz     per-example test results of the best weights, for paired comparisons:
                                    classifiers ``pred``, ``label`` (int64 [N]); language models ``loss_sum``
                                    (float64 [W], nats summed over each test window) and ``tokens`` (int64 [W])
    <run dir>/vocab.txt             the vocabulary, one token per line
    <run dir>/tb/                   TensorBoard event files
    <run dir>/checkpoints/last.pt   everything needed to resume (and last.prev.pt, the one before)
    <run dir>/checkpoints/best.pt   the weights with the best monitored valid metric
    <run dir>/.hydra/               Hydra's record of how the run was started
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from pbexp.files import write_atomic

_RESULTS, _METRICS, _EXAMPLES, _VOCAB, _TB, _CHECKPOINTS, _HYDRA = (
    "results.json",
    "metrics.jsonl",
    "test_examples.npz",
    "vocab.txt",
    "tb",
    "checkpoints",
    ".hydra",
)
_LAST, _BEST, _LOCK = "last.pt", "best.pt", ".pbexp.lock"
# Config keys that may differ when a run dir is continued (where and how fast it runs, not what it computes):
# the CLI's provenance check lets them change, and pbexp-report keeps runs that differ only in them together.
RESUMABLE_KEYS = ("trainer.resume", "trainer.device", "trainer.num_threads", "trainer.log_every", "trainer.compile")


def _epoch_of(line: str) -> float:
    """The epoch of one metrics line; infinity for a line that is not a record (a half-written one)."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class RunDir:
    """One run's folder. Cheap to make (nothing is read or created until asked); ``os.fspath`` gives its path."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.path / _RESULTS

    @property
    def metrics(self) -> Path:
        return self.path / _METRICS

    @property
    def test_examples(self) -> Path:
        return self.path / _EXAMPLES

    @property
    def vocab(self) -> Path:
        return self.path / _VOCAB

    @property
    def tb(self) -> Path:
        return self.path / _TB

    @property
    def checkpoints(self) -> Path:
        return self.path / _CHECKPOINTS

    @property
    def last(self) -> Path:
        """The resume checkpoint."""
        return self.checkpoints / _LAST

    @property
    def best(self) -> Path:
        """The best-valid weights."""
        return self.checkpoints / _BEST

    @property
    def hydra(self) -> Path:
        return self.path / _HYDRA

    @property
    def config(self) -> Path:
        """The composed config the run was started with."""
        return self.hydra / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.hydra / "overrides.yaml"

    @property
    def hydra_config(self) -> Path:
        """Hydra's own settings for the run, among them runtime.choices (config group -> name)."""
        return self.hydra / "hydra.yaml"

    @property
    def lock(self) -> Path:
        return self.path / _LOCK

    def artifact(self, name: str) -> Path:
        """A file a self-training model saves itself into (fasttext.bin, sklearn.pkl), beside the checkpoints."""
        return self.checkpoints / name

    def weights(self) -> Path | None:
        """The checkpoint with the weights to use: the best one, else the last one; None when neither exists."""
        return next((p for p in (self.best, self.last) if p.is_file()), None)

    def tb_events(self) -> list[Path]:
        """The event files in the order they were written (a resume's file after the run's first one). Not by
        name: 'events.out.tfevents.<seconds>.<host>.<pid>.<n>' puts writer 10 of a process before writer 9."""

        def written(f: Path) -> tuple[int, int]:
            seconds = f.name.split(".")[3]
            return int(seconds) if seconds.isdigit() else 0, f.stat().st_mtime_ns

        return sorted(self.tb.glob("events.out.tfevents.*"), key=written)

    @staticmethod
    def is_run(path: str | os.PathLike) -> bool:
        """A folder that holds a run: its results, or Hydra's record of one (a run that died early)."""
        run = RunDir(path)
        return run.results.is_file() or run.hydra.is_dir()

    @staticmethod
    def has_started(path: str | os.PathLike) -> bool:
        """A folder a run has written checkpoints or results into (what ``trainer.resume`` can continue)."""
        run = RunDir(path)
        return run.checkpoints.is_dir() or run.results.exists()

    # ---- results.json --------------------------------------------------------------------------
    def read_results(self) -> dict | None:
        """The results record, or None when it is missing, unreadable or not a JSON object."""
        try:
            data = json.loads(self.results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_results(self, results: dict) -> None:
        write_atomic(self.results, json.dumps(results, indent=2, sort_keys=True) + "\n")

    # ---- test_examples.npz ---------------------------------------------------------------------
    def write_test_examples(self, arrays: dict[str, np.ndarray]) -> None:
        """The per-example test results (the arrays named in this module's docstring), compressed, atomically."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomic(self.test_examples, buffer.getvalue())

    def read_test_examples(self) -> dict[str, np.ndarray] | None:
        """The per-example test results, or None when the file is missing or unreadable."""
        try:
            with np.load(self.test_examples, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            return None

    def is_complete(self) -> bool:
        return (self.read_results() or {}).get("status") == "completed"

    # ---- metrics.jsonl -------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """The epoch records in epoch order. A half-written line (a killed run) is skipped; an epoch written
        twice (a resumed run) counts once, its last record."""
        try:
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        by_epoch = {}
        for line in lines:
            try:
                record = json.loads(line)
                record["epoch"] = int(record["epoch"])
            except (ValueError, KeyError, TypeError):
                continue
            by_epoch[record["epoch"]] = record
        return [by_epoch[e] for e in sorted(by_epoch)]

    def truncate_metrics(self, keep_epochs: int) -> None:
        """On resume: drop the epoch records a killed process wrote after the checkpoint we resume from."""
        if not self.metrics.exists():
            return
        kept = [
            line for line in self.metrics.read_text(encoding="utf-8").splitlines() if _epoch_of(line) <= keep_epochs
        ]
        write_atomic(self.metrics, "".join(line + "\n" for line in kept))  # the lines as written: nothing merged

    def clear_started(self) -> None:
        """A fresh start in a folder where an earlier attempt died before its first checkpoint: its epoch
        records and event files would otherwise mix with this run's."""
        for stale in [self.metrics, *self.tb_events()]:
            stale.unlink(missing_ok=True)
