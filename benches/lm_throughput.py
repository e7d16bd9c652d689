"""pbexp's training path vs the plain PyTorch loop a researcher writes by hand, same process.

Both train the same model (same initial weights) on the same real batches; they alternate,
``--repeats`` times, ``--steps`` steps each, and the script prints the speed of each and the median
ratio pbexp / plain (goal >= 1.0; >= 0.98 counts as equal on this noisy machine).

pbexp's side runs with the trainer config composed from configs/ (trainer=lm, or trainer=clf through
dataset=imdb), batch size and bptt included; only what the plain loop must match is overridden (optimizer,
lr, clip, no momentum, weight decay or schedule, no checkpoints) and the step budget. The model and the data
come from the same composed config (configs/model/, configs/dataset/: their defaults live only there).

    python benches/lm_throughput.py                   # Zaremba small LM: 2x200, batch 20, bptt 35
    python benches/lm_throughput.py --case medium     # Zaremba medium LM: 2x650 (large: 2x1500)
    python benches/lm_throughput.py --case cnn        # IMDB CNN classifier, batch 64 (examples/s)
    python benches/lm_throughput.py --case all --amp bf16   # pbexp with bf16 autocast vs plain fp32
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from pbexp.config import CONFIG_DIR, instantiate, validate
from pbexp.models import build_model
from pbexp.training.logger import RunLogger
from pbexp.training.tasks import ClassificationTask, LMTask, batchify, detach_hidden
from pbexp.training.trainer import Trainer

LM_SIZES = {"small": (200, 0.0, 1.0), "medium": (650, 0.5, 1.0), "large": (1500, 0.65, 1.0)}  # hidden, dropout, lr


def bench_cfg(task_overrides, steps, lr, clip, optimizer, amp):
    """The config pbexp-train would run with (configs/train.yaml and ``task_overrides``), its trainer set to
    what the plain loop does: ``optimizer`` at ``lr`` without momentum or weight decay, clipping at ``clip``
    (0: none), a constant lr, ``steps`` steps, no checkpoints."""
    overrides = [
        *task_overrides,
        f"trainer.optimizer={optimizer}",
        f"trainer.lr={lr}",
        f"trainer.clip={clip}",
        "trainer.momentum=0.0",
        "trainer.weight_decay=0.0",
        "trainer.schedule=none",
        "trainer.epochs=1",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every=0",
        f"trainer.amp={amp}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    validate(cfg)
    return cfg


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_lm(model, train, steps, bptt, lr, clip, start_row):
    """pytorch/examples' train() loop, with torch.optim.SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    hidden = model.init_hidden(train.size(1), train.device)
    sync(train.device)
    t = time.perf_counter()
    for k in range(steps):
        i = start_row + k * bptt
        x, y = train[i : i + bptt], train[i + 1 : i + 1 + bptt]
        hidden = detach_hidden(hidden)
        opt.zero_grad()
        out, hidden = model(x, hidden)
        loss = F.cross_entropy(out.view(-1, out.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        loss.item()  # what a hand loop does to print its running loss
    sync(train.device)
    return steps * bptt * train.size(1) / (time.perf_counter() - t)


def plain_clf(model, x, y, steps, batch_size, lr, start):
    """The usual classifier loop: shuffled minibatches, Adam, cross-entropy."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(start))
    t = time.perf_counter()
    for k in range(steps):
        j = perm[k * batch_size : (k + 1) * batch_size]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[j]), y[j])
        loss.backward()
        opt.step()
        loss.item()
    return steps * batch_size / (time.perf_counter() - t)


def pbexp_run(model, task, cfg, start_batch, seed, tmp):
    trainer = Trainer(cfg, task, model, tmp, task.device, seed=seed)
    trainer.batch_in_epoch = start_batch
    task.start_epoch(model, 1, seed)
    units = task.batch_size if isinstance(task, ClassificationTask) else task.bptt * task.train.size(1)
    sync(task.device)
    t = time.perf_counter()
    trainer.run_batches(RunLogger(tmp, enabled=False))
    sync(task.device)
    return cfg.max_steps * units / (time.perf_counter() - t)


def case_lm(name, args, tmp):
    hidden, dropout, lr = LM_SIZES[name]
    shape = [
        f"model.emb_size={hidden}",
        f"model.hidden_size={hidden}",
        "model.num_layers=2",
        f"model.dropout={dropout}",
    ]
    full = bench_cfg(["model=lstm", *shape], args.steps, lr, 0.25, "sgd", args.amp)
    data = instantiate(full.dataset, root=args.data, download=False)
    cfg = full.trainer
    bs, bptt = cfg.batch_size, cfg.bptt
    dev = torch.device(args.device)
    base = build_model(full.model, data.vocab, "lm", vocab_size=len(data.vocab)).to(dev)
    train = batchify(data.train, bs).to(dev)
    for r in range(args.repeats):
        start = (r * args.steps) % (train.size(0) // bptt - args.steps)
        yield (
            lambda start=start: plain_lm(copy.deepcopy(base), train, args.steps, bptt, lr, 0.25, start * bptt),
            lambda start=start: pbexp_run(
                copy.deepcopy(base), LMTask(data, bs, bptt, cfg.eval_batch_size, device=dev), cfg, start, 0, tmp
            ),
        )


def case_cnn(args, tmp):
    full = bench_cfg(["dataset=imdb", "model=cnn"], args.steps, 1e-3, 0.0, "adam", args.amp)
    data = instantiate(full.dataset, root=args.data, download=False)
    cfg = full.trainer
    bs = cfg.batch_size
    dev = torch.device(args.device)
    sizes = {"vocab_size": len(data.vocab), "num_classes": 2, "max_len": data.max_len, "pad_idx": data.pad_idx}
    base = build_model(full.model, data.vocab, "clf", **sizes).to(dev)
    for r in range(args.repeats):
        task = ClassificationTask(data, bs, cfg.eval_batch_size, device=dev)
        # The same examples in the same order for both: the task's shuffle for (seed=r, epoch=1).
        order = task.order(1, r)
        x, y = data.train_x[order].to(dev), data.train_y[order].to(dev)
        yield (
            lambda x=x, y=y: plain_clf(
                copy.deepcopy(base), x[: args.steps * bs], y[: args.steps * bs], args.steps, bs, 1e-3, -1
            ),
            lambda task=task, r=r: pbexp_run(copy.deepcopy(base), task, cfg, 0, r, tmp),
        )


def run_case(name, args):
    tmp = Path("/tmp/pbexp-bench")
    runs = case_cnn(args, tmp) if name == "cnn" else case_lm(name, args, tmp)
    unit = "examples/s" if name == "cnn" else "tokens/s"
    ratios, plains, ours = [], [], []
    print(
        f"{name}: {args.steps} steps x {args.repeats}, device {args.device}, {torch.get_num_threads()} threads, "
        f"pbexp amp={args.amp}"
    )
    for r, (plain, pbexp) in enumerate(runs):
        # Alternate the order so neither loop always runs on a warmer (or busier) machine.
        if r % 2 == 0:
            p, o = plain(), pbexp()
        else:
            o, p = pbexp(), plain()
        plains.append(p), ours.append(o), ratios.append(o / p)
        print(f"  run {r + 1}: plain {p:8.0f} {unit}   pbexp {o:8.0f} {unit}   ratio {o / p:.3f}")
    print(
        f"  median: plain {statistics.median(plains):.0f}, pbexp {statistics.median(ours):.0f} {unit}, "
        f"ratio {statistics.median(ratios):.3f}"
    )
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["small", "medium", "large", "cnn", "all"], default="small")
    ap.add_argument("--size", dest="case", choices=["small", "medium"], help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--amp", choices=["none", "bf16"], default="none", help="pbexp side only (plain stays fp32)")
    ap.add_argument("--data", default=os.environ.get("PBEXP_DATA_MIRROR", "data"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    cases = ["small", "medium", "cnn"] if args.case == "all" else [args.case]
    summary = {c: run_case(c, args) for c in cases}
    print("summary (median pbexp/plain): " + ", ".join(f"{c} {r:.3f}" for c, r in summary.items()))


if __name__ == "__main__":
    main()
