"""Tokens per second of one hand-written training step of a tied LSTM language model at given shapes: embedding,
2-layer nn.LSTM (dropout 0.4), tied decoder over PTB's 10,000 words, cross-entropy, backward, gradient clipping,
SGD. No data loading and no trainer: what the shapes cost on this machine, fp32 against bf16 autocast, to choose
a model size for a time budget (docs/RESULTS.md, issue 26). Median over the steps after two warm-up steps.

    python benches/lm_step_shapes.py 400,20,fp32 400,20,bf16 650,20,bf16 650,80,bf16   # hidden,batch,precision
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, BPTT = 10_000, 35


def tokens_per_s(hidden: int, batch: int, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    emb, lstm, dec = nn.Embedding(VOCAB, hidden), nn.LSTM(hidden, hidden, 2, dropout=0.4), nn.Linear(hidden, VOCAB)
    dec.weight = emb.weight
    params = [*emb.parameters(), *lstm.parameters(), dec.bias]
    opt = torch.optim.SGD(params, lr=1.0)
    x, y = torch.randint(VOCAB, (BPTT, batch)), torch.randint(VOCAB, (BPTT * batch,))
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, _ = lstm(F.dropout(emb(x), 0.4))
            loss = F.cross_entropy(dec(F.dropout(out, 0.4)).view(-1, VOCAB).float(), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        times.append(time.perf_counter() - t0)
    return BPTT * batch / statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="+", help="hidden,batch,fp32|bf16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for shape in args.shapes:
        hidden, batch, precision = shape.split(",")
        speed = tokens_per_s(int(hidden), int(batch), precision == "bf16", args.steps)
        print(f"hidden {hidden} batch {batch} {precision}: {speed:,.0f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
