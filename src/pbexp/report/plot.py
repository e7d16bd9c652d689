"""``--plot``: learning curves, the per-epoch validation points and the training curve TensorBoard logged.
Runs that differ only in their seed are one curve: the mean over their completed runs, with a band from the
lowest to the highest run (min-max, not a standard deviation: with 2-5 seeds it shows every run)."""

from __future__ import annotations

from pathlib import Path

from pbexp.report.runs import ReportError, Run
from pbexp.report.seeds import Group, group_runs, without_seed
from pbexp.rundir import RunDir


def distinguishing_overrides(runs: list[Run]) -> dict[str, str]:
    """Run label -> the overrides that differ between the runs (what a sweep varied)."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    return {r.label: " ".join(o for o in r.overrides if o not in common) for r in runs}


def group_names(groups: list[Group]) -> list[str]:
    """Each group's overrides that differ between the groups (seeds aside); its runs' labels when none do."""
    overrides = [without_seed(g.first.overrides) if len(g.runs) > 1 else g.first.overrides for g in groups]
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    names = [" ".join(o for o in ovr if o not in common) for ovr in overrides]
    return [name or g.label for name, g in zip(names, groups)]


def logged_curve(run: Run, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar from the run's TensorBoard event files (every log_every steps); a
    step written again after a resume keeps its last value."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    points = {}
    for f in RunDir(run.path).tb_events():
        try:
            for event in EventFileLoader(str(f)).Load():
                for v in event.summary.value:
                    if v.tag == tag:  # the loader hands scalars over as 0-d tensors
                        points[event.step] = (
                            float(tensor_util.make_ndarray(v.tensor))
                            if v.WhichOneof("value") == "tensor"
                            else v.simple_value
                        )
        except Exception:  # noqa: BLE001 - a truncated event file still gives the points before the cut
            continue
    return sorted(points.items())


def mean_curve(curves: list[list[tuple[float, float]]]) -> tuple[list, list, list, list]:
    """Curves of several runs, point by point (the k-th point of each run that has one: epochs, or log
    steps, line up across seeds): x, mean, min, max."""
    xs, means, lows, highs = [], [], [], []
    for k in range(max(len(c) for c in curves)):
        points = [c[k] for c in curves if len(c) > k and c[k][1] is not None]
        if not points:
            continue
        values = [v for _, v in points]
        xs.append(sum(x for x, _ in points) / len(points))
        means.append(sum(values) / len(values))
        lows.append(min(values))
        highs.append(max(values))
    return xs, means, lows, highs


def plot_curves(runs: list[Run], path: Path) -> None:
    """Learning curves over optimiser steps, one colour per run (per group of seeds: its mean, a min-max band):
    the training ppl as logged (dashed, LM) and the validation ppl (LM) or accuracy (classifiers) after each
    epoch (solid, dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(r.metrics for r in runs):
        metrics_file = RunDir(".").metrics.name  # the file name only, the same in every run dir
        raise ReportError(f"--plot: no run has per-epoch metrics ({metrics_file}); nothing to plot")
    tasks = {r.task for r in runs if r.metrics} - {None}
    if len(tasks) > 1:
        raise ReportError("--plot: the runs mix language models and classifiers; plot one task at a time")
    lm = tasks != {"clf"}
    valid_key = "valid/ppl" if lm else "valid/acc"
    groups = group_runs(runs)
    seeds = any(len(g.runs) > 1 for g in groups)
    fig, ax = plt.subplots(figsize=(8, 5))
    for group, name in zip(groups, group_names(groups)):
        # Over seeds, the completed runs make the curve (a failed run's leftovers would bend the mean).
        drawn = [r for r in (group.completed if len(group.runs) > 1 else group.runs) if r.metrics]
        if not drawn:
            continue
        if len(group.runs) == 1:
            run = group.first
            name += "" if run.completed else " (pruned)" if run.pruned else " (failed)"
        else:
            of = f" of {len(group.runs)}" if len(drawn) < len(group.runs) else ""
            name += f" (mean of {len(drawn)}{of} seeds)"
        valid = [[(m.get("step", m["epoch"]), m.get(valid_key)) for m in r.metrics] for r in drawn]
        xs, means, lows, highs = mean_curve(valid)
        (line,) = ax.plot(xs, means, marker="o", label=name)
        if len(drawn) > 1:
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        if lm:
            train = [logged_curve(r, "train/ppl") for r in drawn]
            if any(train):
                xs, means, _, _ = mean_curve([c for c in train if c])
                ax.plot(xs, means, "--", color=line.get_color(), alpha=0.7)
    ax.set_xlabel("optimiser step")
    if seeds:
        ax.set_title("over seeds: the mean, and a band from the lowest to the highest run", fontsize="medium")
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
