"""Search workers against batches: the same 8 trials of unequal length (two epoch sizes, 20 and 240 batches of
a small LSTM on the real PTB), searched by 2 workers that never wait (hydra.sweeper.n_jobs=2) and by today's
batches (hydra.sweeper.mode=batched with hydra/launcher=joblib: 2 trials launched together, the next 2 asked
when the slower one ends). Prints wall time and the workers' busy fraction: time inside trials / (workers x wall).

    PBEXP_DATA_MIRROR=../shared/data .venv/bin/python benches/search_workers.py [--order SLSLLLSS] [--out DIR]

The trials are fixed by enqueueing them into each study before the search starts, in --order (S short, L long;
the default is random.Random(0)'s shuffle of 4 of each), so both modes run the same trials in the same order.
A trial's time is its job's: from Hydra writing <run>/.hydra/config.yaml to the run writing its results
(data loading, training, valid and test); the table gives the mean short and long trial too, since a busy
machine makes trials slower, and unevenly so over the minutes the two searches take: the busy fraction is
the measure of the scheduling alone. One thread per job.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from pbexp.rundir import RunDir
from pbexp.search import study_storage

REPO = Path(__file__).resolve().parents[1]

SEARCH = """# @package _global_
defaults:
  - override /hydra/sweeper: pbexp_optuna
hydra:
  sweeper:
    direction: minimize
    pruner: none
    params:
      trainer.limit_batches: choice({short}, {long})
"""
RUN = [
    "model.emb_size=100",
    "model.hidden_size=100",
    "trainer.epochs=1",
    "trainer.num_threads=1",
    "trainer.checkpoint_every=0",
    "dataset.download=false",
]
MODES = {
    "batched": ["hydra.sweeper.mode=batched", "hydra/launcher=joblib", "hydra.launcher.n_jobs={workers}"],
    "workers": ["hydra.sweeper.mode=workers"],
}


def search(mode: str, sweep: Path, config_dir: Path, lengths: list[int], workers: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="pbexp", storage=study_storage(None, sweep), direction="minimize")
    for n in lengths:
        study.enqueue_trial({"trainer.limit_batches": n})
    args = [
        "-m",
        "-cd",
        str(config_dir),
        "hparams_search=bench",
        *RUN,
        f"hydra.sweeper.n_trials={len(lengths)}",
        f"hydra.sweeper.n_jobs={workers}",
        *(a.format(workers=workers) for a in MODES[mode]),
        f"hydra.sweep.dir={sweep}",
    ]
    start = time.time()
    with open(sweep.parent / f"{mode}.log", "w") as out:
        proc = subprocess.run([sys.executable, "-m", "pbexp.train", *args], stdout=out, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if proc.returncode:
        sys.exit(f"the {mode} search failed (exit {proc.returncode}): see {sweep.parent / f'{mode}.log'}")
    spans = {}  # trial number -> seconds in its job
    for job in (RunDir(p) for p in sweep.iterdir() if p.name.isdigit()):
        spans[int(job.path.name)] = job.results.stat().st_mtime - job.config.stat().st_mtime
    return {"mode": mode, "wall": wall, "spans": spans, "command": args}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", default="SLSLLLSS", help="the trials' lengths in order: S short, L long")
    ap.add_argument("--short", type=int, default=20, help="batches in a short trial's epoch")
    ap.add_argument("--long", type=int, default=240, help="batches in a long trial's epoch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", default="batched,workers")
    ap.add_argument(
        "--out", type=Path, default=REPO / "outputs" / "bench_search_workers" / f"{datetime.now():%Y%m%d-%H%M%S}"
    )
    a = ap.parse_args()
    lengths = [{"S": a.short, "L": a.long}[c] for c in a.order.upper()]
    config_dir = a.out / "configs"
    (config_dir / "hparams_search").mkdir(parents=True)
    (config_dir / "hparams_search" / "bench.yaml").write_text(SEARCH.format(short=a.short, long=a.long))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for mode in a.modes.split(","):
        rows.append(search(mode, a.out / mode, config_dir, lengths, a.workers))
        print(f"{mode}: {rows[-1]['wall']:.1f} s; command: pbexp-train {' '.join(rows[-1]['command'])}", flush=True)
    print(f"\n{len(lengths)} trials ({a.order.upper()}: S = {a.short}, L = {a.long} batches), {a.workers} at a time")
    print(f"| mode | wall s | in trials s | busy (in trials / ({a.workers} x wall)) | S trial s | L trial s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        assert sorted(r["spans"]) == list(range(len(lengths))), r
        busy = sum(r["spans"].values())
        mean = {c: statistics.mean(r["spans"][i] for i, k in enumerate(a.order.upper()) if k == c) for c in "SL"}
        print(
            f"| {r['mode']} | {r['wall']:.1f} | {busy:.1f} | {busy / (a.workers * r['wall']):.0%} "
            f"| {mean['S']:.1f} | {mean['L']:.1f} |"
        )
    print(f"\nrun dirs and logs: {a.out}")


if __name__ == "__main__":
    main()
