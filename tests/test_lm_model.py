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


# Each init's distribution, for every cell: tests/test_lm_init.py.


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
