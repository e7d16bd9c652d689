"""Output formats: a table as markdown (with its title, notes and reference marks), CSV or JSON.

A cell over seeds (a :class:`~pbexp.report.seeds.Summary`) reads ``157.11 ± 2.30 (n=3)`` in markdown (with
``--ci``: ``157.11 ± 2.30 (n=3; 95% CI [151.40, 162.82])``); CSV and JSON give its column the mean and add
"<column> std" and "<column> n" after it (``--ci``: "<column> ci95 low" / "high"; JSON also "<column> values",
each run's number), so every cell stays one number.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from pbexp.checks import is_number
from pbexp.report.runs import Run
from pbexp.report.seeds import Summary, group_runs
from pbexp.report.tables import Table

FORMATS = ("markdown", "csv", "json")


def digits(value: float) -> int:
    """2 decimals, 4 below 1 (accuracies)."""
    return 2 if abs(value) >= 1 else 4


def summary_cell(s: Summary, ci: bool) -> str:
    d = digits(s.mean)
    text = f"{s.mean:.{d}f}" + (f" ± {s.std:.{d}f}" if s.std is not None else "")
    extra = [f"n={s.n}"]
    interval = s.ci95() if ci else None
    if interval:
        extra.append(f"95% CI [{interval[0]:.{d}f}, {interval[1]:.{d}f}]")
    if s.note:
        extra.append(s.note)
    return f"{text} ({'; '.join(extra)})"


def cell(value, ci: bool = False) -> str:
    """Markdown cell: floats with 2 decimals (4 below 1: accuracies), '–' for no number."""
    if isinstance(value, Summary):
        return summary_cell(value, ci)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits(value)}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table, title: str, notes: list[str], references: list[str], ci: bool = False) -> str:
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(row.get(c), ci) for c in table.columns) + " |" for row in table.rows]
    if notes:
        lines += ["", *notes]
    if references:
        lines += ["", "Published reference marks:", *references]
    return "\n".join(lines) + "\n"


def flat_rows(table: Table, ci: bool, with_values: bool) -> tuple[list[str], list[dict]]:
    """Columns and rows with each column over seeds spread into mean, std, n (and the interval, the values)."""
    over_seeds = {c for c in table.columns if any(isinstance(row.get(c), Summary) for row in table.rows)}
    extras = ["std", "n", *(["ci95 low", "ci95 high"] if ci else []), *(["values"] if with_values else [])]
    columns = [name for c in table.columns for name in [c, *(f"{c} {e}" for e in extras if c in over_seeds)]]
    rows = []
    for row in table.rows:
        flat = {}
        for c in table.columns:
            value = row.get(c)
            if c not in over_seeds:
                flat[c] = value
                continue
            s = value if isinstance(value, Summary) else None
            one = value if is_number(value) else None  # a group of one run: its own number
            interval = s.ci95() if s else None
            flat[c] = s.mean if s else value
            flat[f"{c} std"] = s.std if s else None
            flat[f"{c} n"] = s.n if s else 1 if one is not None else None
            if ci:
                flat[f"{c} ci95 low"], flat[f"{c} ci95 high"] = interval or (None, None)
            if with_values:
                flat[f"{c} values"] = list(s.values) if s else [one] if one is not None else []
        rows.append(flat)
    return columns, rows


def to_csv(table: Table, ci: bool = False) -> str:
    columns, rows = flat_rows(table, ci, with_values=False)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: "" if row.get(c) is None else row[c] for c in columns} for row in rows)
    return out.getvalue()


def to_json(table: Table, ci: bool = False) -> str:
    columns, rows = flat_rows(table, ci, with_values=True)
    return json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2) + "\n"


def title_of(table: Table, runs: list[Run], dirs: list[Path]) -> str:
    failed = sum(not r.completed and not r.pruned for r in runs)
    pruned = sum(r.pruned for r in runs)
    where = ", ".join(str(d) for d in dirs)
    counts = (f", {failed} failed" if failed else "") + (f", {pruned} pruned" if pruned else "")
    groups = group_runs(runs)
    seeds = f" in {len(groups)} setting(s) over seeds" if len(groups) < len(runs) else ""
    return f"{table.title}: {len(runs)} run(s){seeds} from {where}{counts}"


def format_table(table: Table, fmt: str, title: str, notes: list[str], references: list[str], ci: bool = False) -> str:
    """The table in ``fmt`` (one of FORMATS); only markdown carries the title, notes and references."""
    if fmt == "csv":
        return to_csv(table, ci)
    if fmt == "json":
        return to_json(table, ci)
    return to_markdown(table, title, notes, references, ci)
