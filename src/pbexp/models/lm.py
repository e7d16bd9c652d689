"""The recurrent language model: embedding -> dropout -> RNN -> dropout -> linear decoder.

Follows pytorch/examples' word_language_model ``RNNModel``, plus the IRNN initialisation
(Le, Jaitly & Hinton 2015) that the report proposed as a fix for deep ReLU RNNs.
"""

from __future__ import annotations

import torch
from torch import nn

from pbexp.checks import check_bool, check_choice, check_int, check_number
from pbexp.errors import ConfigError

CELLS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}
INITS = ("uniform", "io_uniform", "identity", "default")


class RNNLanguageModel(nn.Module):
    """Input ids [T, B] -> logits [T, B, vocab]; carries the hidden state between calls.

    ``init``: ``uniform`` (every weight U(-init_range, init_range), decoder bias 0, as Zaremba et al.),
    ``io_uniform`` (only the embedding and decoder weights U(-init_range, init_range), decoder bias 0, the RNN
    left at PyTorch's U(-1/sqrt(H), 1/sqrt(H)): what pytorch/examples' word_language_model, the report's code, does),
    ``identity`` (IRNN: recurrent matrices = identity_scale * I, all RNN biases 0, input weights
    N(0, input_std^2); embedding and decoder as ``io_uniform``, as in the report's code), or ``default``
    (PyTorch's own initialisation of each module).

    Defaults: configs/model/lstm.yaml (the other LM configs extend it); ``vocab_size`` comes from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        cell: str,
        emb_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        tie_weights: bool,
        init: str,
        init_range: float,
        identity_scale: float,
        input_std: float,
    ):
        super().__init__()
        check_lm_config(vocab_size, cell, emb_size, hidden_size, num_layers, dropout, tie_weights, init)
        self.cell, self.num_layers, self.hidden_size = cell, num_layers, hidden_size
        self.drop = nn.Dropout(dropout)
        self.embedding = nn.Embedding(vocab_size, emb_size)
        kwargs = {"nonlinearity": "tanh" if cell == "RNN_TANH" else "relu"} if cell.startswith("RNN_") else {}
        self.rnn = CELLS[cell](emb_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0, **kwargs)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if init == "uniform":
            self._init_uniform(init_range, self.parameters())
        if init in ("io_uniform", "identity"):
            self._init_uniform(init_range, (self.embedding.weight, self.decoder.weight))
        if init == "identity":
            self._init_identity(identity_scale, input_std)
        if tie_weights:  # Press & Wolf 2017 / Inan et al. 2017: one matrix for input and output words
            self.decoder.weight = self.embedding.weight

    def _init_uniform(self, r: float, params) -> None:
        for p in params:
            nn.init.uniform_(p, -r, r)
        nn.init.zeros_(self.decoder.bias)

    def _init_identity(self, scale: float, input_std: float) -> None:
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight_hh"):
                gates = p.shape[0] // self.hidden_size  # 4 for LSTM, 3 for GRU, 1 for RNN
                with torch.no_grad():
                    p.copy_(torch.cat([torch.eye(self.hidden_size) * scale] * gates))
            elif name.startswith("weight_ih"):
                nn.init.normal_(p, 0.0, input_std)
            else:
                nn.init.zeros_(p)

    def init_hidden(self, batch_size: int, device=None):
        h = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return (h, h.clone()) if self.cell == "LSTM" else h

    def forward(self, x: torch.Tensor, hidden):
        emb = self.drop(self.embedding(x))
        out, hidden = self.rnn(emb, hidden)
        # Under autocast the RNN returns its state in low precision (fp16 from cuDNN even under bf16): carried
        # over the whole stream and checkpointed, it stays in the weights' dtype.
        dtype = self.rnn.weight_hh_l0.dtype
        hidden = tuple(h.to(dtype) for h in hidden) if isinstance(hidden, tuple) else hidden.to(dtype)
        return self.decoder(self.drop(out)), hidden


def check_lm_config(vocab_size, cell, emb_size, hidden_size, num_layers, dropout, tie_weights, init) -> None:
    """Raise ConfigError for values the model cannot be built with, before any tensor is made."""
    check_choice("model.cell", cell, sorted(CELLS))
    check_choice("model.init", init, INITS)
    check_lm_sizes(vocab_size, emb_size, hidden_size, num_layers)
    check_number("model.dropout", dropout, 0, 1, high_open=True)
    check_bool("model.tie_weights", tie_weights)
    if tie_weights and emb_size != hidden_size:
        raise ConfigError(
            "model.tie_weights",
            tie_weights,
            f"only with model.emb_size == model.hidden_size (got {emb_size} and {hidden_size})",
        )


def check_lm_sizes(vocab_size, emb_size, hidden_size, num_layers) -> None:
    """The sizes every language model is built from: positive integers."""
    for key, value in (
        ("model.emb_size", emb_size),
        ("model.hidden_size", hidden_size),
        ("model.num_layers", num_layers),
        ("vocab_size", vocab_size),
    ):
        check_int(key, value)
