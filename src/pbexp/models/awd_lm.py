"""AWD-LSTM (Merity, Keskar & Socher 2017): the LSTM language model with its regularisers.

Each one is a drop rate (0 turns it off), drawn afresh for every window in training and none in evaluation:
- ``dropout_emb``: embedding dropout, whole words dropped from the embedding matrix (every occurrence of a word
  in the window at once; the kept rows scaled by 1 / (1 - p));
- ``dropout_in`` / ``dropout_hid`` / ``dropout_out``: variational ("locked") dropout (Gal & Ghahramani 2016) on
  the embeddings, between LSTM layers and before the decoder: one mask per batch column, the same at every time
  step of the window;
- ``weight_drop``: DropConnect on each layer's hidden-to-hidden matrix (one mask per window, shared by the whole
  batch), so the recurrent connections are regularised while the LSTM stays the fused nn.LSTM kernel.
Averaged SGD, the optimiser half of AWD-LSTM, is the trainer's ``trainer.average`` (it serves any model).

Layers are separate single-layer LSTMs so that dropout can sit between them and the last one can have the
embedding's size (tied weights with a wider hidden layer, as AWD-LSTM's 400-1150-1150-400). The carried state is
one flat tuple ``(h_1, c_1, h_2, c_2, ...)``. Defaults: configs/model/awd_lstm.yaml.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pbexp.checks import check_bool, check_choice, check_number
from pbexp.models.lm import check_lm_sizes

INITS = ("io_uniform", "uniform")


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout of ``x`` [T, B, D]: one mask [1, B, D] for every time step."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(embedding: nn.Embedding, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Look ``x`` up in ``embedding`` with whole words dropped: a mask [V, 1] over the vocabulary rows."""
    if not training or p == 0:
        return embedding(x)
    weight = embedding.weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(x, weight * mask, embedding.padding_idx)


class AWDLanguageModel(nn.Module):
    """Input ids [T, B] -> logits [T, B, vocab]; carries the hidden state between calls.

    ``num_layers`` LSTMs: the first reads ``emb_size`` inputs, every layer has ``hidden_size`` units except the
    last, which has ``emb_size`` when the weights are tied (so the decoder can share the embedding matrix).
    ``init``: ``io_uniform`` (embedding and decoder U(-init_range, init_range), decoder bias 0, LSTMs at PyTorch's
    default: Merity et al.'s code) or ``uniform`` (every weight U(-init_range, init_range): Zaremba et al.'s).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        emb_size: int,
        hidden_size: int,
        num_layers: int,
        dropout_emb: float,
        dropout_in: float,
        dropout_hid: float,
        dropout_out: float,
        weight_drop: float,
        tie_weights: bool,
        init: str,
        init_range: float,
    ):
        super().__init__()
        check_awd_config(vocab_size, emb_size, hidden_size, num_layers, tie_weights, init)
        for key, p in (
            ("dropout_emb", dropout_emb),
            ("dropout_in", dropout_in),
            ("dropout_hid", dropout_hid),
            ("dropout_out", dropout_out),
            ("weight_drop", weight_drop),
        ):
            check_number(f"model.{key}", p, 0, 1, high_open=True)
        self.dropout_emb, self.dropout_in, self.dropout_hid = dropout_emb, dropout_in, dropout_hid
        self.dropout_out, self.weight_drop = dropout_out, weight_drop
        self.embedding = nn.Embedding(vocab_size, emb_size)
        last = emb_size if tie_weights else hidden_size
        sizes = [emb_size] + [hidden_size] * (num_layers - 1) + [last]
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1]) for i in range(num_layers))
        self.decoder = nn.Linear(last, vocab_size)
        for p in self.parameters() if init == "uniform" else (self.embedding.weight, self.decoder.weight):
            nn.init.uniform_(p, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:  # Press & Wolf 2017 / Inan et al. 2017: one matrix for input and output words
            self.decoder.weight = self.embedding.weight

    def init_hidden(self, batch_size: int, device=None) -> tuple[torch.Tensor, ...]:
        state = []
        for layer in self.layers:
            h = torch.zeros(1, batch_size, layer.hidden_size, device=device)
            state += [h, h.clone()]
        return tuple(state)

    def _run_layer(self, layer: nn.LSTM, x: torch.Tensor, state):
        if not self.training or self.weight_drop == 0:
            return layer(x, state)
        # DropConnect on the recurrent matrix: the layer runs with a dropped copy; its own weight is untouched.
        dropped = F.dropout(layer.weight_hh_l0, self.weight_drop, training=True)
        return functional_call(layer, {"weight_hh_l0": dropped}, (x, state))

    def forward(self, x: torch.Tensor, hidden):
        out = embedding_dropout(self.embedding, x, self.dropout_emb, self.training)
        out = locked_dropout(out, self.dropout_in, self.training)
        new_state = []
        for i, layer in enumerate(self.layers):
            out, (h, c) = self._run_layer(layer, out, (hidden[2 * i], hidden[2 * i + 1]))
            # Under autocast the state comes back in low precision: carried and checkpointed, it keeps the
            # weights' dtype.
            new_state += [h.to(layer.weight_hh_l0.dtype), c.to(layer.weight_hh_l0.dtype)]
            last = i == len(self.layers) - 1
            out = locked_dropout(out, self.dropout_out if last else self.dropout_hid, self.training)
        return self.decoder(out), tuple(new_state)


def check_awd_config(vocab_size, emb_size, hidden_size, num_layers, tie_weights, init) -> None:
    """Raise ConfigError for values the model cannot be built with, before any tensor is made."""
    check_choice("model.init", init, INITS)
    check_lm_sizes(vocab_size, emb_size, hidden_size, num_layers)
    check_bool("model.tie_weights", tie_weights)
