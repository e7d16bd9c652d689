"""pbexp-report: finished runs and sweeps -> the report's tables (markdown, CSV or JSON), learning curves.

    pbexp-report <sweep or run dir> [more dirs ...] [--table auto|rnn_types|embedding_size|hidden_units|
                 pretrained|layers|imdb_models|generic] [--format markdown|csv|json] [--with-report]
                 [--plot out.png] [--output FILE]

A directory holding ``results.json`` or ``.hydra/`` is one run; any other directory contributes its
immediate subfolders that are runs (a sweep's jobs ``0/``, ``1/``, ..., sorted by number). Every
run is a row: a job that failed, diverged or died without ``results.json`` shows as ``failed`` with
its error, never silently missing. ``--with-report`` adds the report's published numbers
(``published.yaml``, next to this file) in a "<column> (report)" column beside each of ours.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from pbexp.errors import PbexpError

TABLES = ("rnn_types", "embedding_size", "hidden_units", "pretrained", "layers", "imdb_models", "generic")
RNN_TYPES = ("LSTM", "GRU", "RNN-tanh", "RNN-ReLU", "IRNN")  # the report's row order, then IRNN
CELL_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN-tanh", "RNN_RELU": "RNN-ReLU"}
# model=<name> -> (cell, init), for runs whose .hydra/config.yaml is gone.
LM_MODELS = {"lstm": ("LSTM", None), "gru": ("GRU", None), "rnn_tanh": ("RNN_TANH", None),
             "rnn_relu": ("RNN_RELU", None), "irnn": ("RNN_RELU", "identity")}
TRAINED, PRETRAINED = "trained LSTM", "pretrained (GloVe)"
GENERIC_METRICS = ("train/ppl", "valid/ppl", "test/ppl", "valid/acc", "test/acc", "test/precision", "test/recall",
                   "test/f1", "perf/epoch_s")
ERROR_CHARS = 80


class ReportError(PbexpError):
    """A user error: missing directory, no runs, unknown table, a table that does not fit the runs."""


# ---------------------------------------------------------------------------------------------
# Reading runs


@dataclass
class Run:
    """One run directory, read once: results, config, overrides and per-epoch metrics."""

    path: Path
    label: str                      # how rows name it: "<sweep dir>/<job>" or "<run dir>"
    results: dict
    config: dict                    # .hydra/config.yaml, {} if absent
    overrides: list[str]
    metrics: list[dict]             # metrics.jsonl, one record per epoch
    choices: dict = field(default_factory=dict)  # .hydra/hydra.yaml runtime.choices (config group -> name)

    @property
    def completed(self) -> bool:
        return self.results.get("status") == "completed"

    @property
    def status_text(self) -> str:
        """'completed', or 'failed: <first ~80 characters of the error>'."""
        if self.completed:
            return "completed"
        error = " ".join(str(self.results.get("error") or f"status {self.results.get('status')!r}").split())
        return "failed: " + (error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 1] + "…")

    def result(self, key: str):
        """A number from results.json, None for failed runs (their leftovers are not results)."""
        value = self.results.get(key) if self.completed else None
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

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


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def read_metrics(path: Path) -> list[dict]:
    """Epoch records of metrics.jsonl; a half-written line (a killed run) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    by_epoch = {}
    for line in lines:
        try:
            record = json.loads(line)
            record["epoch"] = int(record["epoch"])
            by_epoch[record["epoch"]] = record  # a resumed run may repeat an epoch: the last one counts
        except (ValueError, KeyError, TypeError):
            continue
    return [by_epoch[e] for e in sorted(by_epoch)]


def load_run(path: Path, label: str) -> Run:
    results = read_json(path / "results.json")
    if results is None:
        error = "no results.json" if not (path / "results.json").exists() else "unreadable results.json"
        results = {"status": "failed", "error": error}
    config = read_yaml(path / ".hydra" / "config.yaml")
    overrides = results.get("overrides")
    if not isinstance(overrides, list):
        overrides = read_yaml(path / ".hydra" / "overrides.yaml")
    hydra_cfg = read_yaml(path / ".hydra" / "hydra.yaml") or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    return Run(path=path, label=label, results=results, config=config if isinstance(config, dict) else {},
               overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
               metrics=read_metrics(path / "metrics.jsonl"), choices=choices if isinstance(choices, dict) else {})


def is_run_dir(path: Path) -> bool:
    return (path / "results.json").is_file() or (path / ".hydra").is_dir()


def job_order(path: Path):
    """Sweep jobs by number (0, 1, 2, ..., 10), other folder names after them, alphabetically."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def collect_runs(dirs: list[Path]) -> list[Run]:
    runs = []
    for d in dirs:
        if not d.is_dir():
            raise ReportError(f"{d} is not a directory")
        if is_run_dir(d):
            runs.append(load_run(d, d.resolve().name))
            continue
        jobs = sorted((p for p in d.iterdir() if p.is_dir() and is_run_dir(p)), key=job_order)
        if not jobs:
            raise ReportError(f"no runs found in {d} (a run dir holds results.json or .hydra/; a sweep, such folders)")
        runs.extend(load_run(job, f"{d.resolve().name}/{job.name}") for job in jobs)
    return runs


# ---------------------------------------------------------------------------------------------
# What a row is about: each table's key, derived from a run's config


def rnn_type(run: Run) -> str | None:
    """LSTM | GRU | RNN-tanh | RNN-ReLU, and IRNN for a ReLU RNN with identity init."""
    cell, init = run.setting("model.cell"), run.setting("model.init")
    if cell is None:  # no config: the model= choice says which cell
        cell, init = LM_MODELS.get(str(run.override("model") or run.choices.get("model")), (None, None))
    if cell is None:
        return None
    name = CELL_NAMES.get(str(cell).upper(), str(cell))
    if init == "identity":
        return "IRNN" if name == "RNN-ReLU" else f"{name} (identity init)"
    return name


def model_name(run: Run) -> str | None:
    """The model's config name (model=cnn -> 'cnn'); the class name when no config name is known."""
    return run.override("model") or run.choices.get("model") or run.results.get("model")


def pretrained_arm(run: Run) -> str:
    return TRAINED if run.setting("model.pretrained") in (None, "", "null") else PRETRAINED


def epoch_seconds(run: Run) -> float | str | None:
    """Mean seconds per whole epoch over metrics.jsonl, else the last epoch's from results.json. Epochs cut
    short (limit_batches, max_steps) give their time scaled to a whole epoch, marked "extrapolated"."""
    cut = [m["perf/whole_epoch_s_extrapolated"] for m in run.metrics if "perf/whole_epoch_s_extrapolated" in m]
    if cut and run.completed:
        return f"{sum(cut) / len(cut):.1f} (extrapolated)"
    times = [m["perf/epoch_s"] for m in run.metrics if isinstance(m.get("perf/epoch_s"), (int, float))]
    if times and run.completed:
        return sum(times) / len(times)
    return run.result("perf/epoch_s")


def int_setting(key: str):
    def get(run: Run):
        value = run.setting(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return get


def result_of(key: str):
    return lambda run: run.result(key)


# ---------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Spec:
    """A table with one row per run: the key column, and the metric columns (header -> getter)."""

    title: str
    task: str
    key: str
    key_of: object
    metrics: dict


SPECS = {
    "rnn_types": Spec("Problem 6 - RNN types (PTB)", "lm", "RNN type", rnn_type,
                      {"Train ppl": result_of("train/ppl"), "Valid ppl": result_of("valid/ppl"),
                       "Test ppl": result_of("test/ppl")}),
    "embedding_size": Spec("Problem 6 - Embedding size (PTB)", "lm", "Embedding size", int_setting("model.emb_size"),
                           {"Train ppl": result_of("train/ppl")}),
    "hidden_units": Spec("Problem 6 - Hidden units (PTB)", "lm", "Hidden units", int_setting("model.hidden_size"),
                         {"Train ppl": result_of("train/ppl"), "Time per epoch (s)": epoch_seconds}),
    "layers": Spec("Problem 6 - Layers (PTB)", "lm", "Layers", int_setting("model.num_layers"),
                   {"Test ppl": result_of("test/ppl")}),
    "imdb_models": Spec("Problem 5.3 - IMDB models", "clf", "Model", model_name,
                        {"Precision": result_of("test/precision"), "Recall": result_of("test/recall"),
                         "Accuracy": result_of("test/acc")}),
}


@dataclass
class Table:
    name: str
    title: str
    key: str                        # the column whose value matches a published row
    columns: list[str]
    rows: list[dict]
    compared: dict                  # our column -> the published column it is compared with
    task: str | None = None


def row_order(value):
    """RNN types in the report's order, numbers ascending, names alphabetically, unknown last."""
    if value in RNN_TYPES:
        return (0, RNN_TYPES.index(value), "")
    if isinstance(value, (int, float)):
        return (1, value, "")
    return (2, 0, str(value)) if value is not None else (3, 0, "")


def table_task(name: str) -> str | None:
    """The task a table is for: lm or clf; None for generic (any run)."""
    return SPECS[name].task if name in SPECS else "lm" if name == "pretrained" else None


def other_task_run(name: str, runs: list[Run]) -> Run | None:
    """The first run of the other task than table ``name``'s, if any."""
    task = table_task(name)
    return next((r for r in runs if task and r.task is not None and r.task != task), None)


def check_fits(name: str, runs: list[Run]) -> None:
    """Refuse a table meant for the other task, or one whose row key a completed run lacks."""
    other = other_task_run(name, runs)
    if other is not None:
        raise ReportError(f"table {name} is for {table_task(name)} runs, but {other.label} is a {other.task} run "
                          f"(try --table generic or --table auto)")
    spec = SPECS.get(name)
    for run in runs if spec else []:
        if run.completed and spec.key_of(run) is None:
            raise ReportError(f"table {name} needs the {spec.key!r} of each run; {run.label} has none")


def per_run_table(name: str, runs: list[Run]) -> Table:
    spec = SPECS[name]
    rows = []
    for run in sorted(runs, key=lambda r: row_order(spec.key_of(r))):
        key = spec.key_of(run)
        row = {spec.key: key if key is not None else "?"}
        row.update({header: get(run) for header, get in spec.metrics.items()})
        row.update({"Run": run.label, "Status": run.status_text})
        rows.append(row)
    columns = [spec.key, *spec.metrics, "Run", "Status"]
    return Table(name, spec.title, spec.key, columns, rows, {m: m for m in spec.metrics}, spec.task)


def pretrained_table(runs: list[Run]) -> Table:
    """The report's per-epoch table: rows are epochs, one train-ppl column per run (its arm), then a status row."""
    ordered = sorted(runs, key=lambda r: pretrained_arm(r) == PRETRAINED)  # trained first, as in the report
    arms = [pretrained_arm(r) for r in ordered]
    # Two runs of the same arm (seeds, two sweeps) get their label in the header to stay apart.
    headers = [arm if arms.count(arm) == 1 else f"{arm} [{run.label}]" for arm, run in zip(arms, ordered)]
    epochs = sorted({m["epoch"] for run in ordered for m in run.metrics})
    rows = []
    for epoch in epochs:
        row = {"Epoch": epoch}
        for header, run in zip(headers, ordered):
            record = next((m for m in run.metrics if m["epoch"] == epoch), {})
            value = record.get("train/ppl")
            row[header] = value if isinstance(value, (int, float)) else None
        rows.append(row)
    rows.append({"Epoch": "status", **{h: run.status_text for h, run in zip(headers, ordered)}})
    return Table("pretrained", "Problem 6 - Trained vs pretrained embeddings, train ppl per epoch (PTB)", "Epoch",
                 ["Epoch", *headers], rows, dict(zip(headers, arms)), "lm")


def distinguishing_overrides(runs: list[Run]) -> dict[str, str]:
    """Run label -> the overrides that differ between the runs (what a sweep varied)."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    return {r.label: " ".join(o for o in r.overrides if o not in common) for r in runs}


def generic_table(runs: list[Run]) -> Table:
    metrics = [k for k in GENERIC_METRICS if any(r.result(k) is not None for r in runs)]
    rows = [{"Run": r.label, "Overrides": " ".join(r.overrides), "Task": r.task,
             **{k: r.result(k) for k in metrics}, "Status": r.status_text} for r in runs]
    tasks = {r.task for r in runs} - {None}
    return Table("generic", "Runs", "Run", ["Run", "Overrides", "Task", *metrics, "Status"], rows, {},
                 tasks.pop() if len(tasks) == 1 else None)


def build_table(name: str, runs: list[Run]) -> Table:
    check_fits(name, runs)
    if name == "pretrained":
        return pretrained_table(runs)
    if name == "generic":
        return generic_table(runs)
    return per_run_table(name, runs)


# ---------------------------------------------------------------------------------------------
# --table auto


def table_for_experiment(experiment: str) -> str | None:
    """experiment=rnn_types -> rnn_types; a preset whose name contains one table's name also counts."""
    name = experiment.strip().lower().replace("-", "_")
    if name in TABLES and name != "generic":
        return name
    found = [t for t in TABLES if t != "generic" and t in name]
    return found[0] if len(found) == 1 else None


def experiment_names(dirs: list[Path], runs: list[Run]) -> set[str]:
    """Every experiment=<name> value of the sweeps (multirun.yaml) and of the runs' own overrides."""
    names = set()
    for d in dirs:
        multirun = read_yaml(d / "multirun.yaml") or {}
        task = (((multirun.get("hydra") or {}).get("overrides") or {}).get("task")) or []
        for item in task:
            key, _, value = str(item).lstrip("+").partition("=")
            if key == "experiment":
                names.update(v for v in value.split(",") if v)
    for run in runs:
        if run.override("experiment"):
            names.add(str(run.override("experiment")))
    return names


# The LM tables and the row key each varies.
LM_KEYS = {"rnn_types": rnn_type, "embedding_size": int_setting("model.emb_size"),
           "hidden_units": int_setting("model.hidden_size"), "layers": int_setting("model.num_layers"),
           "pretrained": pretrained_arm}


def names_each_run(key_of, runs: list[Run]) -> bool:
    """True when the key varies and tells every run apart (two runs with one key: something else varied too)."""
    keys = [key_of(r) for r in runs]
    return len(set(keys) - {None}) > 1 and len(set(keys)) == len(keys)


def table_from_data(runs: list[Run]) -> str:
    """The table whose key is the one thing that varies across the runs; generic when that is unclear."""
    tasks = {r.task for r in runs} - {None}
    if len(runs) < 2 or len(tasks) != 1:
        return "generic"
    if tasks == {"clf"}:
        return "imdb_models" if names_each_run(model_name, runs) else "generic"
    varying = [name for name, key_of in LM_KEYS.items() if len({key_of(r) for r in runs} - {None}) > 1]
    return varying[0] if len(varying) == 1 and names_each_run(LM_KEYS[varying[0]], runs) else "generic"


def detect_table(dirs: list[Path], runs: list[Run]) -> str:
    """The sweep's experiment=<table> when it names one table of the runs' task, else what the data says."""
    tables = {table_for_experiment(n) for n in experiment_names(dirs, runs)} - {None}
    if len(tables) == 1 and other_task_run(next(iter(tables)), runs) is None:
        return tables.pop()
    return table_from_data(runs)


# ---------------------------------------------------------------------------------------------
# Published numbers (--with-report)


def load_published() -> dict:
    return yaml.safe_load(resources.files("pbexp").joinpath("published.yaml").read_text(encoding="utf-8"))


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
    """The outside reference marks for the metric this table shows (none beside a train-ppl-only table)."""
    lines = []
    for group in published["references"].values():
        if set(group["columns"]) & set(table.columns):
            lines += [f"- {m['name']}: {m['metric']} {m['value']} ({m['source']})" for m in group["marks"]]
    return lines


# ---------------------------------------------------------------------------------------------
# Output formats


def cell(value) -> str:
    """Markdown cell: floats with 2 decimals (4 below 1: accuracies), '–' for no number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table, title: str, notes: list[str], references: list[str]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(table.columns) + " |",
             "| " + " | ".join("---" for _ in table.columns) + " |"]
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
    failed = sum(not r.completed for r in runs)
    where = ", ".join(str(d) for d in dirs)
    return f"{table.title}: {len(runs)} run(s) from {where}" + (f", {failed} failed" if failed else "")


# ---------------------------------------------------------------------------------------------
# --plot


def logged_curve(run: Run, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar from the run's TensorBoard event files (every log_every steps); a
    step written again after a resume keeps its last value."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util
    points = {}
    for f in sorted((run.path / "tb").glob("events.out.tfevents.*")):
        try:
            for event in EventFileLoader(str(f)).Load():
                for v in event.summary.value:
                    if v.tag == tag:  # the loader hands scalars over as 0-d tensors
                        points[event.step] = float(tensor_util.make_ndarray(v.tensor)) \
                            if v.WhichOneof("value") == "tensor" else v.simple_value
        except Exception:  # noqa: BLE001 - a truncated event file still gives the points before the cut
            continue
    return sorted(points.items())


def plot_curves(runs: list[Run], path: Path) -> None:
    """Learning curves over optimiser steps, one colour per run: the training ppl as logged (dashed, LM)
    and the validation ppl (LM) or accuracy (classifiers) after each epoch (solid, dots)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [r for r in runs if r.metrics]
    if not with_curves:
        raise ReportError("--plot: no run has per-epoch metrics (metrics.jsonl); nothing to plot")
    tasks = {r.task for r in with_curves} - {None}
    if len(tasks) > 1:
        raise ReportError("--plot: the runs mix language models and classifiers; plot one task at a time")
    lm = tasks != {"clf"}
    labels = distinguishing_overrides(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in with_curves:
        label = (labels[run.label] or run.label) + ("" if run.completed else " (failed)")
        steps = [m.get("step", m["epoch"]) for m in run.metrics]
        (line,) = ax.plot(steps, [m.get("valid/ppl" if lm else "valid/acc") for m in run.metrics], marker="o",
                          label=label)
        if lm:
            train = logged_curve(run, "train/ppl")
            ax.plot([s for s, _ in train], [v for _, v in train], "--", color=line.get_color(), alpha=0.7)
    ax.set_xlabel("optimiser step")
    if lm:
        ax.set_yscale("log")  # perplexities span orders of magnitude in the first epochs
        ax.set_ylabel("perplexity (valid per epoch: dots; train: dashed)")
    else:
        ax.set_ylabel("valid accuracy after each epoch")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=100)
    except ValueError as e:  # e.g. an extension matplotlib cannot write
        raise ReportError(f"--plot {path}: {e}") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a one-line error instead of usage + message."""

    def error(self, message):
        raise ReportError(message)


def parse_args(argv) -> argparse.Namespace:
    p = _Parser(prog="pbexp-report", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="sweep dirs (multirun) or run dirs")
    p.add_argument("--table", default="auto", help=f"auto (default) or one of: {', '.join(TABLES)}")
    p.add_argument("--format", default="markdown", help="markdown (default), csv or json")
    p.add_argument("--with-report", action="store_true", help="put the report's published numbers beside ours")
    p.add_argument("--plot", type=Path, help="write learning curves to this PNG")
    p.add_argument("--output", type=Path, help="write the table to this file instead of stdout")
    args = p.parse_args(argv)
    if args.table not in ("auto", *TABLES):
        raise ReportError(f"unknown table {args.table!r}: choose auto or one of {', '.join(TABLES)}")
    if args.format not in ("markdown", "csv", "json"):
        raise ReportError(f"unknown format {args.format!r}: choose markdown, csv or json")
    return args


def render(args, runs: list[Run]) -> str:
    name = detect_table(args.dirs, runs) if args.table == "auto" else args.table
    table = build_table(name, runs)
    notes, references = [], []
    if args.with_report:
        published = load_published()
        notes = add_published(table, published)
        references = reference_lines(published, table)
    if args.format == "csv":
        return to_csv(table)
    if args.format == "json":
        return to_json(table)
    return to_markdown(table, title_of(table, runs, args.dirs), notes, references)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        runs = collect_runs(args.dirs)
        text = render(args, runs)
        if args.plot:
            plot_curves(runs, args.plot)
            print(f"pbexp-report: wrote {args.plot}", file=sys.stderr)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text, encoding="utf-8")
            print(f"pbexp-report: wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    except (PbexpError, OSError) as e:  # OSError: an output file or folder that cannot be written
        print(f"pbexp-report: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
