"""pbexp-tsne end to end: a real subprocess on a fake run dir, plus its user-error paths."""

import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from helpers.configs import SHARED_DATA
from pbexp import embedding_map as cli
from pbexp.rundir import RunDir

VOCAB = 40


def _write_corpus(folder):
    """A PTB-format corpus whose vocabulary (first appearance, as pbexp.data.ptb builds it) is
    word0..word38 then <eos>, and in which word i occurs 2i + 2 times and <eos> 39 times (one a
    line): frequency order is the reverse of vocab order, <eos> between word19 and word18."""
    lines = [" ".join(f"word{i}" for i in range(VOCAB - 1))]
    lines += [" ".join([f"word{i}"] * (2 * i + 1)) for i in range(VOCAB - 1)]
    (folder / "ptb").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / "ptb" / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines))


def _make_run(root, ckpt="best", model=None, vocab=None, dataset_root=None):
    """A run dir as the trainer writes it: the vocabulary, the ``ckpt`` checkpoint ("best" or "last") with
    model['embedding.weight'], and the run's config naming its dataset (by default a corpus written here,
    see _write_corpus)."""
    run = RunDir(root / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.parent.mkdir()
    if dataset_root is None:
        dataset_root = root / "data"
        _write_corpus(dataset_root)
    run.config.write_text(f"dataset:\n  _target_: pbexp.data.ptb.load_ptb\n  root: {dataset_root}\n  download: true\n")
    words = vocab or [f"word{i}" for i in range(VOCAB - 1)] + ["<eos>"]
    run.vocab.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    if model is None:
        g = torch.Generator().manual_seed(0)
        model = {"embedding.weight": torch.randn(len(words), 16, generator=g), "decoder.bias": torch.zeros(len(words))}
    torch.save({"model": model, "epoch": 1}, getattr(run, ckpt))
    return run.path, words


# _write_corpus's frequency order: word38 (78 times) down to word19 (40), <eos> (39), word18 (38) .. word0 (2)
BY_FREQUENCY = [f"word{i}" for i in range(VOCAB - 2, 18, -1)] + ["<eos>"] + [f"word{i}" for i in range(18, -1, -1)]


def _assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 500


def test_cli_subprocess_writes_png_kl_and_projector(tmp_path):
    run, _ = _make_run(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pbexp.embedding_map", str(run), "--words", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    kl = float(re.search(r"KL divergence ([0-9.]+) after (\d+) iterations", proc.stdout).group(1))
    assert 0 < kl < 10
    assert "perplexity 9.66667" in proc.stdout  # 30 capped at (N - 1) / 3 for N = 30
    assert "the 30 most frequent words" in proc.stdout
    _assert_png(run / "tsne_pbexp.png")
    tb = RunDir(run).tb
    assert (tb / "projector_config.pbtxt").is_file()
    metadata = list(tb.rglob("metadata.tsv"))
    assert len(metadata) == 1 and metadata[0].read_text().splitlines() == BY_FREQUENCY[:30]
    tensors = list(tb.rglob("tensors.tsv"))[0].read_text().splitlines()
    assert len(tensors) == 30 and len(tensors[0].split("\t")) == 16


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "does not exist"),
        # refused before any work: the run dir is not even looked at
        (["nope", "--words", "10000"], "--words=10000 is not allowed: at most 2000 with the exact --impl pbexp"),
    ],
)
def test_cli_subprocess_bad_input_exits_2_with_one_line(tmp_path, argv, message):
    proc = subprocess.run(
        [sys.executable, "-m", "pbexp.embedding_map", str(tmp_path / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("impl", ["sklearn", "barnes-hut"])
def test_sklearn_impls_vocab_order_and_last_checkpoint_fallback(tmp_path, capsys, impl):
    run, words = _make_run(tmp_path, ckpt="last")
    out = tmp_path / "pictures"
    assert cli.main([str(run), "--words", "20", "--impl", impl, "--order", "vocab", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert str(RunDir(run).last) in stdout and f"the first 20 words of {RunDir(run).vocab.name}" in stdout
    assert re.search(r"KL divergence [0-9.]+ after \d+ iterations", stdout)
    assert "[t-SNE] Iteration 50: error" in stdout  # scikit-learn's own progress log
    _assert_png(out / f"tsne_{impl}.png")
    assert list(out.rglob("metadata.tsv"))[0].read_text().splitlines() == words[:20]
    assert not RunDir(run).tb.exists()  # --out: nothing written into the run dir


def test_progress_lines_every_fifty_iterations_with_the_kl(tmp_path, capsys):
    """A long fit says how it is going (replaces a flaky "100 words in under 5 s" wall-clock test)."""
    run, _ = _make_run(tmp_path)
    assert cli.main([str(run), "--words", "30", "--max-iter", "300"]) == 0
    stdout = capsys.readouterr().out
    done = [int(i) for i in re.findall(r"iteration (\d+)/300: KL [0-9.]+", stdout)]
    n_iter = int(re.search(r"KL divergence [0-9.]+ after (\d+) iterations", stdout).group(1))
    assert done == list(range(50, n_iter + 1, 50)) and n_iter > 250
    assert "(P exaggerated)" in stdout.splitlines()[1]
    # progress is printed as it happens: header first, the final KL after the last progress line
    assert stdout.index("t-SNE (pbexp)") < stdout.index("iteration 50/") < stdout.index("KL divergence")


@pytest.mark.skipif(not (SHARED_DATA / "ptb" / "ptb.train.txt").is_file(), reason="needs the real PTB")
def test_order_frequency_on_real_ptb_puts_the_most_frequent_words_first(tmp_path, capsys, monkeypatch):
    """Against counts made here, independently: PTB's train file, split on whitespace, <eos> after each line."""
    lines = (SHARED_DATA / "ptb" / "ptb.train.txt").read_text(encoding="utf-8").splitlines()
    tokens = [w for line in lines if line.strip() for w in line.split() + ["<eos>"]]
    counts = Counter(tokens)
    vocab = list(dict.fromkeys(tokens))  # first appearance: the order of a real run's vocabulary file
    expected = sorted(vocab, key=lambda w: -counts[w])[:30]  # stable: ties keep vocab order
    monkeypatch.setenv("PBEXP_DATA_MIRROR", str(SHARED_DATA))
    run, _ = _make_run(tmp_path, vocab=vocab, dataset_root=tmp_path / "elsewhere")
    assert cli.main([str(run), "--words", "30"]) == 0
    assert "the 30 most frequent words" in capsys.readouterr().out
    shown = list(RunDir(run).tb.rglob("metadata.tsv"))[0].read_text().splitlines()
    assert shown == expected and shown[:3] == ["the", "<unk>", "<eos>"]
    assert vocab[0] not in shown  # the vocabulary file starts with rare names ("aer", "banknote", ...)


def _place(n, seed=0):
    """place_labels on n points spread like a t-SNE map over the 1430-pixel figure, labels 10-60 px wide."""
    rng = np.random.default_rng(seed)
    points = 715 + 200 * rng.standard_normal((n, 2))
    sizes = np.column_stack([rng.integers(10, 60, n), np.full(n, 12.0)])
    choice, work = cli.place_labels(points, sizes, 110 / 72)
    return points, sizes, choice, work


def test_label_placement_at_a_thousand_words_is_bounded_work():
    """The work is counted, not timed: each label's 72 spots against the boxes within its reach.
    (The old placement laid out every candidate with matplotlib and compared it with every box
    in Python: over 100 s at 1000 words.)"""
    n = 1000
    points, sizes, choice, work = _place(n)
    spots = len(cli.LABEL_SPOTS)
    assert work <= spots * n * (n + n)  # the documented bound
    assert work <= 0.4 * spots * n * (n + n)  # only boxes within reach: ~30% of the bound on this dense map
    # and it still places labels: the chosen boxes overlap no marker or earlier label for most
    low = points + np.array(
        [
            [r * 110 / 72 * dx - (1 - dx) / 2 * w, r * 110 / 72 * dy - (1 - dy) / 2 * h]
            for (r, dx, dy), (w, h) in zip((cli.LABEL_SPOTS[c] for c in choice), sizes)
        ]
    )
    boxes = np.hstack([low, low + sizes])
    markers = np.hstack([points - cli.MARKER_HALF, points + cli.MARKER_HALF])
    hits = [
        ((np.minimum(b[2:], markers[:, 2:]) - np.maximum(b[:2], markers[:, :2])) > 0).all(axis=1).any() for b in boxes
    ]
    assert np.mean(hits) < 0.2


def test_label_placement_takes_the_first_free_spot():
    points = np.array([[100.0, 100.0], [100.0, 300.0]])
    sizes = np.array([[30.0, 12.0], [30.0, 12.0]])
    choice, _ = cli.place_labels(points, sizes, 1.0)
    assert choice == [0, 0]  # nothing in the way: up and to the right, nearest ring
    blocker = np.array([[110.0, 110.0]])  # a marker just up and to the right of the first point
    choice, _ = cli.place_labels(np.vstack([points[:1], blocker]), sizes[:1], 1.0)
    assert cli.LABEL_SPOTS[choice[0]] == (4, 1, -1)  # the next spot in order: down and to the right


def test_plot_labels_at_most_max_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "MAX_LABELS", 10)
    Y = np.random.default_rng(0).standard_normal((30, 2))
    assert cli.plot(Y, [f"w{i}" for i in range(30)], tmp_path / "p.png", "title") == 10
    _assert_png(tmp_path / "p.png")


def _bad_runs(tmp_path):
    no_ckpt, _ = _make_run(tmp_path / "a")
    RunDir(no_ckpt).best.unlink()
    no_emb, _ = _make_run(tmp_path / "b", model={"encoder.weight": torch.zeros(VOCAB, 4)})
    no_vocab, _ = _make_run(tmp_path / "c")
    RunDir(no_vocab).vocab.unlink()
    corrupt, _ = _make_run(tmp_path / "d")
    RunDir(corrupt).best.write_bytes(b"not a checkpoint")
    good, _ = _make_run(tmp_path / "e")
    no_config, _ = _make_run(tmp_path / "f")
    RunDir(no_config).config.unlink()
    other_vocab, _ = _make_run(tmp_path / "g", vocab=[f"other{i}" for i in range(VOCAB)])
    no_data, _ = _make_run(tmp_path / "h", dataset_root=tmp_path / "nowhere")
    return {
        "missing run dir": ([str(tmp_path / "missing")], "does not exist"),
        "no checkpoint": ([str(no_ckpt)], "no checkpoint"),
        "no embedding": ([str(no_emb)], "embedding.weight"),
        "no vocab": ([str(no_vocab)], f"{RunDir(no_vocab).vocab} is missing"),
        "corrupt checkpoint": ([str(corrupt)], "cannot load"),
        "zero words": ([str(good), "--words", "0"], "--words=0"),
        "too many words": ([str(good), "--words", str(VOCAB + 1)], "vocabulary size 40"),
        "over the exact limit": (
            [str(good), "--words", "2001"],
            "--words=2001 is not allowed: at most 2000 with the exact --impl pbexp",
        ),
        "over the exact limit, sklearn": (
            [str(good), "--words", "5000", "--impl", "sklearn"],
            "--impl barnes-hut takes more",
        ),
        "barnes-hut: vocabulary size": ([str(good), "--words", "5000", "--impl", "barnes-hut"], "vocabulary size 40"),
        "bad impl": ([str(good), "--impl", "umap"], "--impl='umap'"),
        "bad order": ([str(good), "--order", "alphabetical"], "--order='alphabetical'"),
        "non-integer words": ([str(good), "--words", "many"], "invalid int"),
        "max-iter below exaggeration": ([str(good), "--words", "20", "--max-iter", "100"], "--max-iter=100"),
        "perplexity 1": ([str(good), "--words", "20", "--perplexity", "1"], "--perplexity=1.0"),
        "out is a file": ([str(good), "--out", str(RunDir(good).vocab)], "--out="),
        "frequency without config": ([str(no_config), "--words", "20"], "use --order vocab"),
        "frequency, other vocabulary": ([str(other_vocab), "--words", "20"], "another vocabulary"),
        "frequency, data missing": ([str(no_data), "--words", "20"], "Or use --order vocab"),
    }


def test_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)  # "data missing" must not find the real PTB there
    for case, (argv, message) in _bad_runs(tmp_path).items():
        assert cli.main(argv) == 2, case
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (case, err)
