"""An independent re-implementation of pytorch/examples' word_language_model (the report's code), written
from its description and sharing no code with pbexp: its batchify and window slicing, an RNN language model
whose recurrent cells are written out gate by gate (PyTorch's gate order, so a pbexp state dict loads), its
initialisation, and its training loop (clip the total gradient norm, ``p -= lr * grad``, lr / 4 whenever the
validation loss is not lower than the best so far).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    """main.py ``batchify``: drop the ragged tail, one column per batch element."""
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int):
    """main.py ``get_batch``: the last window is shorter when the rows run out."""
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


class ReferenceRNNModel(nn.Module):
    """Encoder -> stacked recurrent layers (written out here) -> decoder; no dropout. Parameter names are
    the ones a pbexp ``RNNLanguageModel`` state dict uses, so the same weights load into both."""

    def __init__(self, cell: str, ntoken: int, ninp: int, nhid: int, nlayers: int):
        super().__init__()
        self.cell, self.nhid, self.nlayers = cell, nhid, nlayers
        g = GATES[cell]
        self.embedding = nn.Module()
        self.embedding.weight = nn.Parameter(torch.empty(ntoken, ninp))
        self.rnn = nn.Module()
        for k in range(nlayers):
            fan_in = ninp if k == 0 else nhid
            self.rnn.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(g * nhid, fan_in)))
            self.rnn.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(g * nhid, nhid)))
            self.rnn.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(g * nhid)))
            self.rnn.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(g * nhid)))
        self.decoder = nn.Module()
        self.decoder.weight = nn.Parameter(torch.empty(ntoken, nhid))
        self.decoder.bias = nn.Parameter(torch.empty(ntoken))
        self.init_weights()

    def init_weights(self, initrange: float = 0.1) -> None:
        """model.py ``init_weights``: encoder and decoder U(-0.1, 0.1), decoder bias 0; the recurrent layers
        keep nn.RNN's own U(-1/sqrt(nhid), 1/sqrt(nhid))."""
        with torch.no_grad():
            self.embedding.weight.uniform_(-initrange, initrange)
            self.decoder.weight.uniform_(-initrange, initrange)
            self.decoder.bias.zero_()
            bound = 1 / math.sqrt(self.nhid)
            for p in self.rnn.parameters():
                p.uniform_(-bound, bound)

    def init_hidden(self, bsz: int):
        h = torch.zeros(self.nlayers, bsz, self.nhid, dtype=self.decoder.weight.dtype)
        return (h, h.clone()) if self.cell == "LSTM" else h

    def step(self, k: int, x: torch.Tensor, h, c):
        """One time step of layer k: the new (h, c) (c is None except for the LSTM)."""
        w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")
        gi = x @ w_ih.t() + getattr(self.rnn, f"bias_ih_l{k}")
        gh = h @ w_hh.t() + getattr(self.rnn, f"bias_hh_l{k}")
        if self.cell == "RNN_TANH":
            return torch.tanh(gi + gh), None
        if self.cell == "RNN_RELU":
            return torch.relu(gi + gh), None
        if self.cell == "GRU":  # gates r, z, n
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return (1 - z) * n + z * h, None
        i, f, g, o = (gi + gh).chunk(4, 1)  # LSTM gates i, f, g, o
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, x: torch.Tensor, hidden):
        lstm = self.cell == "LSTM"
        hs = list(hidden[0] if lstm else hidden)
        cs = list(hidden[1]) if lstm else [None] * self.nlayers
        out = []
        for t in range(x.size(0)):
            inp = self.embedding.weight[x[t]]
            for k in range(self.nlayers):
                hs[k], cs[k] = self.step(k, inp, hs[k], cs[k])
                inp = hs[k]
            out.append(inp)
        logits = torch.stack(out) @ self.decoder.weight.t() + self.decoder.bias
        h = torch.stack(hs)
        return logits, ((h, torch.stack(cs)) if lstm else h)


def repackage_hidden(h):
    return tuple(repackage_hidden(v) for v in h) if isinstance(h, tuple) else h.detach()


@torch.no_grad()
def evaluate(model: ReferenceRNNModel, source: torch.Tensor, bptt: int) -> float:
    """main.py ``evaluate``: the mean token NLL over every window of the split."""
    hidden = model.init_hidden(source.size(1))
    total = 0.0
    for i in range(0, source.size(0) - 1, bptt):
        data, targets = get_batch(source, i, bptt)
        output, hidden = model(data, hidden)
        total += len(data) * F.cross_entropy(output.view(-1, output.size(-1)), targets).item()
    return total / (len(source) - 1)


def train_epoch(model, train_data, bptt: int, lr: float, clip: float, max_steps: int | None = None) -> list[float]:
    """main.py ``train``: one epoch of plain SGD with gradient clipping; the loss of each step."""
    hidden = model.init_hidden(train_data.size(1))
    losses = []
    for i in range(0, train_data.size(0) - 1, bptt):
        data, targets = get_batch(train_data, i, bptt)
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        output, hidden = model(data, hidden)
        loss = F.cross_entropy(output.view(-1, output.size(-1)), targets)
        loss.backward()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
        scale = min(1.0, clip / (float(norm) + 1e-6))  # clip_grad_norm_'s rule, by hand
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * scale * p.grad
        losses.append(loss.item())
        if max_steps is not None and len(losses) == max_steps:
            break
    return losses


def fit(model, train_data, valid_data, bptt: int, lr: float, clip: float, epochs: int) -> list[dict]:
    """main.py's epoch loop: train, evaluate, keep the best, else divide lr by 4. One record per epoch:
    the lr it trained with and its validation loss."""
    best, records = None, []
    for epoch in range(1, epochs + 1):
        train_epoch(model, train_data, bptt, lr, clip)
        val_loss = evaluate(model, valid_data, bptt)
        records.append({"epoch": epoch, "lr": lr, "valid_loss": val_loss})
        if best is None or val_loss < best:
            best = val_loss
        else:
            lr /= 4.0
    return records
