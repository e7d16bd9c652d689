"""Reading runs: each run directory, through :class:`~pbexp.rundir.RunDir`, into one :class:`Run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pbexp import search
from pbexp.checks import is_number
from pbexp.errors import PbexpError
from pbexp.rundir import RunDir

ERROR_CHARS = 80


class ReportError(PbexpError):
    """A user error: missing directory, no runs, unknown table, a table that does not fit the runs."""


@dataclass
class Run:
    """One run directory, read once: results, config, overrides and per-epoch metrics."""

    path: Path
    label: str  # how rows name it: "<sweep dir>/<job>" or "<run dir>"
    results: dict
    config: dict  # .hydra/config.yaml, {} if absent
    overrides: list[str]
    metrics: list[dict]  # the epoch records, one per epoch
    choices: dict = field(default_factory=dict)  # .hydra/hydra.yaml runtime.choices (config group -> name)

    @property
    def completed(self) -> bool:
        return self.results.get("status") == "completed"

    @property
    def pruned(self) -> bool:
        """A search trial Optuna stopped on purpose: no result, but no failure either."""
        return self.results.get("status") == search.PRUNED

    @property
    def status_text(self) -> str:
        """'completed', or 'failed: <first ~80 characters of the error>' ('pruned: ...' for a stopped trial)."""
        if self.completed:
            return "completed"
        error = " ".join(str(self.results.get("error") or f"status {self.results.get('status')!r}").split())
        word = search.PRUNED if self.pruned else "failed"
        return f"{word}: " + (error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…")

    def result(self, key: str):
        """A number from the results record, None for failed runs (their leftovers are not results)."""
        value = self.results.get(key) if self.completed else None
        return value if is_number(value) else None

    def override(self, key: str):
        """The value of ``key=value`` among the overrides (last one wins; +/++ prefixes ignored), else None."""
        value = None
        for item in self.overrides:
            k, sep, v = item.lstrip("+").partition("=")
            if sep and k == key:
                value = parse_value(v)
        return value

    def setting(self, key: str):
        """A dotted config key: the composed config first, the overrides when the config is missing."""
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return self.override(key)
            node = node[part]
        return node

    @property
    def task(self) -> str | None:
        if self.results.get("task"):
            return self.results["task"]
        target = str(self.setting("dataset._target_") or self.override("dataset") or "")
        return "lm" if "ptb" in target else "clf" if "imdb" in target else None


def parse_value(text: str):
    """An override's value as Hydra would type it: '250' -> 250, 'null' -> None, paths stay strings."""
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text


def read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def load_run(path: Path, label: str) -> Run:
    run_dir = RunDir(path)
    results = run_dir.read_results()
    if results is None:  # a run that died before writing its results is still a row: a failed one
        name = run_dir.results.name
        results = {"status": "failed", "error": f"no {name}" if not run_dir.results.exists() else f"unreadable {name}"}
    config = read_yaml(run_dir.config)
    overrides = results.get("overrides")
    if not isinstance(overrides, list):
        overrides = read_yaml(run_dir.overrides)
    hydra_cfg = read_yaml(run_dir.hydra_config) or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    return Run(
        path=path,
        label=label,
        results=results,
        config=config if isinstance(config, dict) else {},
        overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
        metrics=run_dir.read_metrics(),
        choices=choices if isinstance(choices, dict) else {},
    )


def job_order(path: Path):
    """Sweep jobs by number (0, 1, 2, ..., 10), other folder names after them, alphabetically."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def collect_runs(dirs: list[Path]) -> list[Run]:
    """Each dir that is a run, else the runs among its immediate subfolders (a sweep's jobs, by number)."""
    runs = []
    for d in dirs:
        if not d.is_dir():
            raise ReportError(f"{d} is not a directory")
        if RunDir.is_run(d):
            runs.append(load_run(d, d.resolve().name))
            continue
        jobs = sorted((p for p in d.iterdir() if p.is_dir() and RunDir.is_run(p)), key=job_order)
        if not jobs:
            layout = RunDir(d)
            raise ReportError(
                f"no runs found in {d} (a run dir holds {layout.results.name} or {layout.hydra.name}/; "
                f"a sweep, such folders)"
            )
        runs.extend(load_run(job, f"{d.resolve().name}/{job.name}") for job in jobs)
    return runs
