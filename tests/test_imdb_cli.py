"""pbexp-train on a tiny aclImdb archive, one real subprocess per model family."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers.cli import cli_env, run_cli
from helpers.configs import SHARED_DATA
from helpers.data import write_archive, write_tree
from pbexp.rundir import RunDir

FAMILIES = {
    "report": ["model=report_cnn", "model.seq_len=10", "model.emb_size=20", "model.kernel_size=3"],
    "cnn": ["model=cnn", "model.emb_size=8", "model.filters=4", "model.widths=[2,3]"],
    "rnn": ["model=gru_clf", "model.emb_size=8", "model.hidden_size=6"],
    "cnn_rnn": ["model=cnn_rnn", "model.emb_size=8", "model.channels=6", "model.hidden_size=6"],
    "fasttext": ["model=fasttext", "model.emb_size=8", "model.buckets=1000"],
    "fasttext_sparse": [
        "model=fasttext",
        "model.emb_size=8",
        "model.buckets=1000",
        "model.sparse=true",
        "trainer.optimizer=adagrad",
        "trainer.lr=0.1",
    ],
    "nbsvm": ["model=nbsvm", "model.max_features=1000"],
    "sklearn": ["model=sklearn_linear"],  # trains itself: trainer.epochs and batch_size do not apply
    "cnn_word2vec": [
        "model=cnn",
        "model.emb_size=8",
        "model.filters=4",
        "model.widths=[2,3]",
        "model.pretrained=word2vec",
    ],
}


def reviews(n_train=250, n_test=3, seed=0):
    """More and longer reviews than test_imdb_data's tree: the fastText library reports NaN on a
    corpus of a few hundred tokens."""
    import random

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(50)]

    def text(label):
        return " ".join(rng.choice(words) for _ in range(15)) + (" great fun" if label == "pos" else " bad dull")

    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for label, ratings in (("pos", (7, 10)), ("neg", (1, 4))):
            out[(split, label)] = {i: (rng.randint(*ratings), text(label)) for i in range(n)}
    return out


@pytest.fixture(scope="module")
def imdb_root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imdb")
    write_archive(write_tree(tmp / "src", reviews=reviews()), tmp / "data" / "imdb" / "aclImdb_v1.tar.gz")
    return tmp / "data"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cli_run_per_model_family(imdb_root, tmp_path, family):
    run = tmp_path / "run"
    args = [
        "dataset=imdb",
        f"dataset.root={imdb_root}",
        "dataset.download=false",
        "dataset.max_len=16",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "trainer.epochs=2",
        "trainer.batch_size=4",
        "trainer.log_every=2",
        *FAMILIES[family],
        f"hydra.run.dir={run}",
    ]
    proc = run_cli(args, cwd=tmp_path, env=cli_env(PBEXP_CACHE_DIR=str(tmp_path / "user-cache")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(RunDir(run).results.read_text())
    assert results["status"] == "completed" and results["task"] == "clf"
    if "model.pretrained=word2vec" in FAMILIES[family]:  # trained on the training split, into the user's cache
        assert len(list((tmp_path / "user-cache").glob("word2vec-*.txt"))) == 1
    for key in ("test/acc", "test/precision", "test/recall", "test/f1", "valid/acc", "perf/examples_per_s"):
        assert 0 <= results[key] <= (1 if "/" in key and key.split("/")[0] in ("test", "valid") else 1e12), key
    n_test = sum(sum(row) for row in results["test/confusion"])
    assert n_test == 6  # the tree's test reviews
    assert results["test/acc"] == pytest.approx(sum(results["test/confusion"][i][i] for i in range(2)) / n_test)
    acc = EventAccumulator(str(RunDir(run).tb))
    acc.Reload()
    tags = acc.Tags()
    assert {"valid/acc", "test/acc", "test/precision", "test/recall", "test/f1"} <= set(tags["scalars"])
    assert "test/confusion" in tags["images"]


@pytest.mark.skipif(not (SHARED_DATA / "imdb" / "aclImdb_v1.tar.gz").exists(), reason="real IMDB not found")
def test_fasttext_library_baseline_on_real_imdb(tmp_path):
    """The fastText library through pbexp-train. On real data: on a toy corpus of a few thousand
    tokens the library's training fails at random ('Encountered NaN'), seen here with fresh processes."""
    pytest.importorskip("fasttext", reason="the optional fastText library has no wheel for this platform")
    run = tmp_path / "run"
    proc = run_cli(
        ["dataset=imdb", "dataset.download=false", "model=fasttext_lib", "model.epoch=2", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=cli_env(PBEXP_DATA_MIRROR=str(SHARED_DATA)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(RunDir(run).results.read_text())
    assert results["model"] == "FastTextLib" and results["test/acc"] > 0.8
    assert sum(map(sum, results["test/confusion"])) == 25000
    assert RunDir(run).artifact("fasttext.bin").exists()
