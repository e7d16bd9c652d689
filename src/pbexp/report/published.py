"""The report's published numbers (``--with-report``): ``published.yaml`` in this package, put beside ours."""

from __future__ import annotations

from importlib import resources

import yaml

from pbexp.report.tables import Table


def load_published() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("published.yaml").read_text(encoding="utf-8"))


def published_value(rows: list[dict], key, column: str):
    for row in rows:
        if key in row["keys"]:
            return row["values"].get(column)
    return None


def add_published(table: Table, published: dict) -> list[str]:
    """Puts "<column> (report)" beside each compared column; returns the notes to print with the table."""
    entry = published["tables"].get(table.name)
    if entry is None:
        return [f"the report has no table for {table.name}"]
    if not table.on_report_dataset:  # the report's numbers are of another dataset: nothing to compare with
        return [
            f"the report's {table.name} numbers are on {table.scope.dataset_title}; these runs are on "
            f"{', '.join(table.datasets)}: not put beside them"
        ]
    columns = []
    for column in table.columns:
        columns.append(column)
        if column in table.compared:
            columns.append(f"{column} (report)")
            for row in table.rows:
                row[f"{column} (report)"] = published_value(entry["rows"], row[table.key], table.compared[column])
    table.columns = columns
    notes = [f"report: {entry['title']}"]
    if entry.get("note"):
        notes.append(f"note: {entry['note']}")
    return notes


def reference_lines(published: dict, table: Table) -> list[str]:
    """The outside reference marks for the metric this table shows (none beside a train-ppl-only table), when
    the runs are on the marks' dataset (or do not say)."""
    lines = []
    for group in published["references"].values():
        if set(group["columns"]) & set(table.columns) and set(table.datasets) <= {group["dataset"]}:
            lines += [f"- {m['name']}: {m['metric']} {m['value']} ({m['source']})" for m in group["marks"]]
    return lines
