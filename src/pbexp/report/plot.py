"""``--plot``: learning curves, the per-epoch validation points and the training curve TensorBoard logged."""

from __future__ import annotations

from pathlib import Path

from pbexp.report.runs import ReportError, Run
from pbexp.rundir import RunDir


def distinguishing_overrides(runs: list[Run]) -> dict[str, str]:
    """Run label -> the overrides that differ between the runs (what a sweep varied)."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    return {r.label: " ".join(o for o in r.overrides if o not in common) for r in runs}


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


def plot_curves(runs: list[Run], path: Path) -> None:
    """Learning curves over optimiser steps, one colour per run: the training ppl as logged (dashed, LM)
    and the validation ppl (LM) or accuracy (classifiers) after each epoch (solid, dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [r for r in runs if r.metrics]
    if not with_curves:
        metrics_file = RunDir(".").metrics.name  # the file name only, the same in every run dir
        raise ReportError(f"--plot: no run has per-epoch metrics ({metrics_file}); nothing to plot")
    tasks = {r.task for r in with_curves} - {None}
    if len(tasks) > 1:
        raise ReportError("--plot: the runs mix language models and classifiers; plot one task at a time")
    lm = tasks != {"clf"}
    labels = distinguishing_overrides(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in with_curves:
        label = (labels[run.label] or run.label) + ("" if run.completed else " (pruned)" if run.pruned else " (failed)")
        steps = [m.get("step", m["epoch"]) for m in run.metrics]
        (line,) = ax.plot(
            steps, [m.get("valid/ppl" if lm else "valid/acc") for m in run.metrics], marker="o", label=label
        )
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
