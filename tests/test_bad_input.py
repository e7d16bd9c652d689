"""Bad input of every kind: a non-zero exit, a one-line message naming the key or file and what is
allowed, no traceback, and nothing that existed in the run directory overwritten.

Run in-process through the real entry point (``pbexp.train.main`` with ``sys.argv``) to keep the
suite fast; test_cli.py covers the same path in real subprocesses."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from helpers.cli import main_in_process
from helpers.configs import TINY_LM
from helpers.data import write_archive, write_tiny_ptb, write_tree
from pbexp.rundir import RunDir

CLF_BASE = ["dataset=imdb", "dataset.download=false", "dataset.max_len=12", "trainer.epochs=1", "trainer.batch_size=4"]
CLF = [*CLF_BASE, "model=fasttext", "model.buckets=100"]


GLOVE_3D, GLOVE_BAD = "the 1 2 3\n", "the 1 2 3\ncat 1 x 3\n"


def _ptb(d):
    return write_tiny_ptb(d / "data" / "ptb").parent


def _imdb(d, reviews=None, extra=()):
    folder = write_tree(d / "src", reviews=reviews)
    write_archive(folder, d / "data" / "imdb" / "aclImdb_v1.tar.gz", extra=list(extra))
    return d / "data"


def _glove(d, text, name="g.txt"):
    path = d / name
    path.write_text(text)
    return path


def _truncated_archive(d):
    root = _imdb(d)
    arc = root / "imdb" / "aclImdb_v1.tar.gz"
    arc.write_bytes(arc.read_bytes()[: len(arc.read_bytes()) // 2])
    return root


def _corrupt_archive(d):
    root = _imdb(d)
    (root / "imdb" / "aclImdb_v1.tar.gz").write_bytes(gzip.compress(b"this is not a tar file" * 100))
    return root


def _non_utf8(d):
    root = _imdb(d)
    bad = d / "src" / "aclImdb" / "train" / "pos" / "3_9.txt"
    bad.write_bytes(b"caf\xe9 \xff\xfe bad bytes")
    write_archive(d / "src" / "aclImdb", root / "imdb" / "aclImdb_v1.tar.gz")
    return root


def _different_shape_checkpoint(d, run):
    root = _ptb(d)
    assert (
        main_in_process(
            [
                *TINY_LM,
                f"dataset.root={root}",
                "trainer.max_steps=2",
                "trainer.epochs=1",
                "trainer.checkpoint_every=1",
                f"hydra.run.dir={run}",
            ],
        )
        == 0
    )
    RunDir(run).results.unlink()  # an unfinished run of another shape
    return [f"dataset.root={root}", "model.hidden_size=24"]


# Each case: (id, function building the arguments from a tmp dir, text the message must contain)
CASES = [
    ("missing-data", lambda d: ["dataset.root=" + str(d / "nowhere")], "ptb.train.txt"),
    (
        "empty-ptb",
        lambda d: (lambda r: ((r / "ptb" / "ptb.train.txt").write_text(""), [f"dataset.root={r}"])[1])(_ptb(d)),
        "is empty",
    ),
    (
        "malformed-ptb",
        lambda d: (lambda r: ((r / "ptb" / "ptb.valid.txt").write_bytes(b"\x00\xff" * 50), [f"dataset.root={r}"])[1])(
            _ptb(d)
        ),
        "ptb.valid.txt",
    ),
    ("truncated-archive", lambda d: [*CLF, f"dataset.root={_truncated_archive(d)}"], "aclImdb_v1.tar.gz"),
    ("corrupt-archive", lambda d: [*CLF, f"dataset.root={_corrupt_archive(d)}"], "aclImdb_v1.tar.gz"),
    (
        "escaping-member",
        lambda d: [*CLF, f"dataset.root={_imdb(d, extra=[('aclImdb/../../evil.txt', b'x')])}"],
        "evil.txt",
    ),
    ("absolute-member", lambda d: [*CLF, f"dataset.root={_imdb(d, extra=[('/tmp/evil.txt', b'x')])}"], "evil.txt"),
    ("non-utf8-review", lambda d: [*CLF, f"dataset.root={_non_utf8(d)}"], "3_9.txt"),
    ("lr-zero", lambda d: [f"dataset.root={_ptb(d)}", "trainer.lr=0"], "trainer.lr"),
    (
        "device-not-a-gpu-number",
        lambda d: [f"dataset.root={_ptb(d)}", "trainer.device=cuda:x"],
        "trainer.device='cuda:x' is not allowed",
    ),
    (
        "negative-patience",
        lambda d: [f"dataset.root={_ptb(d)}", "trainer.early_stop_patience=-1"],
        "trainer.early_stop_patience=-1 is not allowed: an integer >= 0",
    ),
    (
        "word2vec-without-embedding",
        lambda d: [
            *CLF_BASE,
            f"dataset.root={_imdb(d)}",
            "model=nbsvm",
            "model.max_features=50",
            "model.pretrained=word2vec",
        ],
        "NBSVM has no word embedding",
    ),
    ("lr-negative", lambda d: [f"dataset.root={_ptb(d)}", "trainer.lr=-1"], "trainer.lr"),
    ("batch-size", lambda d: [f"dataset.root={_ptb(d)}", "trainer.batch_size=0"], "trainer.batch_size"),
    ("bptt", lambda d: [f"dataset.root={_ptb(d)}", "trainer.bptt=-5"], "trainer.bptt"),
    ("emb-size", lambda d: [f"dataset.root={_ptb(d)}", "model.emb_size=0"], "model.emb_size"),
    ("hidden-size", lambda d: [f"dataset.root={_ptb(d)}", "model.hidden_size=-1"], "model.hidden_size"),
    ("layers", lambda d: [f"dataset.root={_ptb(d)}", "model.num_layers=0"], "model.num_layers"),
    ("max-len", lambda d: [*CLF, f"dataset.root={_imdb(d)}", "dataset.max_len=0"], "max_len"),
    ("dropout-one", lambda d: [f"dataset.root={_ptb(d)}", "model.dropout=1.0"], "model.dropout"),
    ("dropout-negative", lambda d: [f"dataset.root={_ptb(d)}", "model.dropout=-0.2"], "model.dropout"),
    (
        "tied-sizes",
        lambda d: [f"dataset.root={_ptb(d)}", "model.hidden_size=24", "model.tie_weights=true"],
        "model.tie_weights",
    ),
    ("filter-width", lambda d: [*CLF_BASE, f"dataset.root={_imdb(d)}", "model=cnn", "model.widths=[3,40]"], "max_len"),
    (
        "glove-dimension",
        lambda d: [f"dataset.root={_ptb(d)}", "model.pretrained=" + str(_glove(d, GLOVE_3D))],
        "model.emb_size=3",
    ),
    (
        "glove-malformed",
        lambda d: [f"dataset.root={_ptb(d)}", "model.emb_size=3", "model.pretrained=" + str(_glove(d, GLOVE_BAD))],
        "line 2",
    ),
    (
        "glove-nan",
        lambda d: [
            f"dataset.root={_ptb(d)}",
            "model.emb_size=3",
            "model.pretrained=" + str(_glove(d, "zyx 1 2 3\nthe nan 1 2\n")),
        ],
        "line 2",
    ),
    ("glove-missing", lambda d: [f"dataset.root={_ptb(d)}", f"model.pretrained={d / 'nope.txt'}"], "nope.txt"),
    (
        "glove-bad-zip",
        lambda d: [f"dataset.root={_ptb(d)}", f"model.pretrained={_glove(d, 'not a zip', 'g.zip')}"],
        "g.zip",
    ),
    (
        "freeze-without-file",
        lambda d: [f"dataset.root={_ptb(d)}", "model.freeze_embeddings=true"],
        "model.freeze_embeddings",
    ),
    ("empty-vocab", lambda d: [*CLF, f"dataset.root={_imdb(d)}", "dataset.min_freq=100000"], "vocabulary"),
    (
        "sparse-with-adam",
        lambda d: [
            *CLF_BASE,
            f"dataset.root={_imdb(d)}",
            "model=fasttext",
            "model.sparse=true",
            "trainer.optimizer=adam",
        ],
        "trainer.optimizer",
    ),
    ("optimizer", lambda d: [f"dataset.root={_ptb(d)}", "trainer.optimizer=rmsprop"], "trainer.optimizer"),
    ("schedule", lambda d: [f"dataset.root={_ptb(d)}", "trainer.schedule=cosine"], "trainer.schedule"),
    ("cell", lambda d: [f"dataset.root={_ptb(d)}", "model.cell=LSTMX"], "model.cell"),
    # Only an error where there is no GPU; on a CUDA machine the same command trains.
    pytest.param(
        ("no-cuda", lambda d: [f"dataset.root={_ptb(d)}", "trainer.device=cuda"], "trainer.device"),
        id="no-cuda",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
    ("epochs-negative", lambda d: [f"dataset.root={_ptb(d)}", "trainer.epochs=-1"], "an integer >= 1, or 0 (no epoch"),
    (
        "epochs-zero-unbounded",
        lambda d: [f"dataset.root={_ptb(d)}", "trainer.epochs=0"],
        "an integer >= 1, or 0 (no epoch",
    ),
    ("batch-beyond-data", lambda d: [f"dataset.root={_ptb(d)}", "trainer.batch_size=100000000"], "trainer.batch_size"),
    ("bptt-beyond-data", lambda d: [f"dataset.root={_ptb(d)}", "trainer.bptt=10000000"], "trainer.bptt"),
    (
        "eval-batch-beyond-data",
        lambda d: [f"dataset.root={_ptb(d)}", "trainer.eval_batch_size=100000"],
        "trainer.eval_batch_size",
    ),
    (
        "out-of-memory",
        lambda d: [f"dataset.root={_ptb(d)}", "model.emb_size=100000000000", "model.hidden_size=16"],
        "out of memory on this machine",
    ),
    ("typo-key", lambda d: [f"dataset.root={_ptb(d)}", "trainer.lrr=1"], "Could not override 'trainer.lrr'"),
    ("unknown-choice", lambda d: [f"dataset.root={_ptb(d)}", "model=foo"], "Available options in 'model': awd_lstm"),
    ("bad-override-syntax", lambda d: [f"dataset.root={_ptb(d)}", "trainer.lr=[1"], "override 'trainer.lr=[1'"),
    ("bad-sweep-value", lambda d: ["-m", f"dataset.root={_ptb(d)}", "model=lstm,foo"], "Could not find 'model/foo'"),
    (
        "lm-on-imdb",
        lambda d: [*CLF_BASE, f"dataset.root={_imdb(d)}", "model=gru", "model.hidden_size=32"],
        "model='gru' is not allowed: a language model, and dataset=imdb is a classification dataset; use model=gru_clf",
    ),
    (
        "fasttext-lib-max-steps",
        lambda d: [*CLF_BASE, f"dataset.root={_imdb(d)}", "model=fasttext_lib", "trainer.max_steps=5"],
        "trainer.max_steps",
    ),
    (
        "unknown-preset",
        lambda d: [f"dataset.root={_ptb(d)}", "experiment=layers", "preset=gpu"],
        "['quick', 'cpu', 'full']",
    ),
]


def seed_run_dir(run):
    """What an earlier attempt left in the run directory; none of it may change."""
    run.mkdir(parents=True, exist_ok=True)
    files = {
        RunDir(run).results: json.dumps({"status": "failed", "error": "earlier"}),
        RunDir(run).metrics: '{"epoch": 1}\n',
        run / "notes.txt": "mine",
    }
    for path, text in files.items():
        path.write_text(text)
    return files


@pytest.mark.parametrize("case", CASES, ids=[getattr(c, "id", None) or c[0] for c in CASES])
def test_bad_input_fails_cleanly(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    monkeypatch.setenv("PBEXP_CACHE_DIR", str(tmp_path / "cache"))
    name, build, needle = case
    run = tmp_path / "run"
    args = build(tmp_path)
    if "dataset=imdb" not in args:
        args = [*TINY_LM, *args]
    files = seed_run_dir(run)
    capsys.readouterr()
    code = main_in_process([*args, f"hydra.run.dir={run}"])
    err = capsys.readouterr().err
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name} was overwritten"
    assert not RunDir(run).checkpoints.exists() and not RunDir(run).tb.exists()


def test_model_without_a_recipe_for_the_task_fails_cleanly(tmp_path, capsys, monkeypatch):
    """trainer/lm.yaml takes optimizer and lr from model.recipe; a classifier on PTB has none."""
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    capsys.readouterr()
    code = main_in_process([f"dataset.root={_ptb(tmp_path)}", "model=cnn", f"hydra.run.dir={tmp_path / 'run'}"])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "set trainer.optimizer=..." in lines[0], lines
    assert not RunDir(tmp_path / "run").checkpoints.exists()


class _Crafted:  # a pickle that would run code if it were unpickled in full
    def __reduce__(self):
        return (print, ("pwned",))


def test_unreadable_checkpoint_without_fallback_stops_and_deletes_nothing(tmp_path, capsys, monkeypatch):
    """It restarted at step 0 and deleted the run's TensorBoard events."""
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    run = tmp_path / "run"
    args = [
        *TINY_LM,
        f"dataset.root={_ptb(tmp_path)}",
        "trainer.max_steps=2",
        "trainer.epochs=1",
        "trainer.checkpoint_every=1",
        f"hydra.run.dir={run}",
    ]
    assert main_in_process(args) == 0
    rd = RunDir(run)
    rd.results.unlink()  # an unfinished run with checkpoints and events
    rd.last.with_suffix(".prev.pt").unlink(missing_ok=True)
    torch.save({"model": _Crafted()}, rd.last)
    before = {p: p.read_bytes() for p in [*rd.tb_events(), rd.last]}
    assert any("tfevents" in p.name for p in before)
    capsys.readouterr()
    code = main_in_process(args)
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and rd.last.name in lines[0] and "nothing was changed" in lines[0], lines
    assert "weights_only=False" not in captured.err + captured.out and "pwned" not in captured.out
    assert {p: p.read_bytes() for p in before} == before


def test_checkpoint_of_another_shape_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    run = tmp_path / "run"
    args = [*TINY_LM, *_different_shape_checkpoint(tmp_path, run)]
    before = RunDir(run).last.read_bytes()
    provenance = {p: p.read_bytes() for p in RunDir(run).hydra.iterdir()}
    capsys.readouterr()
    # The run dir's own config says it was started otherwise: refused before Hydra rewrites anything.
    code = main_in_process([*args, f"hydra.run.dir={run}"])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "was started with another config" in lines[0], lines
    assert "model.hidden_size: 16 -> 24" in lines[0] and "trainer.max_steps: 2 -> 0" in lines[0]
    assert {p: p.read_bytes() for p in RunDir(run).hydra.iterdir()} == provenance
    # Without that record, the checkpoint's shapes still stop it.
    for p in provenance:
        p.unlink()
    code = main_in_process([*args, f"hydra.run.dir={run}"])
    err = capsys.readouterr().err
    assert code == 2 and "different shape" in err and "Traceback" not in err
    assert RunDir(run).last.read_bytes() == before


def test_continuing_with_other_threads_or_device_is_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    run = tmp_path / "run"
    args = [
        *TINY_LM,
        f"dataset.root={_ptb(tmp_path)}",
        "trainer.max_steps=2",
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
    ]
    assert main_in_process(args) == 0
    RunDir(run).results.unlink()
    saved = RunDir(run).config.read_bytes()
    assert main_in_process([*args, "trainer.num_threads=1", "trainer.device=cpu"]) == 0
    assert RunDir(run).config.read_bytes() == saved  # the record of how it was started stays


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main_in_process(["trainer.max_steps=1", f"hydra.run.dir={blocker / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be written" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args,needle",
    [(["model=transformerx"], "transformerx"), (["dataset=wikitext"], "wikitext"), (["experiment=nope"], "nope")],
)
def test_unknown_model_dataset_or_experiment(tmp_path, capsys, args, needle):
    code = main_in_process([*args, f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code != 0 and needle in err and "Traceback" not in err


def test_interrupt_before_the_first_checkpoint_says_so(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the data loaded printed 'checkpoint saved in .../checkpoints' with no checkpoint there."""
    import pbexp.train

    def interrupted(*a, **k):
        raise KeyboardInterrupt("SIGINT")

    monkeypatch.delenv("PBEXP_DATA_MIRROR", raising=False)
    monkeypatch.setattr(pbexp.train, "instantiate", interrupted)
    run = tmp_path / "run"
    capsys.readouterr()
    code = main_in_process([*TINY_LM, f"dataset.root={_ptb(tmp_path)}", f"hydra.run.dir={run}"])
    err = capsys.readouterr().err
    assert code == 130 and "before the first checkpoint; nothing to resume" in err and "saved" not in err
    assert not RunDir(run).checkpoints.exists()
