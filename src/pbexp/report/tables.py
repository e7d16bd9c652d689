"""The report's tables: what a row is about (each table's key, from a run's config), how each table is built
from the runs, and which table ``--table auto`` picks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbexp.checks import is_number
from pbexp.report.runs import ReportError, Run, read_yaml

TABLES = ("rnn_types", "embedding_size", "hidden_units", "pretrained", "layers", "imdb_models", "generic")
RNN_TYPES = ("LSTM", "GRU", "RNN-tanh", "RNN-ReLU", "IRNN")  # the report's row order, then IRNN
CELL_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN-tanh", "RNN_RELU": "RNN-ReLU"}
# model=<name> -> (cell, init), for runs whose .hydra/config.yaml is gone.
LM_MODELS = {
    "lstm": ("LSTM", None),
    "gru": ("GRU", None),
    "rnn_tanh": ("RNN_TANH", None),
    "rnn_relu": ("RNN_RELU", None),
    "irnn": ("RNN_RELU", "identity"),
}
TRAINED, PRETRAINED = "trained LSTM", "pretrained (GloVe)"
GENERIC_METRICS = (
    "train/ppl",
    "valid/ppl",
    "test/ppl",
    "valid/acc",
    "test/acc",
    "test/precision",
    "test/recall",
    "test/f1",
    "perf/epoch_s",
)

# ---------------------------------------------------------------------------------------------
# Row keys and cell values, from one run


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
    """Mean seconds per whole epoch over the epoch records, else the last epoch's from the results. Epochs cut
    short (limit_batches, max_steps) give their time scaled to a whole epoch, marked "extrapolated"."""
    cut = [m["perf/whole_epoch_s_extrapolated"] for m in run.metrics if "perf/whole_epoch_s_extrapolated" in m]
    if cut and run.completed:
        return f"{sum(cut) / len(cut):.1f} (extrapolated)"
    times = [m["perf/epoch_s"] for m in run.metrics if isinstance(m.get("perf/epoch_s"), (int, float))]
    if times and run.completed:
        return sum(times) / len(times)
    return run.result("perf/epoch_s")


def int_setting(key: str) -> Callable[[Run], object]:
    def get(run: Run):
        value = run.setting(key)
        return int(value) if is_number(value) else value

    return get


def result_of(key: str) -> Callable[[Run], object]:
    return lambda run: run.result(key)


# ---------------------------------------------------------------------------------------------
# Building a table


@dataclass(frozen=True)
class Spec:
    """A table with one row per run: the key column, and the metric columns (header -> getter)."""

    title: str
    task: str
    key: str
    key_of: Callable[[Run], object]
    metrics: dict


SPECS = {
    "rnn_types": Spec(
        "Problem 6 - RNN types (PTB)",
        "lm",
        "RNN type",
        rnn_type,
        {"Train ppl": result_of("train/ppl"), "Valid ppl": result_of("valid/ppl"), "Test ppl": result_of("test/ppl")},
    ),
    "embedding_size": Spec(
        "Problem 6 - Embedding size (PTB)",
        "lm",
        "Embedding size",
        int_setting("model.emb_size"),
        {"Train ppl": result_of("train/ppl")},
    ),
    "hidden_units": Spec(
        "Problem 6 - Hidden units (PTB)",
        "lm",
        "Hidden units",
        int_setting("model.hidden_size"),
        {"Train ppl": result_of("train/ppl"), "Time per epoch (s)": epoch_seconds},
    ),
    "layers": Spec(
        "Problem 6 - Layers (PTB)", "lm", "Layers", int_setting("model.num_layers"), {"Test ppl": result_of("test/ppl")}
    ),
    "imdb_models": Spec(
        "Problem 5.3 - IMDB models",
        "clf",
        "Model",
        model_name,
        {
            "Precision": result_of("test/precision"),
            "Recall": result_of("test/recall"),
            "Accuracy": result_of("test/acc"),
        },
    ),
}


@dataclass
class Table:
    name: str
    title: str
    key: str  # the column whose value matches a published row
    columns: list[str]
    rows: list[dict]
    compared: dict  # our column -> the published column it is compared with
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
        raise ReportError(
            f"table {name} is for {table_task(name)} runs, but {other.label} is a {other.task} run "
            f"(try --table generic or --table auto)"
        )
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
    return Table(
        "pretrained",
        "Problem 6 - Trained vs pretrained embeddings, train ppl per epoch (PTB)",
        "Epoch",
        ["Epoch", *headers],
        rows,
        dict(zip(headers, arms)),
        "lm",
    )


def generic_table(runs: list[Run]) -> Table:
    metrics = [k for k in GENERIC_METRICS if any(r.result(k) is not None for r in runs)]
    rows = [
        {
            "Run": r.label,
            "Overrides": " ".join(r.overrides),
            "Task": r.task,
            **{k: r.result(k) for k in metrics},
            "Status": r.status_text,
        }
        for r in runs
    ]
    tasks = {r.task for r in runs} - {None}
    return Table(
        "generic",
        "Runs",
        "Run",
        ["Run", "Overrides", "Task", *metrics, "Status"],
        rows,
        {},
        tasks.pop() if len(tasks) == 1 else None,
    )


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
LM_KEYS = {
    "rnn_types": rnn_type,
    "embedding_size": SPECS["embedding_size"].key_of,
    "hidden_units": SPECS["hidden_units"].key_of,
    "layers": SPECS["layers"].key_of,
    "pretrained": pretrained_arm,
}


def names_each_run(key_of: Callable[[Run], object], runs: list[Run]) -> bool:
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
