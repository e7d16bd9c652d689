import math

import pytest
import torch
import torch.nn.functional as F

from helpers.configs import make_model
from pbexp.errors import ConfigError
from pbexp.models.lm import CELLS
from pbexp.training.metrics import perplexity


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_each_cell_runs_forward_and_backward(cell):
    torch.manual_seed(0)
    m = make_model("lstm", vocab_size=50, cell=cell, emb_size=8, hidden_size=12, num_layers=2, dropout=0.1)
    x = torch.randint(0, 50, (7, 3))
    out, h = m(x, m.init_hidden(3))
    assert out.shape == (7, 3, 50)
    if cell == "LSTM":
        assert h[0].shape == h[1].shape == (2, 3, 12)
    else:
        assert h.shape == (2, 3, 12)
    F.cross_entropy(out.view(-1, 50), x.view(-1)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.rnn.mode == {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN_TANH", "RNN_RELU": "RNN_RELU"}[cell]


IDENTITY_RELU = dict(cell="RNN_RELU", init="identity")  # the IRNN: a ReLU RNN with the identity init


def test_irnn_init_is_identity_with_zero_biases():
    torch.manual_seed(0)
    m = make_model(
        "lstm",
        vocab_size=30,
        **IDENTITY_RELU,
        emb_size=6,
        hidden_size=10,
        num_layers=3,
        identity_scale=1.0,
        input_std=0.001,
    )
    for layer in range(3):
        assert torch.equal(getattr(m.rnn, f"weight_hh_l{layer}"), torch.eye(10))
        assert torch.count_nonzero(getattr(m.rnn, f"bias_hh_l{layer}")) == 0
        assert torch.count_nonzero(getattr(m.rnn, f"bias_ih_l{layer}")) == 0
    w = m.rnn.weight_ih_l0.detach()
    assert w.abs().max() < 0.01 and w.std().item() == pytest.approx(0.001, rel=0.3)  # N(0, 0.001^2)


def test_identity_scale():
    m = make_model("lstm", vocab_size=30, **IDENTITY_RELU, emb_size=6, hidden_size=5, num_layers=1, identity_scale=0.5)
    assert torch.equal(m.rnn.weight_hh_l0, 0.5 * torch.eye(5))


def test_uniform_init_range_and_zero_decoder_bias():
    m = make_model("lstm", vocab_size=40, emb_size=8, hidden_size=8, init="uniform", init_range=0.05)
    assert all(p.abs().max() <= 0.05 for p in m.parameters())
    assert torch.count_nonzero(m.decoder.bias) == 0


def test_tied_weights_share_one_tensor():
    m = make_model("lstm", vocab_size=40, emb_size=8, hidden_size=8, tie_weights=True)
    assert m.decoder.weight is m.embedding.weight
    assert len(list(m.parameters())) == len({id(p) for p in m.parameters()})
    untied = make_model("lstm", vocab_size=40, emb_size=8, hidden_size=8, tie_weights=False)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in m.parameters()) == 40 * 8


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(emb_size=8, hidden_size=10, tie_weights=True), "model.tie_weights"),
        (dict(emb_size=0), "model.emb_size"),
        (dict(hidden_size=-3), "model.hidden_size"),
        (dict(num_layers=0), "model.num_layers"),
        (dict(dropout=1.0), "model.dropout"),
        (dict(dropout=-0.1), "model.dropout"),
        (dict(cell="LSTMX"), "model.cell"),
        (dict(init="zeros"), "model.init"),
        (dict(dropout="0.1"), "model.dropout"),
        (dict(num_layers=True), "model.num_layers"),
        (dict(tie_weights="yes"), "model.tie_weights"),
    ],
)
def test_bad_model_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError) as e:
        make_model("lstm", vocab_size=20, **kwargs)
    assert e.value.key == key


def test_perplexity_is_exp_of_mean_token_nll_by_hand():
    # Two tokens with model probabilities 0.5 and 0.25: mean NLL = (ln 2 + ln 4) / 2 = 1.5 ln 2,
    # so perplexity = 2 ** 1.5.
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
    targets = torch.tensor([0, 0])
    nll = F.cross_entropy(logits, targets, reduction="sum").item()
    assert perplexity(nll, 2) == pytest.approx(2**1.5)
    assert perplexity(2 * math.log(7), 2) == pytest.approx(7.0)
