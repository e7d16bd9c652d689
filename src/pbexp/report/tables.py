"""The report's tables: which runs each is for (a dataset and the report's models), what a row is about (each
table's key, from a run's config), how each table is built from the runs (runs that differ only in their seed
are one row, :mod:`.seeds`), and which table ``--table auto`` picks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbexp.checks import is_number
from pbexp.report.runs import ReportError, Run, read_yaml
from pbexp.report.seeds import Group, group_runs

TABLES = ("rnn_types", "embedding_size", "hidden_units", "pretrained", "layers", "imdb_models", "generic")
RNN_TYPES = ("LSTM", "GRU", "RNN-tanh", "RNN-ReLU", "IRNN")  # the report's row order, then IRNN
CELL_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN-tanh", "RNN_RELU": "RNN-ReLU"}
# model=<name> -> (cell, init), for runs whose .hydra/config.yaml is gone. Also the models of the report's
# language-model tables (configs/experiment/rnn_types.yaml's list).
LM_MODELS = {
    "lstm": ("LSTM", None),
    "gru": ("GRU", None),
    "rnn_tanh": ("RNN_TANH", None),
    "rnn_relu": ("RNN_RELU", None),
    "irnn": ("RNN_RELU", "identity"),
}
# The IMDB table's models (configs/experiment/imdb_models.yaml's list) -> their classes.
IMDB_MODELS = {
    "report_cnn": "ReportCNN",
    "report_gru": "ReportGRU",
    "fasttext": "FastText",
    "cnn": "CNNClassifier",
    "gru_clf": "GRUClassifier",
    "cnn_rnn": "CNNRNNClassifier",
}
TRAINED, PRETRAINED = "trained LSTM", "pretrained (GloVe)"
# The generic table's metrics in this order first; then any other valid/ and test/ number of the results.
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
# Which runs a table is for


@dataclass(frozen=True)
class Scope:
    """The runs a report table is for: the dataset and the models of the report's experiment."""

    dataset: str  # the dataset's config name (dataset=<name>)
    dataset_title: str  # how the report's titles name it
    models: frozenset  # model config names (model=<name>)...
    classes: frozenset  # ...and their classes: a run whose config name is unknown, or a model config of one's own


PTB_RNN_LMS = Scope("ptb", "PTB", frozenset(LM_MODELS), frozenset({"RNNLanguageModel"}))
IMDB_CLASSIFIERS = Scope("imdb", "IMDB", frozenset(IMDB_MODELS), frozenset(IMDB_MODELS.values()))


def dataset_name(run: Run) -> str | None:
    """The run's dataset: its dataset=<name> choice, else its config's dataset.name, else the loader's module
    (pbexp.data.ptb.load_ptb -> ptb); None when nothing says."""
    name = run.choices.get("dataset") or run.override("dataset") or run.setting("dataset.name")
    if name:
        return str(name)
    target = str(run.setting("dataset._target_") or "")
    return target.split(".")[-2] if target.count(".") >= 1 else None


def model_class(run: Run) -> str | None:
    target = run.setting("model._target_")
    return str(target).rsplit(".", 1)[-1] if target else run.results.get("model")


def in_scope(scope: Scope, run: Run) -> bool:
    """A run of the table's dataset and of one of its models (what a run does not say does not count against it)."""
    dataset = dataset_name(run)
    if dataset is not None and dataset != scope.dataset:
        return False
    name, cls = run.override("model") or run.choices.get("model"), model_class(run)
    return (name is None and cls is None) or name in scope.models or cls in scope.classes


def dataset_words(scope: Scope | None, runs: list[Run]) -> str:
    """The runs' dataset(s) for a title: the report's own name when they are the table's dataset."""
    names = sorted({dataset_name(r) for r in runs} - {None})
    if scope is not None and (not names or names == [scope.dataset]):
        return scope.dataset_title
    return ", ".join(names)


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


class Extrapolated(float):
    """Seconds per whole epoch scaled up from epochs cut short (limit_batches, max_steps)."""

    note = "extrapolated"

    def __str__(self) -> str:
        return f"{float(self):.1f} (extrapolated)"


def epoch_seconds(run: Run) -> float | None:
    """Mean seconds per whole epoch over the epoch records, else the last epoch's from the results. Epochs cut
    short (limit_batches, max_steps) give their time scaled to a whole epoch, marked Extrapolated."""
    cut = [m["perf/whole_epoch_s_extrapolated"] for m in run.metrics if "perf/whole_epoch_s_extrapolated" in m]
    if cut and run.completed:
        return Extrapolated(sum(cut) / len(cut))
    times = [m["perf/epoch_s"] for m in run.metrics if isinstance(m.get("perf/epoch_s"), (int, float))]
    if times and run.completed:
        return sum(times) / len(times)
    return run.result("perf/epoch_s")


def shown(value):
    """A cell as the table holds it: one run's extrapolated time as '525.1 (extrapolated)'."""
    return str(value) if isinstance(value, Extrapolated) else value


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
    """A table with one row per run (per group of seeds): the key column, and the metric columns (header ->
    getter). ``{dataset}`` in the title is the runs' dataset."""

    title: str
    scope: Scope
    task: str
    key: str
    key_of: Callable[[Run], object]
    metrics: dict


SPECS = {
    "rnn_types": Spec(
        "Problem 6 - RNN types ({dataset})",
        PTB_RNN_LMS,
        "lm",
        "RNN type",
        rnn_type,
        {"Train ppl": result_of("train/ppl"), "Valid ppl": result_of("valid/ppl"), "Test ppl": result_of("test/ppl")},
    ),
    "embedding_size": Spec(
        "Problem 6 - Embedding size ({dataset})",
        PTB_RNN_LMS,
        "lm",
        "Embedding size",
        int_setting("model.emb_size"),
        {"Train ppl": result_of("train/ppl")},
    ),
    "hidden_units": Spec(
        "Problem 6 - Hidden units ({dataset})",
        PTB_RNN_LMS,
        "lm",
        "Hidden units",
        int_setting("model.hidden_size"),
        {"Train ppl": result_of("train/ppl"), "Time per epoch (s)": epoch_seconds},
    ),
    "layers": Spec(
        "Problem 6 - Layers ({dataset})",
        PTB_RNN_LMS,
        "lm",
        "Layers",
        int_setting("model.num_layers"),
        {"Test ppl": result_of("test/ppl")},
    ),
    "imdb_models": Spec(
        "Problem 5.3 - {dataset} models",
        IMDB_CLASSIFIERS,
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
PRETRAINED_TITLE = "Problem 6 - Trained vs pretrained embeddings, train ppl per epoch ({dataset})"


@dataclass
class Table:
    name: str
    title: str
    key: str  # the column whose value matches a published row
    columns: list[str]
    rows: list[dict]  # a cell: a value, or a seeds.Summary over a group of seeds
    compared: dict  # our column -> the published column it is compared with
    task: str | None = None
    scope: Scope | None = None  # the runs the report's own table is for (None: generic)
    datasets: tuple = ()  # the runs' datasets

    @property
    def on_report_dataset(self) -> bool:
        """The runs are on the dataset of the report's table (or do not say), so its numbers compare."""
        return self.scope is not None and set(self.datasets) <= {self.scope.dataset}


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


def table_scope(name: str) -> Scope | None:
    return SPECS[name].scope if name in SPECS else PTB_RNN_LMS if name == "pretrained" else None


def runs_datasets(runs: list[Run]) -> tuple:
    return tuple(sorted({dataset_name(r) for r in runs} - {None}))


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
    for group in sorted(group_runs(runs), key=lambda g: row_order(spec.key_of(g.first))):
        key = spec.key_of(group.first)  # the same in every run of a group: they differ only in their seed
        row = {spec.key: key if key is not None else "?"}
        row.update({header: shown(group.value(get)) for header, get in spec.metrics.items()})
        row.update({"Run": group.label, "Status": group.status_text})
        rows.append(row)
    columns = [spec.key, *spec.metrics, "Run", "Status"]
    title = spec.title.format(dataset=dataset_words(spec.scope, runs))
    compared = {m: m for m in spec.metrics}
    return Table(name, title, spec.key, columns, rows, compared, spec.task, spec.scope, runs_datasets(runs))


def train_ppl_at(epoch: int) -> Callable[[Run], object]:
    def get(run: Run):
        value = next((m for m in run.metrics if m["epoch"] == epoch), {}).get("train/ppl")
        return value if is_number(value) else None

    return get


def pretrained_table(runs: list[Run]) -> Table:
    """The report's per-epoch table: rows are epochs, one train-ppl column per run (its arm; over seeds, their
    mean), then a status row."""
    groups = sorted(group_runs(runs), key=lambda g: pretrained_arm(g.first) == PRETRAINED)  # trained first
    arms = [pretrained_arm(g.first) for g in groups]
    # Two columns of the same arm (two sweeps) get their runs in the header to stay apart.
    headers = [arm if arms.count(arm) == 1 else f"{arm} [{g.label}]" for arm, g in zip(arms, groups)]
    epochs = sorted({m["epoch"] for g in groups for run in g.runs for m in run.metrics})
    rows = [{"Epoch": e, **{h: g.value(train_ppl_at(e)) for h, g in zip(headers, groups)}} for e in epochs]
    rows.append({"Epoch": "status", **{h: g.status_text for h, g in zip(headers, groups)}})
    return Table(
        "pretrained",
        PRETRAINED_TITLE.format(dataset=dataset_words(PTB_RNN_LMS, runs)),
        "Epoch",
        ["Epoch", *headers],
        rows,
        dict(zip(headers, arms)),
        "lm",
        PTB_RNN_LMS,
        runs_datasets(runs),
    )


def generic_metrics(runs: list[Run]) -> list[str]:
    """GENERIC_METRICS that some run has, then every other valid/ and test/ number (but losses) of the results."""
    have = {k for r in runs for k in r.results if r.result(k) is not None}
    extra = sorted(k for k in have if k.startswith(("valid/", "test/")) and not k.endswith("/loss"))
    return [k for k in GENERIC_METRICS if k in have] + [k for k in extra if k not in GENERIC_METRICS]


def generic_table(runs: list[Run]) -> Table:
    metrics = generic_metrics(runs)
    rows = [
        {
            "Run": g.label,
            "Overrides": " ".join(g.overrides),
            "Task": g.first.task,
            **{k: g.value(result_of(k)) for k in metrics},
            "Status": g.status_text,
        }
        for g in group_runs(runs)
    ]
    tasks = {r.task for r in runs} - {None}
    datasets = runs_datasets(runs)
    return Table(
        "generic",
        f"Runs ({', '.join(datasets)})" if datasets else "Runs",
        "Run",
        ["Run", "Overrides", "Task", *metrics, "Status"],
        rows,
        {},
        tasks.pop() if len(tasks) == 1 else None,
        None,
        datasets,
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
    """Every experiment=<name> value of the sweeps (multirun.yaml) and of the runs (overrides, Hydra's choices)."""
    names = set()
    for d in dirs:
        multirun = read_yaml(d / "multirun.yaml") or {}
        task = (((multirun.get("hydra") or {}).get("overrides") or {}).get("task")) or []
        for item in task:
            key, _, value = str(item).lstrip("+").partition("=")
            if key == "experiment":
                names.update(v for v in value.split(",") if v)
    for run in runs:
        for name in (run.override("experiment"), run.choices.get("experiment")):
            if name:
                names.add(str(name))
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


def table_from_data(groups: list[Group]) -> str:
    """The table whose runs these are (its dataset and models) and whose key is the one thing that varies
    across them (seeds aside); generic when that is unclear."""
    runs = [g.first for g in groups]  # one run per setting: seeds are not what a table's rows vary
    tasks = {r.task for r in runs} - {None}
    if len(runs) < 2 or len(tasks) != 1:
        return "generic"
    if tasks == {"clf"}:
        ours = all(in_scope(IMDB_CLASSIFIERS, r) for r in runs)
        return "imdb_models" if ours and names_each_run(model_name, runs) else "generic"
    if not all(in_scope(PTB_RNN_LMS, r) for r in runs):
        return "generic"
    varying = [name for name, key_of in LM_KEYS.items() if len({key_of(r) for r in runs} - {None}) > 1]
    return varying[0] if len(varying) == 1 and names_each_run(LM_KEYS[varying[0]], runs) else "generic"


def detect_table(dirs: list[Path], runs: list[Run]) -> str:
    """The sweep's experiment=<table> when it names one table of the runs' task; else the table whose dataset,
    models and key fit the runs; else generic."""
    tables = {table_for_experiment(n) for n in experiment_names(dirs, runs)} - {None}
    if len(tables) == 1 and other_task_run(next(iter(tables)), runs) is None:
        return tables.pop()
    return table_from_data(group_runs(runs))
