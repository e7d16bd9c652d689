"""pbexp-tsne end to end: a real subprocess on a fake run dir, plus its user-error paths."""

import re
import subprocess
import sys

import torch

from pbexp import tsne as cli

VOCAB = 40


def _make_run(root, ckpt_name="best.pt", model=None):
    """A run dir as the trainer writes it: vocab.txt and checkpoints/<name> with model['embedding.weight']."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    words = [f"word{i}" for i in range(VOCAB)]
    (run / "vocab.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    if model is None:
        g = torch.Generator().manual_seed(0)
        model = {"embedding.weight": torch.randn(VOCAB, 16, generator=g), "decoder.bias": torch.zeros(VOCAB)}
    torch.save({"model": model, "epoch": 1}, run / "checkpoints" / ckpt_name)
    return run, words


def _assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 500


def test_cli_subprocess_writes_png_kl_and_projector(tmp_path):
    run, words = _make_run(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pbexp.tsne", str(run), "--words", "30"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kl = float(re.search(r"KL divergence ([0-9.]+) after (\d+) iterations", proc.stdout).group(1))
    assert 0 < kl < 10
    assert "perplexity 9.66667" in proc.stdout  # 30 capped at (N - 1) / 3 for N = 30
    _assert_png(run / "tsne_pbexp.png")
    tb = run / "tb"
    assert (tb / "projector_config.pbtxt").is_file()
    metadata = list(tb.rglob("metadata.tsv"))
    assert len(metadata) == 1 and metadata[0].read_text().splitlines() == words[:30]
    tensors = list(tb.rglob("tensors.tsv"))[0].read_text().splitlines()
    assert len(tensors) == 30 and len(tensors[0].split("\t")) == 16


def test_cli_subprocess_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pbexp.tsne", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sklearn_impl_and_last_pt_fallback(tmp_path, capsys):
    run, _ = _make_run(tmp_path, ckpt_name="last.pt")
    assert cli.main([str(run), "--words", "20", "--impl", "sklearn"]) == 0
    out = capsys.readouterr().out
    assert "last.pt" in out and re.search(r"KL divergence [0-9.]+ after \d+ iterations", out)
    _assert_png(run / "tsne_sklearn.png")


def _bad_runs(tmp_path):
    no_ckpt, _ = _make_run(tmp_path / "a")
    (no_ckpt / "checkpoints" / "best.pt").unlink()
    no_emb, _ = _make_run(tmp_path / "b", model={"encoder.weight": torch.zeros(VOCAB, 4)})
    no_vocab, _ = _make_run(tmp_path / "c")
    (no_vocab / "vocab.txt").unlink()
    corrupt, _ = _make_run(tmp_path / "d")
    (corrupt / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    good, _ = _make_run(tmp_path / "e")
    return {
        "missing run dir": ([str(tmp_path / "missing")], "does not exist"),
        "no checkpoint": ([str(no_ckpt)], "no checkpoint"),
        "no embedding": ([str(no_emb)], "embedding.weight"),
        "no vocab": ([str(no_vocab)], "vocab.txt"),
        "corrupt checkpoint": ([str(corrupt)], "cannot load"),
        "zero words": ([str(good), "--words", "0"], "--words=0"),
        "too many words": ([str(good), "--words", str(VOCAB + 1)], "vocabulary size 40"),
        "bad impl": ([str(good), "--impl", "umap"], "--impl='umap'"),
        "non-integer words": ([str(good), "--words", "many"], "invalid int"),
        "max-iter below exaggeration": ([str(good), "--words", "20", "--max-iter", "100"], "--max-iter=100"),
        "perplexity 1": ([str(good), "--words", "20", "--perplexity", "1"], "--perplexity=1.0"),
    }


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    for case, (argv, message) in _bad_runs(tmp_path).items():
        assert cli.main(argv) == 2, case
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (case, err)


def test_hundred_words_within_five_seconds():
    import time

    import numpy as np

    X = np.random.default_rng(0).standard_normal((100, 64))
    t0 = time.perf_counter()
    _, kl, n_iter, secs = cli.run_tsne(X, "pbexp", 30.0, 0, 1000)
    assert time.perf_counter() - t0 < 5.0 and secs < 5.0 and kl > 0 and n_iter > 250
