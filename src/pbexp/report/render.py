"""Output formats: a table as markdown (with its title, notes and reference marks), CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from pbexp.report.runs import Run
from pbexp.report.tables import Table

FORMATS = ("markdown", "csv", "json")


def cell(value) -> str:
    """Markdown cell: floats with 2 decimals (4 below 1: accuracies), '–' for no number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table, title: str, notes: list[str], references: list[str]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in table.columns) + " |" for row in table.rows]
    if notes:
        lines += ["", *notes]
    if references:
        lines += ["", "Published reference marks:", *references]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=table.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: "" if row.get(c) is None else row[c] for c in table.columns} for row in table.rows)
    return out.getvalue()


def to_json(table: Table) -> str:
    return json.dumps([{c: row.get(c) for c in table.columns} for row in table.rows], indent=2) + "\n"


def title_of(table: Table, runs: list[Run], dirs: list[Path]) -> str:
    failed = sum(not r.completed and not r.pruned for r in runs)
    pruned = sum(r.pruned for r in runs)
    where = ", ".join(str(d) for d in dirs)
    counts = (f", {failed} failed" if failed else "") + (f", {pruned} pruned" if pruned else "")
    return f"{table.title}: {len(runs)} run(s) from {where}{counts}"


def format_table(table: Table, fmt: str, title: str, notes: list[str], references: list[str]) -> str:
    """The table in ``fmt`` (one of FORMATS); only markdown carries the title, notes and references."""
    if fmt == "csv":
        return to_csv(table)
    if fmt == "json":
        return to_json(table)
    return to_markdown(table, title, notes, references)
