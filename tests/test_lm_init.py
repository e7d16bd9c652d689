"""Each parameter of the language model starts where its ``model.init`` says, for every init and every cell.

The expected distribution of each parameter is written out here from the schemes' definitions (Zaremba et
al.'s uniform, pytorch/examples' word_language_model, Le et al.'s IRNN, and PyTorch's own module
defaults), not read from pbexp; each is checked by its range (a uniform's bound is reached and never passed)
and its spread (the standard deviation of U(-a, a) is a / sqrt(3); of N(0, s^2), s).
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers.configs import make_model
from pbexp.models.lm import CELLS, INITS

VOCAB, EMB, HID, LAYERS, RANGE, SCALE, INPUT_STD = 300, 40, 256, 2, 0.1, 0.5, 0.001
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def torch_default(name: str) -> tuple:
    """PyTorch's own initialisation: nn.Embedding N(0, 1); nn.Linear and nn.RNN/LSTM/GRU U(-1/sqrt(fan), ...)
    with fan the Linear's input size or the RNN's hidden size."""
    return ("normal", 1.0) if name == "embedding.weight" else ("uniform", 1 / math.sqrt(HID))


def expected(init: str, name: str) -> tuple:
    """(kind, size) of the distribution ``name`` starts from: ("uniform", a), ("normal", s), ("zero",),
    or ("identity", scale)."""
    if init == "uniform":
        return ("zero",) if name == "decoder.bias" else ("uniform", RANGE)
    if init in ("io_uniform", "identity") and not name.startswith("rnn."):
        # pytorch/examples: only the encoder and decoder weights are drawn again (IRNN's embedding too)
        return ("uniform", RANGE) if name in ("embedding.weight", "decoder.weight") else ("zero",)
    if init == "identity":  # IRNN
        if "weight_hh" in name:
            return ("identity", SCALE)
        return ("normal", INPUT_STD) if "weight_ih" in name else ("zero",)
    return torch_default(name)


def check(p: torch.Tensor, spec: tuple, name: str) -> None:
    x = p.detach().double().flatten()
    if spec[0] == "zero":
        assert torch.count_nonzero(x) == 0, name
        return
    if spec[0] == "identity":
        gates = p.shape[0] // HID
        assert torch.equal(p.detach(), torch.cat([spec[1] * torch.eye(HID)] * gates)), name
        return
    kind, size = spec
    std = x.std().item()
    assert abs(x.mean().item()) < 4 * size / math.sqrt(x.numel()), name  # centred on 0
    if kind == "uniform":
        assert x.abs().max().item() <= size, name
        assert x.abs().max().item() > 0.97 * size, name  # the bound is reached: not a narrower scheme
        assert std == pytest.approx(size / math.sqrt(3), rel=0.1), name
    else:
        assert std == pytest.approx(size, rel=0.1), name
        assert (x.abs() > 2 * size).double().mean().item() == pytest.approx(0.0455, abs=0.02), name  # normal tails


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("init", INITS)
def test_every_parameter_starts_from_its_schemes_distribution(init, cell):
    torch.manual_seed(0)
    m = make_model(
        "lstm",
        vocab_size=VOCAB,
        cell=cell,
        emb_size=EMB,
        hidden_size=HID,
        num_layers=LAYERS,
        init=init,
        init_range=RANGE,
        identity_scale=SCALE,
        input_std=INPUT_STD,
    )
    names = [name for name, _ in m.named_parameters()]
    assert len(names) == 3 + 4 * LAYERS  # embedding, decoder weight and bias, four tensors per layer
    for name, p in m.named_parameters():
        if name.startswith("rnn."):
            assert p.shape[0] == GATES[cell] * HID, name
        check(p, expected(init, name), name)


def test_the_examples_init_keeps_the_recurrent_weights_three_times_smaller_at_1000_units():
    """The issue's cause in numbers: at 1,000 units U(-0.1, 0.1) on the recurrent matrix gives it a spectral
    radius near 1.8 (tanh saturates); pytorch/examples' init leaves it at PyTorch's 1/sqrt(1000), near 0.6."""
    radius = {}
    for init in ("uniform", "io_uniform"):
        torch.manual_seed(0)
        m = make_model("rnn_tanh", vocab_size=50, emb_size=8, hidden_size=1000, num_layers=1, init=init)
        radius[init] = torch.linalg.eigvals(m.rnn.weight_hh_l0.detach()).abs().max().item()
    assert radius["uniform"] == pytest.approx(0.1 * math.sqrt(1000 / 3), rel=0.1)  # circular law: a sqrt(n/3)
    assert radius["io_uniform"] == pytest.approx(math.sqrt(1 / 3), rel=0.1)
