"""AWD-LSTM's regularisers (pbexp/models/awd_lm.py) and averaged SGD (pbexp/training/averaging.py), against
independent computations: the masks' statistics, torch's own nn.LSTM and embedding lookups with masks drawn
by hand from the same seed, and the mean of weight snapshots kept by the test."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM
from helpers.data import write_tiny_ptb
from pbexp.models.awd_lm import AWDLanguageModel, embedding_dropout, locked_dropout
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt
from pbexp.training.averaging import WeightAverage

V, E, H = 50, 8, 12


def awd(**rates) -> AWDLanguageModel:
    torch.manual_seed(0)
    kwargs = dict(dropout_emb=0.0, dropout_in=0.0, dropout_hid=0.0, dropout_out=0.0, weight_drop=0.0) | rates
    return AWDLanguageModel(
        V, emb_size=E, hidden_size=H, num_layers=2, tie_weights=True, init="io_uniform", init_range=0.1, **kwargs
    )


def binomial_ok(zeros: int, n: int, p: float) -> bool:
    """``zeros`` of ``n`` within 5 standard deviations of a Binomial(n, p)."""
    return abs(zeros - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_locked_dropout_is_one_mask_per_column_for_every_time_step(p):
    torch.manual_seed(1)
    x = torch.randn(30, 64, 40)
    out = locked_dropout(x, p, training=True)
    scale = out / x  # the mask: 0 or 1 / (1 - p)
    assert torch.allclose(scale, scale[:1].expand_as(scale)), "the mask changes along time"
    mask = scale[0]
    kept = mask[mask != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    assert binomial_ok(int((mask == 0).sum()), mask.numel(), p)
    assert torch.equal(locked_dropout(x, p, training=False), x)


def test_embedding_dropout_drops_whole_words_as_a_mask_drawn_by_hand():
    torch.manual_seed(2)
    emb, p = nn.Embedding(400, 6), 0.3
    x = torch.randint(400, (20, 16))
    torch.manual_seed(7)
    out = embedding_dropout(emb, x, p, training=True)
    torch.manual_seed(7)
    mask = torch.empty(400, 1).bernoulli_(1 - p) / (1 - p)  # the same draw, by hand
    assert torch.allclose(out, F.embedding(x, emb.weight * mask))
    # every occurrence of a word is dropped or kept together
    dropped = (out == 0).all(-1)
    for word in x.unique():
        assert dropped[x == word].all() or not dropped[x == word].any()
    # the share of the vocabulary dropped is p
    torch.manual_seed(3)
    big = nn.Embedding(20000, 2)
    rows = embedding_dropout(big, torch.arange(20000).unsqueeze(1), p, training=True)
    assert binomial_ok(int((rows == 0).all(-1).sum()), 20000, p)
    assert torch.equal(embedding_dropout(emb, x, p, training=False), emb(x))


def test_weight_drop_runs_the_layer_with_a_dropped_copy_of_its_recurrent_matrix():
    model, p = awd(weight_drop=0.5), 0.5
    x = torch.randint(V, (7, 3))
    hidden = model.init_hidden(3)
    reference = [nn.LSTM(layer.input_size, layer.hidden_size) for layer in model.layers]
    for ref, layer in zip(reference, model.layers):
        ref.load_state_dict(layer.state_dict())
    kept = [layer.weight_hh_l0.detach().clone() for layer in model.layers]
    model.train()
    torch.manual_seed(11)
    logits, _ = model(x, hidden)
    # By hand: the same masks (F.dropout draws one per layer, in layer order), torch's nn.LSTM, the decoder.
    torch.manual_seed(11)
    out = model.embedding(x)
    for ref in reference:
        with torch.no_grad():
            ref.weight_hh_l0.copy_(F.dropout(ref.weight_hh_l0, p, training=True))
        out, _ = ref(out)
    assert torch.allclose(logits, model.decoder(out), atol=1e-6)
    # the layers' own matrices are untouched, and the masks drop about p of the entries
    for layer, before, ref in zip(model.layers, kept, reference):
        assert torch.equal(layer.weight_hh_l0, before)
        zeros = int((ref.weight_hh_l0 == 0).sum())
        assert binomial_ok(zeros, ref.weight_hh_l0.numel(), p)
    # gradients reach the recurrent matrix only through the entries kept
    logits.sum().backward()
    for layer, ref in zip(model.layers, reference):
        assert layer.weight_hh_l0.grad[ref.weight_hh_l0 == 0].abs().max() == 0
        assert layer.weight_hh_l0.grad.abs().sum() > 0


def test_evaluation_is_deterministic_and_equals_torchs_lstm_without_any_dropout():
    model = awd(dropout_emb=0.1, dropout_in=0.4, dropout_hid=0.25, dropout_out=0.4, weight_drop=0.5)
    model.eval()
    x = torch.randint(V, (9, 4))
    first, state1 = model(x, model.init_hidden(4))
    torch.manual_seed(123)  # another RNG state changes nothing in evaluation
    second, state2 = model(x, model.init_hidden(4))
    assert torch.equal(first, second) and all(torch.equal(a, b) for a, b in zip(state1, state2))
    # The same weights in torch's own LSTMs, the decoder by hand
    first_layer, second_layer = nn.LSTM(E, H), nn.LSTM(H, E)
    first_layer.load_state_dict(model.layers[0].state_dict())
    second_layer.load_state_dict(model.layers[1].state_dict())
    with torch.no_grad():
        out, _ = second_layer(first_layer(model.embedding(x))[0])
        expected = out @ model.embedding.weight.t() + model.decoder.bias
    assert torch.allclose(first, expected, atol=1e-6)
    # in training, the dropouts change the output
    model.train()
    assert not torch.allclose(model(x, model.init_hidden(4))[0], first)


def test_the_carried_state_is_a_flat_tuple_that_the_next_window_continues_from():
    model = awd()
    model.eval()
    x = torch.randint(V, (10, 2))
    whole, _ = model(x, model.init_hidden(2))
    first, state = model(x[:4], model.init_hidden(2))
    rest, _ = model(x[4:], state)
    assert isinstance(state, tuple) and len(state) == 4
    assert torch.allclose(torch.cat([first, rest]), whole, atol=1e-6)


def test_bad_rates_are_one_line_errors(tmp_path):
    root = write_tiny_ptb(tmp_path / "data")
    done = run_cli(
        ["model=awd_lstm", "model.weight_drop=1.5", f"dataset.root={root}", "dataset.download=false"], cwd=tmp_path
    )
    assert done.returncode != 0
    assert "model.weight_drop" in done.stderr and "1.5" in done.stderr and "Traceback" not in done.stderr


# ---- averaged SGD --------------------------------------------------------------------------------------------


def test_the_average_is_the_mean_of_the_weights_after_each_step_since_the_start():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01)
    average = WeightAverage(params, "from_epoch", 1, 5)
    snapshots = []
    for step in range(12):
        opt.zero_grad()
        model(torch.randn(8, 5)).pow(2).sum().backward()
        opt.step()
        if step == 4:
            average.start(step + 1)
            snapshots.append([p.detach().clone() for p in params])
        elif step > 4:
            average.update()
            snapshots.append([p.detach().clone() for p in params])
    expected = [torch.stack(ws).mean(0) for ws in zip(*snapshots)]
    current = [p.detach().clone() for p in params]
    with average.applied():
        assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(params, expected))
    assert all(torch.equal(p, c) for p, c in zip(params, current)), "the weights were not restored"
    assert average.count == len(snapshots) == 8  # steps 5 to 12


# Merity et al.'s code (n = 5): start when len(history) > n and current > min(history[:-n]); worked by hand.
@pytest.mark.parametrize(
    "history, current, lower_is_better, starts",
    [
        ([10, 9, 8, 7, 6, 5], 10.5, True, True),  # older than the last 5: [10]; 10.5 is worse
        ([10, 9, 8, 7, 6, 5], 9.5, True, False),  # better than 10, though worse than the last 5
        ([10, 9, 8, 7, 6], 11.0, True, False),  # nothing older than the last 5 yet
        ([10, 9, 8, 7, 6, 5, 4], 9.5, True, True),  # older: [10, 9]; 9.5 is worse than 9
        ([10, 9, 8, 7, 6, 5, 4], 8.5, True, False),
        ([0.80, 0.85, 0.86, 0.86, 0.87, 0.87], 0.79, False, True),  # accuracy: worse than the older 0.80
        ([0.80, 0.85, 0.86, 0.86, 0.87, 0.87], 0.81, False, False),
    ],
)
def test_the_nonmonotone_trigger_is_merity_et_als(history, current, lower_is_better, starts):
    assert WeightAverage([], "nonmono", 1, 5).starts_after(history, current, lower_is_better) == starts
    assert not WeightAverage([], "from_epoch", 1, 5).starts_after(history, current, lower_is_better)


def run_tiny(tmp_path, run_dir, *args, **env):
    root = write_tiny_ptb(tmp_path / "data")
    tiny = [a for a in TINY_LM if not a.startswith("model.")]  # model.dropout is the plain LSTM's
    return run_cli([*tiny, f"dataset.root={root}", f"hydra.run.dir={run_dir}", *args], cwd=tmp_path, env=cli_env(**env))


def test_averaged_run_keeps_and_tests_the_mean_and_resumes_exactly(tmp_path):
    args = ["model=awd_lstm", "model.emb_size=16", "model.hidden_size=16", "model.num_layers=2",
            "model.dropout_in=0.2", "model.weight_drop=0.3", "trainer.epochs=3", "trainer.average=from_epoch",
            "trainer.average_from=2", "trainer.checkpoint_every=7", "trainer.lr=5"]  # fmt: skip
    whole = run_tiny(tmp_path, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-2000:]
    results = RunDir(tmp_path / "whole").read_results()
    records = [json.loads(line) for line in RunDir(tmp_path / "whole").metrics.read_text().splitlines()]
    assert results["averaged_from_step"] == records[0]["step"]  # the start of epoch 2
    assert "averaged from step" in whole.stdout + whole.stderr
    # The best weights kept are the mean, not the last weights: they differ from the resume checkpoint's.
    best = ckpt.load(RunDir(tmp_path / "whole").best)["model"]
    last = ckpt.load(RunDir(tmp_path / "whole").last)
    assert any(not torch.equal(best[k], last["model"][k]) for k in best)
    assert last["average"]["count"] == results["steps"] - records[0]["step"] + 1
    # Killed mid-epoch 3 and rerun: the same numbers (the mean is in the checkpoint).
    cut = tmp_path / "cut"
    killed = run_tiny(tmp_path, cut, *args, PBEXP_KILL_AT=f"step:{records[1]['step'] + 3}")
    assert killed.returncode == -9
    resumed = run_tiny(tmp_path, cut, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = RunDir(cut).read_results()
    for key in ("valid/ppl", "test/ppl", "train/loss", "steps", "averaged_from_step"):
        assert again[key] == results[key], key
