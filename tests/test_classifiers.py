"""Sentence classifiers (pbexp.models.classifiers) and their configs under configs/model/."""

from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from helpers.configs import make_model
from pbexp.errors import ConfigError
from pbexp.models.classifiers import (
    NBSVM,
    CNNClassifier,
    CNNRNNClassifier,
    FastText,
    GRUClassifier,
    ReportCNN,
    ReportCNNRNN,
    ReportGRU,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
V = 100

# name -> (class, max_len, hyper-parameters); configs/model/<name>.yaml's defaults, except where noted
DEFAULTS = {
    "report_cnn": (ReportCNN, 30, {}),
    "report_gru": (ReportGRU, 30, {}),
    "report_cnn_rnn": (ReportCNNRNN, 50, {}),
    "cnn": (CNNClassifier, 40, {}),
    "gru_clf": (GRUClassifier, 40, {}),
    "cnn_rnn": (CNNRNNClassifier, 40, {}),
    "fasttext": (FastText, 40, {"buckets": 1000}),  # a small table keeps the test fast
}
REPORT_FLAT = {"report_cnn": 1450, "report_gru": 1500, "report_cnn_rnn": 2500}
# class -> the YAML that holds its defaults (the constructors have none)
YAML_OF = {cls: name for name, (cls, _, _) in DEFAULTS.items()} | {NBSVM: "nbsvm"}


def build(cls, max_len, vocab_size=V, num_classes=2, **hyper):
    """``cls`` with its YAML's defaults, the task's sizes and ``hyper``."""
    model = make_model(
        YAML_OF[cls], vocab_size=vocab_size, num_classes=num_classes, max_len=max_len, pad_idx=0, **hyper
    )
    assert type(model) is cls
    return model


def padded_batch(lengths, max_len, vocab_size=V, seed=0):
    """Random ids in [1, vocab) right-padded with 0: one row per length."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab_size, (len(lengths), max_len), generator=g)
    x[torch.arange(max_len)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    return x


# ---------------------------------------------------------------- shapes, gradients, report sizes


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_logits_shape_and_finite_grads(name):
    torch.manual_seed(0)
    cls, max_len, hyper = DEFAULTS[name]
    model = build(cls, max_len, num_classes=3, **hyper)
    x = padded_batch([max_len, max_len // 2, 1, 7], max_len)
    logits = model(x)
    assert logits.shape == (4, 3)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert isinstance(model.embedding, torch.nn.Embedding) and model.embedding.padding_idx == 0


@pytest.mark.parametrize("name", list(REPORT_FLAT))
def test_report_models_have_the_reports_sizes(name):
    cls, max_len, _ = DEFAULTS[name]
    model = build(cls, max_len, vocab_size=74555)
    assert model.flat_features == REPORT_FLAT[name]
    assert model.embedding.weight.shape == (74555, 300)


def test_report_layer_shapes_match_the_tables():
    cnn = build(ReportCNN, 30)
    assert cnn.conv1.weight.shape == (10, 30, 10)  # Conv1d(30, 10, kernel_size=10)
    assert (cnn.fc1.in_features, cnn.fc1.out_features, cnn.fc2.out_features) == (1450, 600, 2)
    gru = build(ReportGRU, 30)
    assert (gru.rnn.input_size, gru.rnn.hidden_size, gru.rnn.bias) == (300, 50, False)
    assert (gru.decoder1.in_features, gru.decoder1.out_features) == (1500, 500)
    mix = build(ReportCNNRNN, 50)
    assert mix.conv1.weight.shape == (50, 50, 3)
    assert (mix.rnn.input_size, mix.rnn.hidden_size, mix.rnn.bias) == (149, 50, False)
    assert (mix.decoder1.in_features, mix.decoder1.out_features) == (2500, 500)


@pytest.mark.parametrize(
    "cls, max_len, hyper, flat",
    [
        (ReportCNN, 12, dict(emb_size=100, channels=4, kernel_size=5, hidden_size=8), 4 * ((100 - 5 + 1) // 2)),  # 192
        (ReportGRU, 20, dict(emb_size=16, hidden_size=8, fc_size=10), 20 * 8),  # 160
        (ReportCNNRNN, 9, dict(emb_size=64, channels=7, kernel_size=5, hidden_size=6, fc_size=10), 7 * 6),  # 42
    ],
)
def test_report_sizes_at_other_settings(cls, max_len, hyper, flat):
    model = build(cls, max_len, seq_len=None, **hyper)  # seq_len=None: all max_len words
    assert model.flat_features == flat
    assert model(padded_batch([max_len, 3], max_len)).shape == (2, 2)  # the derived size really fits


def test_report_cnn_rnn_gru_input_is_the_pooled_conv_length():
    model = build(ReportCNNRNN, 9, emb_size=64, channels=7, kernel_size=5, hidden_size=6, fc_size=10, seq_len=None)
    assert model.rnn_input_size == (64 - 5 + 1) // 2 == 30


# ---------------------------------------------------------------- config errors

BAD = [
    (ReportCNN, 30, dict(emb_size=0), "model.emb_size"),
    (ReportCNN, 30, dict(kernel_size=300), "model.kernel_size"),  # pooled length would be 0
    (ReportCNN, 30, dict(channels=-1), "model.channels"),
    (ReportCNN, 0, {}, "dataset.max_len"),
    (ReportGRU, 30, dict(hidden_size=0), "model.hidden_size"),
    (ReportGRU, 30, dict(fc_size=2.5), "model.fc_size"),
    (ReportCNNRNN, 50, dict(emb_size=10, kernel_size=10), "model.kernel_size"),
    (ReportCNNRNN, 50, dict(channels=0), "model.channels"),
    (CNNClassifier, 20, dict(widths=[3, 25]), "model.widths"),  # filter wider than max_len
    (CNNClassifier, 20, dict(widths=[]), "model.widths"),
    (CNNClassifier, 20, dict(widths=[0, 3]), "model.widths"),
    (CNNClassifier, 20, dict(filters=0), "model.filters"),
    (CNNClassifier, 20, dict(dropout=1.0), "model.dropout"),
    (CNNClassifier, 20, dict(dropout=-0.1), "model.dropout"),
    (GRUClassifier, 20, dict(pooling="sum"), "model.pooling"),
    (GRUClassifier, 20, dict(num_layers=0), "model.num_layers"),
    (GRUClassifier, 20, dict(hidden_size=0), "model.hidden_size"),
    (GRUClassifier, 20, dict(bidirectional="yes"), "model.bidirectional"),
    (GRUClassifier, 20, dict(emb_size=True), "model.emb_size"),  # YAML's true is no size
    (GRUClassifier, -5, {}, "dataset.max_len"),
    (CNNRNNClassifier, 20, dict(kernel_size=21), "model.kernel_size"),
    (CNNRNNClassifier, 20, dict(pool=0), "model.pool"),
    (CNNRNNClassifier, 20, dict(emb_size=0), "model.emb_size"),
    (CNNRNNClassifier, 20, dict(dropout=1.5), "model.dropout"),
    (FastText, 20, dict(ngrams=0), "model.ngrams"),
    (FastText, 20, dict(ngrams=21), "model.ngrams"),
    (FastText, 20, dict(buckets=0), "model.buckets"),
    (FastText, 20, dict(emb_size=-3), "model.emb_size"),
    (NBSVM, 20, dict(alpha=False), "model.alpha"),
]


@pytest.mark.parametrize("cls, max_len, hyper, key", BAD, ids=[f"{c.__name__}-{k}-{h}" for c, _, h, k in BAD])
def test_bad_sizes_raise_config_error_naming_the_key(cls, max_len, hyper, key):
    with pytest.raises(ConfigError) as err:
        build(cls, max_len, **hyper)
    assert err.value.key == key
    assert key in str(err.value)


@pytest.mark.parametrize(
    "cls, max_len, hyper, message",
    [
        (
            ReportCNN,
            30,
            dict(kernel_size=300),
            "model.kernel_size=300 is not allowed: an integer in [1, 299] (the conv "
            "runs over the embedding axis; (emb_size - kernel_size + 1) // 2 must be >= 1 with emb_size=300)",
        ),
        (
            ReportGRU,
            20,
            dict(seq_len=30),
            "model.seq_len=30 is not allowed: an integer in [1, 20] (at most "
            "dataset.max_len=20, the words the data keeps)",
        ),
        (GRUClassifier, 20, dict(dropout=1.0), "model.dropout=1.0 is not allowed: a number in [0, 1)"),
        (GRUClassifier, 20, dict(bidirectional=1), "model.bidirectional=1 is not allowed: true or false"),
        (NBSVM, 20, dict(scale=0), "model.scale=0 is not allowed: a number > 0"),
    ],
    ids=["report-kernel", "report-seq-len", "dropout", "bidirectional", "nbsvm-scale"],
)
def test_config_errors_say_key_value_and_what_is_allowed(cls, max_len, hyper, message):
    with pytest.raises(ConfigError) as err:
        build(cls, max_len, **hyper)
    assert str(err.value) == message


def test_pad_idx_outside_the_vocabulary_is_a_config_error():
    with pytest.raises(ConfigError, match="pad_idx"):
        make_model("gru_clf", vocab_size=10, num_classes=2, max_len=20, pad_idx=10)


# ---------------------------------------------------------------- padding invariance

INVARIANT = [
    (CNNClassifier, dict(emb_size=8, widths=[1, 3, 5], filters=4)),
    (GRUClassifier, dict(emb_size=8, hidden_size=6, pooling="max")),
    (GRUClassifier, dict(emb_size=8, hidden_size=6, pooling="mean", num_layers=2)),
    (GRUClassifier, dict(emb_size=8, hidden_size=6, pooling="last")),
    (GRUClassifier, dict(emb_size=8, hidden_size=6, pooling="last", bidirectional=False)),
    (CNNRNNClassifier, dict(emb_size=8, channels=5, kernel_size=3, pool=3, hidden_size=6, pooling="max")),
    (CNNRNNClassifier, dict(emb_size=8, channels=5, kernel_size=4, pool=1, hidden_size=6, pooling="last")),
    (FastText, dict(emb_size=8, ngrams=3, buckets=50)),
]


@pytest.mark.parametrize("cls, hyper", INVARIANT, ids=[f"{c.__name__}-{h}" for c, h in INVARIANT])
def test_appending_padding_does_not_change_the_logits(cls, hyper):
    """The same reviews, padded to 12 and to 31 (a model built with the larger max_len, same weights)."""
    torch.manual_seed(0)
    short, long = build(cls, 12, **hyper), build(cls, 31, **hyper)
    if isinstance(short, FastText):  # its classifier starts at zero, which would make the test vacuous
        torch.nn.init.normal_(short.fc.weight)
    long.load_state_dict(short.state_dict())
    short.eval(), long.eval()
    x = padded_batch([12, 7, 1, 0, 4, 11], 12)  # full row, short rows, a single token, an all-pad row
    x_long = F.pad(x, (0, 19), value=0)
    torch.testing.assert_close(short(x), long(x_long), rtol=1e-5, atol=1e-6)


def test_cnn_pads_cannot_win_the_max():
    """A one-token review: every width has one window (the token, then pads), and that is the feature.
    With a large bias an all-pad window would score relu(bias) and win, if it were not masked."""
    torch.manual_seed(0)
    model = build(CNNClassifier, 8, emb_size=6, widths=[1, 3], filters=5, dropout=0.0).eval()
    for conv in model.convs:
        torch.nn.init.constant_(conv.bias, 3.0)
    model.fc = torch.nn.Identity()  # so the model returns the pooled features
    x = torch.tensor([[7, 0, 0, 0, 0, 0, 0, 0]])
    e = model.embedding.weight[7]  # the pad row is zero, so only the token's column counts
    expected = torch.cat([F.relu(conv.weight[:, :, 0] @ e + conv.bias) for conv in model.convs])
    torch.testing.assert_close(model(x)[0], expected)


# ---------------------------------------------------------------- fastText hashing


def test_fasttext_same_bigram_same_bucket_anywhere():
    model = build(FastText, 10, ngrams=2, buckets=1009)
    grams = torch.tensor([[[3, 4], [9, 9], [3, 4]], [[1, 2], [3, 4], [4, 3]]])  # [B=2, positions=3, n=2]
    ids = model.ngram_buckets(grams)
    assert ids[0, 0] == ids[0, 2] == ids[1, 1]  # same bigram, other position or row
    assert ids[1, 2] != ids[0, 0]  # order matters
    assert ((0 <= ids) & (ids < 1009)).all()


def test_fasttext_distinct_bigrams_mostly_get_distinct_buckets():
    model = build(FastText, 10, ngrams=2, buckets=1_000_000)
    a, b = torch.meshgrid(torch.arange(1, 101), torch.arange(1, 101), indexing="ij")
    ids = model.ngram_buckets(torch.stack([a.flatten(), b.flatten()], -1))  # all 10 000 bigrams of 100 words
    assert ids.unique().numel() > 0.99 * ids.numel()


def test_fasttext_hash_matches_python_integers_and_does_not_overflow():
    model = build(FastText, 10, ngrams=3, buckets=7919)
    big = 2**31 - 2  # the largest id the hash's modulus allows
    for gram in ([3, 4], [big, big, big], [0, 5, big]):
        h = len(gram)
        for t in gram:
            h = (h * 116_049_371 + t) % (2**31 - 1)  # fastText's multiplier, a prime modulus
        assert model.ngram_buckets(torch.tensor(gram)).item() == h % 7919


def test_fasttext_mean_excludes_pads_and_ngrams_touching_them():
    """Row [3, 4, 7, pad, pad]: the mean of E[3], E[4], E[7], G[b(3,4)], G[b(4,7)], and nothing else."""
    torch.manual_seed(0)
    model = build(FastText, 5, ngrams=2, buckets=97, emb_size=6)
    torch.nn.init.normal_(model.fc.weight)
    x = torch.tensor([[3, 4, 7, 0, 0], [0, 0, 0, 0, 0]])
    E, G = model.embedding.weight, model.ngram_embedding.weight
    b = lambda u, v: model.ngram_buckets(torch.tensor([u, v])).item()  # noqa: E731
    expected = torch.stack([E[3], E[4], E[7], G[b(3, 4)], G[b(4, 7)]]).mean(0)
    bag = model.bag(x)
    torch.testing.assert_close(bag[0], expected)
    torch.testing.assert_close(bag[1], torch.zeros(6))  # an empty review: no tokens, zero vector, no NaN
    torch.testing.assert_close(model(x)[0], model.fc(expected))


def test_fasttext_init_like_fasttext():
    model = build(FastText, 10, emb_size=20, buckets=100)
    assert model.embedding.weight.abs().max() <= 1 / 20 and model.ngram_embedding.weight.abs().max() <= 1 / 20
    assert (model.embedding.weight[0] == 0).all()
    assert (model.fc.weight == 0).all() and (model.fc.bias == 0).all()


def test_fasttext_words_only_has_no_ngram_table():
    model = build(FastText, 10, ngrams=1)
    assert model.ngram_embedding is None
    assert model(padded_batch([10, 3], 10)).shape == (2, 2)


# ---------------------------------------------------------------- configs

YAMLS = {
    "report_cnn": 30,
    "report_gru": 30,
    "report_cnn_rnn": 50,
    "cnn": 256,
    "gru_clf": 256,
    "cnn_rnn": 256,
    "fasttext": 256,
    "nbsvm": 256,
}


@pytest.mark.parametrize("name", list(YAMLS))
def test_yaml_instantiates(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert cfg.pop("pretrained") is None and cfg.pop("freeze_embeddings") is False
    max_len = YAMLS[name]
    model = hydra.utils.instantiate(cfg, vocab_size=V, num_classes=2, max_len=max_len, pad_idx=0)
    assert type(model).__name__ == cfg._target_.rsplit(".", 1)[1]
    if name in REPORT_FLAT:
        assert model.flat_features == REPORT_FLAT[name]
    assert model(padded_batch([max_len, 5], max_len)).shape == (2, 2)


# ---------------------------------------------------------------- learnability

LEARNERS = [
    (CNNClassifier, dict(emb_size=16, widths=[1, 2], filters=8, dropout=0.1), 1e-2),
    (GRUClassifier, dict(emb_size=16, hidden_size=16, dropout=0.1), 1e-2),
    (CNNRNNClassifier, dict(emb_size=16, channels=16, kernel_size=3, pool=2, hidden_size=16, dropout=0.1), 1e-2),
    (FastText, dict(emb_size=16, ngrams=2, buckets=1000), 5e-2),
]


@pytest.mark.parametrize("cls, hyper, lr", LEARNERS, ids=[c.__name__ for c, _, _ in LEARNERS])
def test_learns_whether_a_token_appears(cls, hyper, lr):
    """Class = whether token 5 occurs in the review: each working model fits it (>= 95 % train accuracy)."""
    torch.manual_seed(0)
    n, max_len = 256, 16
    lengths = torch.randint(3, max_len + 1, (n,)).tolist()
    x = padded_batch(lengths, max_len, vocab_size=30, seed=1)
    x[(x > 0) & (x <= 5)] += 6  # no accidental 5s (ids 1..5 become 7..11)
    y = torch.arange(n) % 2
    where = (torch.rand(n) * torch.tensor(lengths)).long()  # a position inside each review
    x[y == 1, where[y == 1]] = 5
    model = build(cls, max_len, vocab_size=30, **hyper)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(300):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            if acc >= 0.95:
                break
    assert acc >= 0.95, f"train accuracy {acc:.3f} after {step + 1} steps"


@pytest.mark.parametrize("cls,seq_len,flat", [(ReportCNN, 30, 1450), (ReportGRU, 30, 1500), (ReportCNNRNN, 50, 2500)])
def test_report_models_read_the_first_seq_len_words_of_longer_inputs(cls, seq_len, flat):
    torch.manual_seed(0)
    model = build(cls, 400, seq_len=seq_len).eval()
    assert model.flat_features == flat
    x = torch.randint(2, V, (2, 400))
    y = x.clone()
    y[:, seq_len:] = 0  # words past seq_len never reach the model
    assert torch.equal(model(x), model(y))
    with pytest.raises(ConfigError, match="model.seq_len"):
        build(cls, 20, seq_len=seq_len)


# ---------------------------------------------------------------- NBSVM


def _python_features(row, ngrams, vocab_size):
    """The distinct features of one review, by plain Python: words and hashed n-grams of real tokens."""
    tokens = [t for t in row if t != 0]
    out = set(tokens)
    for n in range(2, ngrams + 1):
        for i in range(len(tokens) - n + 1):
            h = n
            for t in tokens[i : i + n]:
                h = (h * 116_049_371 + t) % (2**31 - 1)
            out.add(vocab_size + h)
    return out


def _fitted_nbsvm(x, y, **hyper):
    model = build(NBSVM, x.size(1), **hyper)
    model.fit_statistics(x, y)
    return model


def test_nbsvm_features_are_each_reviews_distinct_words_and_ngrams():
    from pbexp.models.classifiers import ngram_keys

    x = torch.tensor([[3, 4, 3, 4, 0, 0], [5, 5, 5, 5, 5, 5], [7, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    keys, first = ngram_keys(x, pad_idx=0, ngrams=3, vocab_size=V)
    for row, k, f in zip(x.tolist(), keys, first):
        assert k[f].tolist() == sorted(_python_features(row, 3, V))


def test_nbsvm_ratios_match_counting_by_hand():
    """r_c(i) = log(p_i / sum p) - log(q_i / sum q), p (q) = reviews of class c (of the others) with i, + alpha."""
    x = padded_batch([8, 5, 8, 3, 6, 8, 2, 7], 8, vocab_size=12, seed=3)
    y = torch.tensor([0, 1, 1, 0, 2, 1, 0, 2])
    model = _fitted_nbsvm(x, y, num_classes=3, vocab_size=12, ngrams=2, alpha=0.5)
    feats = [_python_features(row, 2, 12) for row in x.tolist()]
    table = sorted(set().union(*feats))
    assert model.keys[: len(table)].tolist() == table and (model.keys[len(table) :] == NBSVM.NO_KEY).all()
    for c in range(3):
        p = torch.tensor([sum(f in fs for fs, label in zip(feats, y.tolist()) if label == c) for f in table]) + 0.5
        q = torch.tensor([sum(f in fs for fs, label in zip(feats, y.tolist()) if label != c) for f in table]) + 0.5
        expected = (p / p.sum()).log() - (q / q.sum()).log()
        torch.testing.assert_close(model.ratio[: len(table), c], expected.float())


def test_nbsvm_table_keeps_the_features_in_most_reviews():
    x = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 6], [7, 8, 9]])
    model = _fitted_nbsvm(x, torch.tensor([0, 1, 0, 1]), vocab_size=10, ngrams=1, max_features=2)
    assert model.keys.tolist() == [1, 2]  # in 4 and 2 reviews; the rest in one each


def test_nbsvm_starts_as_naive_bayes_and_ignores_features_outside_its_table():
    x = padded_batch([10, 6, 3, 9], 10, vocab_size=20, seed=1)
    model = _fitted_nbsvm(x[:2], torch.tensor([0, 1]), vocab_size=20, ngrams=2, nb_weight=0.3, scale=7.0)
    known = dict(zip(model.keys.tolist(), model.ratio.tolist()))
    for row, logits in zip(x.tolist(), model(x)):
        expected = [sum(known[f][c] for f in _python_features(row, 2, 20) if f in known) * 0.3 / 7.0 for c in (0, 1)]
        torch.testing.assert_close(logits, torch.tensor(expected))


def test_nbsvm_padding_invariant_and_checkpointed():
    torch.manual_seed(0)
    x = padded_batch([12, 7, 1, 0, 4, 11], 12, seed=2)
    short = _fitted_nbsvm(x, torch.tensor([0, 1, 0, 1, 1, 0]), ngrams=3, max_features=500)
    torch.nn.init.normal_(short.weight.weight)
    long = build(NBSVM, 31, ngrams=3, max_features=500)
    long.load_state_dict(short.state_dict())  # the table and ratios travel with the weights
    torch.testing.assert_close(short(x), long(F.pad(x, (0, 19), value=0)))


def test_nbsvm_learns_a_rule_naive_bayes_gets_wrong():
    """Class 1 = token 5 and token 6 both appear (an AND); NB alone scores each token separately."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(7, 30, (400, 8), generator=g)
    has5, has6 = torch.rand(400, generator=g) < 0.5, torch.rand(400, generator=g) < 0.5
    x[has5, 0], x[has6, 1] = 5, 6
    y = (has5 & has6).long()
    model = _fitted_nbsvm(x, y, vocab_size=30, ngrams=1)
    nb_acc = (model(x).argmax(1) == y).float().mean().item()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean().item() >= max(0.95, nb_acc + 0.05)


@pytest.mark.parametrize(
    "hyper, key",
    [
        (dict(ngrams=0), "model.ngrams"),
        (dict(max_features=0), "model.max_features"),
        (dict(alpha=0), "model.alpha"),
        (dict(scale=-1.0), "model.scale"),
        (dict(nb_weight="x"), "model.nb_weight"),
    ],
)
def test_nbsvm_bad_hyper_parameters_name_the_key(hyper, key):
    with pytest.raises(ConfigError, match=key):
        build(NBSVM, 10, **hyper)
