"""A short measured search for the SGD learning rate at which each RNN cell trains stably on PTB.

Every (cell, lr) pair is a real ``pbexp-train`` run of ``--steps`` optimiser steps on the real data, two
runs at a time with one thread each; the script prints one table: the training perplexity over those
steps (train/ppl in the run's results), the validation perplexity after them, or how the run diverged. The
recipes in configs/model/*.yaml were chosen from its output: one notch below the largest lr that
survived, for a margin over whole epochs.

    .venv/bin/python benches/lm_lr_search.py                                   # the report's 250/250, bptt 40
    .venv/bin/python benches/lm_lr_search.py --cells rnn_relu,irnn --lrs 2,1,0.5 --steps 600
    .venv/bin/python benches/lm_lr_search.py --cells irnn --optimizer adam --lrs 0.003,0.001,0.0003
    .venv/bin/python benches/lm_lr_search.py --override model.emb_size=650 --override model.hidden_size=650

Run dirs go to ``--out`` (default outputs/lr_search/<cell>_lr<lr>); an existing one is deleted first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pbexp.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_one(cell, lr, args):
    run_dir = Path(args.out) / f"{cell}_lr{lr}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        str(BIN / "pbexp-train"),
        f"model={cell}",
        f"trainer.optimizer={args.optimizer}",
        f"trainer.lr={lr}",
        f"trainer.max_steps={args.steps}",
        "trainer.epochs=1",
        "trainer.log_every=50",
        "trainer.num_threads=1",
        f"trainer.amp={args.amp}",
        "trainer.checkpoint_every=0",
        f"hydra.run.dir={run_dir}",
        *args.override,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    secs = time.perf_counter() - t
    run = RunDir(run_dir)
    res = run.read_results() or {"status": f"no {run.results.name}"}
    return cell, lr, res, secs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="rnn_tanh,rnn_relu,irnn,gru,lstm")
    p.add_argument("--lrs", default="20,10,3,1,0.3")
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--amp", default="none")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--out", default="outputs/lr_search")
    args = p.parse_args(argv)
    if not args.override:  # the report's RNN-types setting
        args.override = ["model.emb_size=250", "model.hidden_size=250", "trainer.bptt=40"]
    pairs = [(c, lr) for c in args.cells.split(",") for lr in args.lrs.split(",")]
    print(
        f"# {len(pairs)} runs of {args.steps} {args.optimizer} steps, {args.jobs} at a time, amp={args.amp}, "
        f"overrides: {' '.join(args.override)}",
        flush=True,
    )
    print(
        "| cell | lr | train ppl (mean of the steps) | valid ppl | status | s |\n|---|---|---|---|---|---|", flush=True
    )
    with ThreadPoolExecutor(args.jobs) as pool:
        for cell, lr, res, secs in pool.map(lambda cl: run_one(*cl, args), pairs):
            status = res.get("status", "?")
            train = res.get("train/ppl")
            valid = res.get("valid/ppl")
            err = res.get("error", "")[:60]
            print(
                f"| {cell} | {lr} | {train if train is None else round(train, 1)} | "
                f"{valid if valid is None else round(valid, 1)} | {status} {err} | {secs:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
