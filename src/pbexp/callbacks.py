"""Hydra callbacks for sweeps: TensorBoard names that say what each job varies, and a non-zero exit once
every job has run when some failed."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback

from pbexp.rundir import RunDir

log = logging.getLogger("pbexp")

SWEPT_KEYS = ".swept_keys.json"  # in the sweep dir: the keys this sweep varies, for each job's TensorBoard name
TB_VIEW = "tb"  # <sweep>/tb/<what varies> -> ../<job>/tb: `tensorboard --logdir <sweep>/tb`


def swept_keys(config) -> list[str]:
    """The keys a sweep varies: the sweeper's params (experiment presets) and command-line sweeps (a,b)."""
    keys = [str(k) for k in (config.hydra.sweeper.get("params") or {})]
    for o in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        if o.is_sweep_override() and o.key_or_group not in keys:
            keys.append(o.key_or_group)
    return keys


def tb_name(overrides: list[str], keys: list[str]) -> str:
    """'model=gru,trainer.lr=5' from a job's overrides; a file path shows as its file name."""
    chosen = {}
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key in keys:
            chosen[key] = Path(value).name if "/" in value else value
    return ",".join(f"{k}={v}" for k, v in chosen.items())


class SweepStatus(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / SWEPT_KEYS).write_text(json.dumps(swept_keys(config)), encoding="utf-8")

    def on_job_start(self, config, **kwargs) -> None:
        """Link <sweep>/tb/<what this job varies> to the job's tb/, so TensorBoard tells the curves apart."""
        hydra = config.hydra
        if str(hydra.mode) != "RunMode.MULTIRUN":
            return
        sweep = Path(hydra.sweep.dir)
        try:
            keys = json.loads((sweep / SWEPT_KEYS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        name = tb_name(list(hydra.overrides.task), keys) or f"job {hydra.job.num}"
        target = RunDir(Path("..") / str(hydra.sweep.subdir)).tb
        view = sweep / TB_VIEW
        view.mkdir(exist_ok=True)
        link = view / name
        if link.is_symlink() and Path(os.readlink(link)) != target:  # two jobs with the same name
            link = view / f"{name} (job {hydra.job.num})"
        if not link.is_symlink():
            try:
                link.symlink_to(target, target_is_directory=True)
            except OSError as e:  # a file system without symlinks: the job dirs still work
                log.debug("no TensorBoard name link %s: %s", link, e)

    def on_multirun_end(self, config, **kwargs) -> None:
        failed = []
        for job in sorted(p for p in Path(config.hydra.sweep.dir).iterdir() if RunDir(p).results.exists()):
            status = (RunDir(job).read_results() or {}).get("status", "unreadable")
            if status not in ("completed", "pruned"):  # pruned: an Optuna sweep stopped it on purpose
                failed.append(f"{job.name} ({status})")
        if failed:
            print(f"pbexp-train: {len(failed)} sweep job(s) did not complete: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)
