"""pbexp's training path vs the plain PyTorch loop a researcher writes by hand, same process.

Both train the same model (same initial weights) on the same real PTB batches with SGD + clipping;
they alternate, ``--repeats`` times, ``--steps`` steps each, and the script prints tokens/s of
each and the median ratio pbexp / plain (goal >= 1.0; below 0.95 is a regression).

    python benches/lm_throughput.py                 # Zaremba small: 2x200, batch 20, bptt 35
    python benches/lm_throughput.py --size medium   # 2x650
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from pbexp.data.ptb import load_ptb
from pbexp.models.lm import RNNLanguageModel
from pbexp.training.logger import RunLogger
from pbexp.training.tasks import LMTask, batchify, detach_hidden
from pbexp.training.trainer import Trainer

SIZES = {"small": 200, "medium": 650, "large": 1500}


def plain_loop(model, train, steps, bptt, lr, clip, start_row):
    """The hand-written loop (pytorch/examples' ``train()``, with torch.optim.SGD)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    hidden = model.init_hidden(train.size(1))
    total = 0.0
    t = time.perf_counter()
    for k in range(steps):
        i = start_row + k * bptt
        x, y = train[i:i + bptt], train[i + 1:i + 1 + bptt]
        hidden = detach_hidden(hidden)
        opt.zero_grad()
        out, hidden = model(x, hidden)
        loss = F.cross_entropy(out.view(-1, out.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        total += loss.item()
    return steps * bptt * train.size(1) / (time.perf_counter() - t)


def pbexp_loop(model, data, steps, batch_size, bptt, lr, clip, start_batch, tmp):
    cfg = SimpleNamespace(optimizer="sgd", lr=lr, momentum=0.0, weight_decay=0.0, clip=clip, schedule="none",
                          epochs=1, max_steps=steps, limit_batches=0, log_every=200, checkpoint_every=0)
    task = LMTask(data, batch_size, bptt)
    trainer = Trainer(cfg, task, model, tmp, torch.device("cpu"), seed=0)
    trainer.batch_in_epoch = start_batch
    task.start_epoch(model, 1, 0)
    t = time.perf_counter()
    trainer.run_batches(RunLogger(tmp, enabled=False))
    return steps * bptt * batch_size / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", default=os.environ.get("PBEXP_DATA_MIRROR", "data"))
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_ptb(args.data, download=False)
    h, bs, bptt = SIZES[args.size], 20, 35
    base = RNNLanguageModel(len(data.vocab), "LSTM", h, h, 2, dropout=0.0 if args.size == "small" else 0.5)
    train = batchify(data.train, bs)
    tmp = Path("/tmp/pbexp-bench")
    ratios, plains, ours = [], [], []
    print(f"Zaremba {args.size}: 2x{h} LSTM, batch {bs}, bptt {bptt}, {args.steps} steps x {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    for r in range(args.repeats):
        start = (r * args.steps) % (train.size(0) // bptt - args.steps)
        # The order alternates so neither loop always runs on a warmer (or busier) machine.
        runs = [("plain", lambda: plain_loop(copy.deepcopy(base), train, args.steps, bptt, 1.0, 0.25, start * bptt)),
                ("pbexp", lambda: pbexp_loop(copy.deepcopy(base), data, args.steps, bs, bptt, 1.0, 0.25, start, tmp))]
        got = dict((name, fn()) for name, fn in (runs if r % 2 == 0 else runs[::-1]))
        plains.append(got["plain"])
        ours.append(got["pbexp"])
        ratios.append(got["pbexp"] / got["plain"])
        print(f"  run {r + 1}: plain {got['plain']:8.0f} tok/s   pbexp {got['pbexp']:8.0f} tok/s   "
              f"ratio {ratios[-1]:.3f}")
    print(f"median: plain {statistics.median(plains):.0f} tok/s, pbexp {statistics.median(ours):.0f} tok/s, "
          f"ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
