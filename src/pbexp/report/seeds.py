"""Seeds as an axis: runs that differ only in ``seed`` are one group, and a table cell over a group is the
mean ± sample standard deviation (ddof=1) of its completed runs, with n (and a 95 % t interval on request).

A group of one run is that run: its cells are its own values, so a sweep without seeds reports as before.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from pbexp.checks import is_number
from pbexp.report.runs import Run
from pbexp.rundir import RESUMABLE_KEYS

SEED_KEY = "seed"


def flat(node, prefix: str = "") -> dict:
    """{"trainer.lr": 5, ...} from a nested config."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def override_key(item: str) -> str:
    return item.lstrip("+").partition("=")[0]


def without_seed(overrides: list[str]) -> list[str]:
    return [o for o in overrides if override_key(o) not in (SEED_KEY, *RESUMABLE_KEYS)]


def setting_key(run: Run) -> str:
    """What a run trained, but its seed: its config and its overrides, without the seed and RESUMABLE_KEYS (how
    it ran: seeds run on another machine or with other threads still belong together)."""
    config = {k: v for k, v in flat(run.config).items() if k not in (SEED_KEY, *RESUMABLE_KEYS)} if run.config else {}
    return json.dumps([config, sorted(without_seed(run.overrides))], sort_keys=True, default=str)


def status_word(run: Run) -> str:
    """completed | failed | diverged | interrupted | pruned ... as the run's results say (no results: failed)."""
    status = run.results.get("status")
    return str(status) if status else "failed"


@dataclass
class Group:
    """Runs that differ only in their seed, in job order."""

    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]

    @property
    def seeds(self) -> list:
        return [r.setting(SEED_KEY) for r in self.runs]

    @property
    def label(self) -> str:
        return ", ".join(r.label for r in self.runs)

    @property
    def overrides(self) -> list[str]:
        """The overrides every run has but the seed (a RESUMABLE_KEYS one may differ), then seed=<each run's>."""
        if len(self.runs) == 1:
            return self.first.overrides
        shared = [o for o in self.first.overrides if all(o in r.overrides for r in self.runs)]
        return [*(o for o in shared if override_key(o) != SEED_KEY), f"{SEED_KEY}=" + ",".join(map(str, self.seeds))]

    @property
    def status_text(self) -> str:
        """A run's own status; for seeds 'completed', or '2 of 3 runs; 1 diverged (seed 3)'."""
        if len(self.runs) == 1:
            return self.first.status_text
        if len(self.completed) == len(self.runs):
            return "completed"
        ended = {}
        for run in self.runs:
            if not run.completed:
                ended.setdefault(status_word(run), []).append(str(run.setting(SEED_KEY)))
        how = ", ".join(
            f"{len(seeds)} {word} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
            for word, seeds in ended.items()
        )
        return f"{len(self.completed)} of {len(self.runs)} runs; {how}"

    def value(self, get):
        """``get(run)`` of the one run; over seeds, the Summary of the completed runs' numbers (None if none)."""
        if len(self.runs) == 1:
            return get(self.first)
        return summarize([get(r) for r in self.completed])


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by everything but their seed, groups in the order of their first run."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(setting_key(run), Group([])).runs.append(run)
    return list(groups.values())


@dataclass(frozen=True)
class Summary:
    """Numbers over seeds: mean, sample std (ddof=1, None below two runs), n and the 95 % t interval."""

    values: tuple[float, ...]
    note: str = ""  # e.g. "extrapolated" (epoch times scaled up from epochs cut short)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        return math.sqrt(math.fsum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    def ci95(self) -> tuple[float, float] | None:
        """mean ± t(0.975, n-1) · std / sqrt(n): where the mean over seeds lies, if the runs are a fair sample."""
        if self.n < 2:
            return None
        from scipy.stats import t  # imported here: scipy takes a while to load and only --ci needs it

        half = float(t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half


def summarize(values: list) -> Summary | None:
    """The numbers among ``values`` as a Summary (None when there are none). A float subclass that marks how
    it was measured (tables.Extrapolated) carries its mark into the summary's note."""
    numbers = [v for v in values if is_number(v) and math.isfinite(v)]
    if not numbers:
        return None
    notes = sorted({v.note for v in numbers if getattr(v, "note", "")})
    return Summary(tuple(float(v) for v in numbers), ", ".join(notes))
