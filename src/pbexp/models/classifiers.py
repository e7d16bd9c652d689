"""Sentence classifiers for IMDB: token ids [B, max_len] (right-padded with ``pad_idx``) -> logits [B, C].

Two groups:

* ``Report*`` reproduce the report's extra-credit tables literally (Problem 5.3 / 5.4), including the
  choices that make them fail: convolving over the *embedding* axis with the words as channels, and
  flattening every position (pads included) into position-specific weights.
* ``CNNClassifier``, ``GRUClassifier``, ``CNNRNNClassifier``, ``FastText`` are working versions of the
  same ideas. They ignore padding exactly: appending more pads never changes their logits.

The builder calls ``Class(vocab_size=V, num_classes=C, max_len=L, pad_idx=0, **hyper)`` and loads
pretrained vectors into ``model.embedding``. No softmax inside: the loss takes logits. The hyper-parameters
have no Python defaults: each class's YAML in configs/model/ (named in its docstring) holds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pbexp.checks import check_bool, check_choice, check_int, check_number, is_int
from pbexp.errors import ConfigError

POOLINGS = ("max", "mean", "last")


# ---------------------------------------------------------------- config checks


def _check_task(vocab_size, num_classes, max_len, pad_idx) -> None:
    """What the dataset hands in (not model keys, but a bad dataset config should fail here, clearly)."""
    check_int("vocab_size", vocab_size)
    check_int("num_classes", num_classes)
    check_int("dataset.max_len", max_len)
    check_int(
        "pad_idx",
        pad_idx,
        0,
        vocab_size - 1,
        allowed=f"an integer in [0, {vocab_size - 1}] (an index into the vocabulary)",
    )


def _check_dropout(value) -> None:
    check_number("model.dropout", value, 0, 1, high_open=True)


def _check_rnn(hidden_size, num_layers, bidirectional, dropout, pooling) -> None:
    """The keys of the GRU part that GRUClassifier and CNNRNNClassifier share."""
    check_int("model.hidden_size", hidden_size)
    check_int("model.num_layers", num_layers)
    check_bool("model.bidirectional", bidirectional)
    _check_dropout(dropout)
    check_choice("model.pooling", pooling, POOLINGS)


def _report_seq_len(seq_len, max_len) -> int:
    """The report's models read a fixed number of words (30 or 50): the first ``seq_len`` tokens of each
    review. None means all ``max_len``. More than the dataset provides is an error, not silent padding."""
    if seq_len is None:
        return max_len
    check_int(
        "model.seq_len",
        seq_len,
        1,
        max_len,
        allowed=f"an integer in [1, {max_len}] (at most dataset.max_len={max_len}, the words the data keeps)",
    )
    return seq_len


def _check_report_conv(emb_size, channels, kernel_size, pooled: str) -> None:
    """The report's conv runs over the embedding axis, then max-pools by 2: ``pooled`` must stay >= 1."""
    check_int("model.emb_size", emb_size, 2, allowed="an integer >= 2 (the conv slides over it and max-pools by 2)")
    check_int("model.channels", channels)
    check_int(
        "model.kernel_size",
        kernel_size,
        1,
        emb_size - 1,
        allowed=f"an integer in [1, {emb_size - 1}] (the conv runs over the embedding axis; {pooled} "
        f"must be >= 1 with emb_size={emb_size})",
    )


def _check_ngrams(ngrams, max_len) -> None:
    check_int(
        "model.ngrams",
        ngrams,
        1,
        max_len,
        allowed=f"an integer in [1, {max_len}] (the longest word n-gram; 1 = words only)",
    )


# ---------------------------------------------------------------- shared pieces for the working models


def _lengths(x: torch.Tensor, pad_idx: int) -> torch.Tensor:
    """Non-pad tokens per row, [B]. Right padding is the data contract, so this is also the end index."""
    return (x != pad_idx).sum(1)


def _run_gru(rnn: nn.GRU, seq: torch.Tensor, lengths: torch.Tensor):
    """Run a batch_first GRU over seq [B, T, D] packed to ``lengths`` (each >= 1).

    Packing, not masking: with masking alone the backward direction of a bidirectional GRU would
    start in the padding, so its states (and the logits) would depend on how many pads follow.
    Returns outputs [B, max(lengths), dirs*H] (zeros past each length) and h_n [layers*dirs, B, H].
    """
    packed = pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, h_n = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True)
    return out, h_n


def _pool_time(out: torch.Tensor, lengths: torch.Tensor, h_n: torch.Tensor, how: str, dirs: int) -> torch.Tensor:
    """Pool GRU outputs [B, T, dirs*H] over the first ``lengths`` steps -> [B, dirs*H].

    ``last``: the final state of each direction (forward after the last real token, backward after the first).
    """
    if how == "last":
        return h_n[-dirs:].transpose(0, 1).reshape(out.size(0), -1)
    mask = (torch.arange(out.size(1), device=out.device) < lengths.to(out.device)[:, None]).unsqueeze(-1)
    if how == "max":
        return out.masked_fill(~mask, float("-inf")).max(1).values
    return (out * mask).sum(1) / lengths.to(out.device)[:, None]


# ---------------------------------------------------------------- the report's models, literally


class ReportCNN(nn.Module):
    """Table 2 of the report: the words are the conv's *input channels*, the conv slides over the embedding.

    x [B, L] -> embedding [B, L, E] -> Conv1d(L, C, k) [B, C, E-k+1] -> MaxPool1d(2) [B, C, (E-k+1)//2]
    -> flatten [B, flat_features] -> fc1 -> fc2 -> logits [B, num_classes].

    At the report's settings (L=30, E=300, C=10, k=10): flat_features = 10 * 145 = 1450.
    Kept literal, because the point is to see why it fails: each filter mixes all L word positions
    with position-specific weights (no shift invariance over words) and slides over embedding
    dimensions, whose order means nothing. The table lists no nonlinearity between fc1 and fc2, so
    there is none: fc2(fc1(.)) is one linear map, and the max-pool is the model's only nonlinearity.

    Defaults: configs/model/report_cnn.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        channels: int,
        kernel_size: int,
        hidden_size: int,
        seq_len: int | None,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        self.seq_len = max_len = _report_seq_len(seq_len, max_len)
        _check_report_conv(emb_size, channels, kernel_size, "(emb_size - kernel_size + 1) // 2")
        check_int("model.hidden_size", hidden_size)
        self.flat_features = channels * ((emb_size - kernel_size + 1) // 2)
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        self.conv1 = nn.Conv1d(max_len, channels, kernel_size)  # in_channels = max_len: words as channels
        self.maxpool1 = nn.MaxPool1d(2)
        self.fc1 = nn.Linear(self.flat_features, hidden_size)
        self.fc2 = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.maxpool1(self.conv1(self.embedding(x[:, : self.seq_len])))  # [B, C, (E-k+1)//2]
        return self.fc2(self.fc1(h.flatten(1)))  # no activation between: as in Table 2


class ReportGRU(nn.Module):
    """Table 3 of the report: GRU over the words, *every* output step flattened into the decoder.

    x [B, L] -> embedding [B, L, E] -> GRU(E, H, bias=False) [B, L, H] -> flatten [B, L*H]
    -> decoder1 -> sigmoid -> decoder2 -> logits [B, num_classes].

    At the report's settings (L=30, H=50): flat_features = 1500. The sigmoid after decoder1 is from the
    report's design (Problem 5.2(b) iv); Table 3 itself lists no activations. The GRU runs over pads too
    and the decoder has a weight per position, so the model is not padding invariant (by design of the report).

    Defaults: configs/model/report_gru.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        hidden_size: int,
        fc_size: int,
        seq_len: int | None,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        self.seq_len = max_len = _report_seq_len(seq_len, max_len)
        check_int("model.emb_size", emb_size)
        check_int("model.hidden_size", hidden_size)
        check_int("model.fc_size", fc_size)
        self.flat_features = max_len * hidden_size
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        self.rnn = nn.GRU(emb_size, hidden_size, bias=False, batch_first=True)
        self.decoder1 = nn.Linear(self.flat_features, fc_size)
        self.decoder2 = nn.Linear(fc_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(x[:, : self.seq_len]))  # [B, L, H]
        return self.decoder2(torch.sigmoid(self.decoder1(out.flatten(1))))


class ReportCNNRNN(nn.Module):
    """The report's extra-credit CNN+RNN (Problem 5.4): conv over the embedding axis, then a GRU that reads
    the conv's *channels* as its sequence.

    x [B, L] -> embedding [B, L, E] -> Conv1d(L, C, k) [B, C, E-k+1] -> MaxPool1d(2) [B, C, P=(E-k+1)//2]
    -> GRU(P, H, bias=False) over the C channels [B, C, H] -> flatten [B, C*H] -> decoder1 -> sigmoid
    -> decoder2 -> logits.

    At the report's settings (L=50, E=300, C=50, k=3, H=50): P = 149 and flat_features = 50*50 = 2500.
    The sigmoid follows the report's RNN design; the printed module list shows no activations.

    Defaults: configs/model/report_cnn_rnn.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        channels: int,
        kernel_size: int,
        hidden_size: int,
        fc_size: int,
        seq_len: int | None,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        self.seq_len = max_len = _report_seq_len(seq_len, max_len)
        _check_report_conv(emb_size, channels, kernel_size, "the GRU input size (emb_size - kernel_size + 1) // 2")
        check_int("model.hidden_size", hidden_size)
        check_int("model.fc_size", fc_size)
        self.rnn_input_size = (emb_size - kernel_size + 1) // 2
        self.flat_features = channels * hidden_size
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        self.conv1 = nn.Conv1d(max_len, channels, kernel_size)
        self.maxpool1 = nn.MaxPool1d(2)
        self.rnn = nn.GRU(self.rnn_input_size, hidden_size, bias=False, batch_first=True)
        self.decoder1 = nn.Linear(self.flat_features, fc_size)
        self.decoder2 = nn.Linear(fc_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.maxpool1(self.conv1(self.embedding(x[:, : self.seq_len])))  # [B, C, P]
        out, _ = self.rnn(h)  # the C channels are the time steps: [B, C, H]
        return self.decoder2(torch.sigmoid(self.decoder1(out.flatten(1))))


# ---------------------------------------------------------------- working models


class CNNClassifier(nn.Module):
    """Kim (2014): filters of several widths slide over the words, ReLU, 1-max pooling over time, concat,
    dropout, linear. The report's Problem 5.1 design, generalised.

    x [B, L] -> embedding [B, E, L+w_max-1] (channels = E) -> per width w: Conv1d(E, F, w) + ReLU
    -> max over the windows that start on a real token [B, F] -> concat [B, F*len(widths)] -> dropout -> fc.

    Padding: x is right-padded by w_max-1 more pads inside, so every real token starts a window of every
    width, and windows starting on a pad are zeroed before the max (exact, since ReLU outputs are >= 0).
    The set of windows is then the same however many pads follow, so logits are padding invariant.

    Defaults: configs/model/cnn.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        widths: Sequence[int],
        filters: int,
        dropout: float,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        check_int("model.emb_size", emb_size)
        check_int("model.filters", filters)
        _check_dropout(dropout)
        widths = list(widths) if isinstance(widths, Sequence) and not isinstance(widths, str) else widths
        if not isinstance(widths, list) or not widths or not all(is_int(w) and 1 <= w <= max_len for w in widths):
            raise ConfigError("model.widths", widths, f"a non-empty list of filter widths in [1, max_len={max_len}]")
        self.pad_idx, self.max_width = pad_idx, max(widths)
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        self.convs = nn.ModuleList(nn.Conv1d(emb_size, filters, w) for w in widths)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * len(widths), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = _lengths(x, self.pad_idx)
        x = F.pad(x, (0, self.max_width - 1), value=self.pad_idx)
        e = self.embedding(x).transpose(1, 2)  # [B, E, L + w_max - 1]
        feats = []
        for conv in self.convs:
            h = F.relu(conv(e))  # [B, F, L + w_max - w]; window t covers tokens t .. t+w-1
            starts_on_token = torch.arange(h.size(2), device=x.device) < lengths[:, None]  # [B, T]
            feats.append(h.masked_fill(~starts_on_token[:, None, :], 0.0).max(2).values)
        return self.fc(self.drop(torch.cat(feats, 1)))


class GRUClassifier(nn.Module):
    """Embedding -> dropout -> (bi)GRU over the real tokens -> max/mean/last pooling -> dropout -> linear.

    x [B, L] -> [B, L, E] -> GRU packed to each row's length -> [B, T, dirs*H] -> pool [B, dirs*H] -> logits.
    Packed (see ``_run_gru``), so padding invariant, and short reviews cost less. A row of only pads is run
    as one pad token.

    Defaults: configs/model/gru_clf.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        pooling: str,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        check_int("model.emb_size", emb_size)
        _check_rnn(hidden_size, num_layers, bidirectional, dropout, pooling)
        self.pad_idx, self.pooling, self.dirs = pad_idx, pooling, 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            emb_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )  # between layers only
        self.fc = nn.Linear(self.dirs * hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = _lengths(x, self.pad_idx).clamp(min=1)
        out, h_n = _run_gru(self.rnn, self.drop(self.embedding(x)), lengths)
        return self.fc(self.drop(_pool_time(out, lengths, h_n, self.pooling, self.dirs)))


class CNNRNNClassifier(nn.Module):
    """The report's CNN -> RNN idea, made to work: convolve over the *words*, then a GRU reads the features.

    x [B, L] -> embedding [B, E, L+k-1] -> Conv1d(E, C, k) + ReLU [B, C, L] (window t = tokens t..t+k-1)
    -> zero the windows starting on a pad -> MaxPool1d(pool, ceil_mode) [B, C, ceil(L/pool)]
    -> dropout -> (bi)GRU packed to ceil(length/pool) -> max/mean/last pooling -> dropout -> linear.

    The max-pool over time shortens the sequence the (slow, sequential) GRU has to read by ``pool``.
    Padding invariant, for the same reasons as ``CNNClassifier`` and ``GRUClassifier``.

    Defaults: configs/model/cnn_rnn.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        channels: int,
        kernel_size: int,
        pool: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        pooling: str,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        check_int("model.emb_size", emb_size)
        check_int("model.channels", channels)
        check_int(
            "model.kernel_size",
            kernel_size,
            1,
            max_len,
            allowed=f"an integer in [1, {max_len}] (a filter no wider than the input)",
        )
        check_int(
            "model.pool",
            pool,
            1,
            max_len,
            allowed=f"an integer in [1, {max_len}] (the max-pool factor over time, at most the input length)",
        )
        _check_rnn(hidden_size, num_layers, bidirectional, dropout, pooling)
        self.pad_idx, self.kernel_size, self.pool = pad_idx, kernel_size, pool
        self.pooling, self.dirs = pooling, 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        self.conv = nn.Conv1d(emb_size, channels, kernel_size)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            channels,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.fc = nn.Linear(self.dirs * hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = _lengths(x, self.pad_idx)
        x = F.pad(x, (0, self.kernel_size - 1), value=self.pad_idx)
        h = F.relu(self.conv(self.embedding(x).transpose(1, 2)))  # [B, C, L]
        starts_on_token = torch.arange(h.size(2), device=x.device) < lengths[:, None]
        h = h.masked_fill(~starts_on_token[:, None, :], 0.0)  # zeros never win a max over ReLU outputs
        h = F.max_pool1d(h, self.pool, ceil_mode=True)  # [B, C, ceil(L/pool)]
        lengths = ((lengths + self.pool - 1) // self.pool).clamp(min=1)
        out, h_n = _run_gru(self.rnn, self.drop(h.transpose(1, 2)), lengths)
        return self.fc(self.drop(_pool_time(out, lengths, h_n, self.pooling, self.dirs)))


NGRAM_MULT = 116_049_371  # fastText's word n-gram hash multiplier
NGRAM_MOD = 2_147_483_647  # prime 2^31 - 1: h < 2^31 and MULT < 2^31, so h * MULT + id fits in int64


def ngram_buckets(grams: torch.Tensor, buckets: int) -> torch.Tensor:
    """Bucket of each n-gram: grams [..., n] token ids -> [...] ids in [0, buckets).

    h = n; for each token t: h = (h * MULT + t) mod (2^31 - 1); bucket = h mod buckets.
    Seeding with n keeps a bigram and a trigram from sharing a hash by construction. Vectorised and
    deterministic (no Python ``hash``); never overflows int64.
    """
    h = torch.full(grams.shape[:-1], grams.size(-1), dtype=torch.long, device=grams.device)
    for j in range(grams.size(-1)):
        h = (h * NGRAM_MULT + grams[..., j]) % NGRAM_MOD
    return h % buckets


class FastText(nn.Module):
    """fastText's classifier (Joulin et al. 2016): the mean of the word vectors and of hashed word n-gram
    vectors (n = 2..ngrams) over a review, then a linear layer.

    x [B, L] -> word rows of ``embedding`` [V, D] for the real tokens, bucket rows of ``ngram_embedding``
    [buckets, D] for the n-grams made only of real tokens -> one mean over all of them [B, D] -> fc -> logits.

    The n-gram hash is computed on the id tensors (vectorised; a loop over n only), deterministically
    (no Python ``hash``), and never overflows int64: see ``ngram_buckets``. Init as fastText: both tables
    U(-1/D, 1/D), classifier zero. With ``sparse=False`` the tables' gradients are dense: with Adam, every
    step touches all ``buckets * D`` weights. ``sparse=True`` gives sparse gradients (only the rows a
    batch uses), as fastText's own SGD does: far faster, and it needs ``trainer.optimizer=sgd``.

    Defaults: configs/model/fasttext.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        emb_size: int,
        ngrams: int,
        buckets: int,
        sparse: bool,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        check_int("model.emb_size", emb_size)
        _check_ngrams(ngrams, max_len)
        check_int("model.buckets", buckets)
        self.pad_idx, self.ngrams, self.buckets = pad_idx, ngrams, buckets
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx, sparse=sparse)
        self.ngram_embedding = nn.Embedding(buckets, emb_size, sparse=sparse) if ngrams > 1 else None
        self.fc = nn.Linear(emb_size, num_classes)
        with torch.no_grad():
            for table in (self.embedding, self.ngram_embedding):
                if table is not None:
                    table.weight.uniform_(-1.0 / emb_size, 1.0 / emb_size)
            self.embedding.weight[pad_idx].zero_()
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def ngram_buckets(self, grams: torch.Tensor) -> torch.Tensor:
        return ngram_buckets(grams, self.buckets)

    def bag(self, x: torch.Tensor) -> torch.Tensor:
        """The mean vector [B, D] of the real words and of the n-grams that touch no pad (zero for an empty row)."""
        real = x != self.pad_idx  # [B, L]
        total = (self.embedding(x) * real.unsqueeze(-1)).sum(1)  # [B, D]
        count = real.sum(1)
        for n in range(2, min(self.ngrams, x.size(1)) + 1):
            grams = x.unfold(1, n, 1)  # [B, L-n+1, n]: the n-gram starting at each position
            ok = real.unfold(1, n, 1).all(-1)  # [B, L-n+1]: no pad inside
            total = total + (self.ngram_embedding(self.ngram_buckets(grams)) * ok.unsqueeze(-1)).sum(1)
            count = count + ok.sum(1)
        return total / count.clamp(min=1).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bag(x))


def ngram_keys(x: torch.Tensor, pad_idx: int, ngrams: int, vocab_size: int):
    """The binarised bag of a batch: which words and word n-grams (n = 2..ngrams) each row contains.

    x [B, L] -> keys [B, N], sorted in each row, and first [B, N], True at the one occurrence of each distinct
    feature that counts (pads and n-grams touching a pad never). A word's key is its id; an n-gram's is
    vocab_size + its hash in [0, 2^31) (``ngram_buckets`` without the modulo: collisions are negligible).
    """
    real = x != pad_idx
    keys, ok = [x], [real]
    for n in range(2, min(ngrams, x.size(1)) + 1):
        keys.append(vocab_size + ngram_buckets(x.unfold(1, n, 1), NGRAM_MOD))
        ok.append(real.unfold(1, n, 1).all(-1))
    keys = torch.where(torch.cat(ok, 1), torch.cat(keys, 1), -1).sort(1).values  # -1 sorts first
    first = keys >= 0
    first[:, 1:] &= keys[:, 1:] != keys[:, :-1]
    return keys, first


class NBSVM(nn.Module):
    """NB-weighted n-gram classifier (Wang & Manning 2012's NBSVM; Mesnil et al. 2015 with trigrams), trained
    in our loop as a logistic regression.

    Features: the binarised bag of words and word n-grams of a review (``ngram_keys``), restricted to the
    ``max_features`` ones found in most training reviews (a fixed-size table: rare n-grams are mostly noise).
    Each feature i has a naive-Bayes log-count ratio per class, r_ic = log(p_ic / |p_c|) - log(q_ic / |q_c|),
    where p_ic (q_ic) counts the training reviews of class c (of the other classes) containing i, plus
    ``alpha``. Features and ratios are set once from the training split by ``fit_statistics`` before the first
    step; buffers, so they are checkpointed.

    logit_c = b_c + sum_i x_i r_ic (w_ic + nb_weight) / scale, w starting at 0: a logistic regression on the
    NB-scaled features (NB-LR). The ratios act as per-feature step sizes: a feature that tells the classes
    apart moves fast, a neutral one hardly at all. ``nb_weight`` > 0 adds a fixed naive-Bayes vote, so
    training starts from the NB classifier (Wang & Manning's interpolation); on IMDB it did not help (0.4:
    valid 91.6 %, 0.2: 91.9-92.4 %, 0: 92.0-92.4 %; docs/RESULTS.md).

    Defaults: configs/model/nbsvm.yaml; the sizes before ``*`` come from the data.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,
        ngrams: int,
        max_features: int,
        alpha: float,
        nb_weight: float,
        scale: float,
    ):
        super().__init__()
        _check_task(vocab_size, num_classes, max_len, pad_idx)
        _check_ngrams(ngrams, max_len)
        check_int("model.max_features", max_features)
        check_number("model.alpha", alpha, 0, low_open=True)
        check_number("model.scale", scale, 0, low_open=True)
        check_number("model.nb_weight", nb_weight, allowed="a number (0: no naive-Bayes prior)")
        self.pad_idx, self.vocab_size, self.ngrams = pad_idx, vocab_size, ngrams
        self.alpha, self.nb_weight, self.scale = alpha, nb_weight, scale
        self.weight = nn.Embedding(max_features, num_classes)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        # keys: the table's features, sorted; unused rows hold NO_KEY (never a feature) and a zero ratio.
        self.register_buffer("keys", torch.full((max_features,), self.NO_KEY))
        self.register_buffer("ratio", torch.zeros(max_features, num_classes))

    NO_KEY = torch.iinfo(torch.long).max

    @torch.no_grad()
    def fit_statistics(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> None:
        """The feature table and its log-count ratios from the training split: x [N, L] token ids, y [N]."""
        C = self.ratio.size(1)
        pairs = []  # (feature key, class) of each review's distinct features, as key * C + class
        for i in range(0, len(y), batch_size):
            keys, first = ngram_keys(x[i : i + batch_size].cpu(), self.pad_idx, self.ngrams, self.vocab_size)
            pairs.append((keys * C + y[i : i + batch_size, None].cpu())[first])
        pairs, reviews = torch.cat(pairs).unique(return_counts=True)
        keys, inverse = (pairs // C).unique(return_inverse=True)
        counts = torch.zeros(len(keys), C, dtype=torch.float64)  # reviews of class c containing the feature
        counts[inverse, pairs % C] = reviews.double()
        kept = counts.sum(1).argsort(descending=True, stable=True)[: len(self.keys)].sort().values
        keys, counts = keys[kept], counts[kept]  # still sorted by key
        p = counts + self.alpha
        q = counts.sum(1, keepdim=True) - counts + self.alpha  # the other classes
        self.keys.fill_(self.NO_KEY)
        self.ratio.zero_()
        self.keys[: len(keys)] = keys.to(self.keys.device)
        self.ratio[: len(keys)] = ((p / p.sum(0)).log() - (q / q.sum(0)).log()).to(self.ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys, first = ngram_keys(x, self.pad_idx, self.ngrams, self.vocab_size)
        rows = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        known = first & (self.keys[rows] == keys)  # features outside the table count for nothing
        w = (self.weight(rows) + self.nb_weight) * self.ratio[rows]  # [B, N, C]
        return self.bias + (w * known.unsqueeze(-1)).sum(1) / self.scale
