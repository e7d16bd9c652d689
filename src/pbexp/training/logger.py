"""Where a run's numbers go: TensorBoard events, the per-epoch records of the run dir, and the console.

Tags follow DESIGN.md: ``{train,valid,test}/{loss,ppl,acc,precision,recall,f1}``, ``opt/lr``,
``opt/grad_norm``, ``perf/tokens_per_s`` (or ``perf/examples_per_s``), ``perf/epoch_s``.
"""

from __future__ import annotations

import logging
import sys

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from pbexp.rundir import RunDir

log = logging.getLogger("pbexp")

SCALAR_KEYS = ("loss", "ppl", "acc", "precision", "recall", "f1")


class RunLogger:
    """Writes TensorBoard scalars and one JSON line per epoch. ``purge_step`` (on resume) makes
    TensorBoard drop the points an interrupted process wrote after its last checkpoint."""

    def __init__(self, run_dir: RunDir, purge_step: int | None = None, enabled: bool = True):
        self.run_dir, self.enabled = RunDir(run_dir), enabled
        self.tb = SummaryWriter(str(self.run_dir.tb), purge_step=purge_step) if enabled else None

    def describe(self, config_yaml: str, metric_keys: tuple[str, ...]) -> None:
        """Once per run: the composed config as text, and a custom-scalars layout that draws train and valid
        (and test) of each metric on one chart."""
        if not self.enabled:
            return
        self.tb.add_text("config", "```yaml\n" + config_yaml + "```", 0)
        self.tb.add_custom_scalars(
            {
                "train vs valid": {
                    key: ["Multiline", [f"train/{key}", f"valid/{key}", f"test/{key}"]] for key in metric_keys
                }
            }
        )

    def scalars(self, prefix: str, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and (key in SCALAR_KEYS or "/" in key or prefix in ("opt", "perf")):
                self.tb.add_scalar(f"{prefix}/{key}" if prefix else key, value, step)

    def image(self, tag: str, figure, step: int) -> None:
        if self.enabled:
            self.tb.add_figure(tag, figure, step)

    def confusion(self, tag: str, matrix, classes, step: int) -> None:
        """A confusion matrix as an image (rows: true class, columns: predicted)."""
        if self.enabled:
            self.tb.add_figure(tag, confusion_figure(matrix, classes), step)

    def epoch_line(self, record: dict) -> None:
        if self.enabled:
            self.run_dir.append_metrics(record)

    def hparams(self, params: dict, results: dict) -> None:
        """HPARAMS tab entry written into this run's own event file (``SummaryWriter.add_hparams``
        would open a second, timestamped run directory: the 'phantom run' pitfall). Its metrics are the
        results' valid and test figures."""
        if not self.enabled:
            return
        metrics = {k: v for k, v in results.items() if k.startswith(("valid/", "test/")) and isinstance(v, float)}
        exp, ssi, sei = hparams(params, metrics)
        writer = self.tb._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Progress:
    """Log lines at every log step (also in <run dir>/train.log), plus a tqdm bar on a terminal that
    advances every step without a host sync."""

    def __init__(self, total: int, desc: str, initial: int = 0):
        self.bar = self._redirect = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)
            self._redirect = logging_redirect_tqdm()  # log lines above the bar, not onto its line
            self._redirect.__enter__()
        log.info("%s: %d batches%s", desc, total, f", resuming at {initial}" if initial else "")
        self.total, self.desc = total, desc

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def update(self, done: int, info: dict) -> None:
        text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        log.info("%s %d/%d %s", self.desc, done, self.total, text)

    def close(self) -> None:
        if self.bar is not None:
            self._redirect.__exit__(None, None, None)
            self.bar.close()


def confusion_figure(matrix, classes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    fig.tight_layout()
    return fig


def headline(results: dict) -> str:
    """'valid/ppl 120.3 test/ppl 115.9': the figures a person looks for first, for the last log line."""
    shown = [k for k in results if k.startswith(("valid/", "test/")) and k.split("/")[1] in ("ppl", "acc", "f1")]
    return " ".join(f"{k} {results[k]:.4g}" for k in shown)


def hparams_of(cfg, overrides: list[str], choices: dict) -> dict:
    """The HPARAMS entry: one key set for every run of a sweep, the common knobs plus whatever the sweep
    overrides. ``choices`` are the config group options picked (model=gru); outside Hydra, the class names."""
    params = {
        "model": choices.get("model") or str(cfg.model.get("_target_")).rsplit(".", 1)[-1],
        "dataset": choices.get("dataset") or str(cfg.dataset.get("_target_")).rsplit(".", 1)[-1],
        "seed": cfg.seed,
    }
    for key in ("optimizer", "lr", "batch_size", "epochs", "clip", "schedule"):
        params[f"trainer.{key}"] = cfg.trainer[key]
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if not key.startswith("hydra"):
            params[key] = value
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
