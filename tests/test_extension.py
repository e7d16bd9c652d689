"""A researcher's own model and dataset, from outside the package (helpers/extension.py: a module on their import
path, label,text CSV files and the YAML in a --config-dir), through the real pbexp-train, pbexp-eval and
pbexp-report; and what is refused, in one line, exit 2: a model of the other kind for their dataset (named from its
config), a model that breaks its contract."""

import json
import os

import pytest

from helpers.cli import cli_env, main_in_process, run_cli
from helpers.data import write_tiny_ptb
from helpers.extension import importable, write_extension
from pbexp.rundir import RunDir

LM_SIZES = ["trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=4", "trainer.epochs=2"]


@pytest.fixture
def user(tmp_path):
    """The researcher's folder: ext/ (code), conf/ (YAML), data/mycsv/ and data/ptb/; (import path, config dir)."""
    ext, conf, _ = write_extension(tmp_path)
    write_tiny_ptb(tmp_path / "data" / "ptb")
    return ext, conf


def test_a_model_and_a_dataset_from_outside_the_package_train_evaluate_and_report(user, tmp_path):
    ext, conf = user
    env = cli_env(PYTHONPATH=os.pathsep.join(p for p in (str(ext), os.environ.get("PYTHONPATH")) if p))
    clf, lm = RunDir(tmp_path / "mycsv_clf_run"), RunDir(tmp_path / "bigram_lm_run")

    def pbexp_train(*args):
        proc = run_cli(["--config-dir", str(conf), *args], cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # their dataset (a loader class, kind from its base class) with their classifier, the dataset's default
    pbexp_train(
        "dataset=mycsv", "trainer.epochs=3", "trainer.batch_size=8", "trainer.lr=0.05", f"hydra.run.dir={clf.path}"
    )
    results = clf.read_results()
    assert (results["status"], results["task"], results["model"]) == ("completed", "clf", "MeanEmbeddingClassifier")
    assert results["test/acc"] > 0.6  # two classes: it learned the words of each
    examples = clf.read_test_examples()
    labels = [line.split(",")[0] for line in (tmp_path / "data" / "mycsv" / "test.csv").read_text().splitlines()]
    assert examples["label"].tolist() == [["neg", "pos"].index(label) for label in labels]
    assert (examples["pred"] == examples["label"]).mean() == pytest.approx(results["test/acc"], rel=1e-12)

    # their language model, which carries no state, on PTB
    pbexp_train("model=bigram_lm", "dataset.root=data", "dataset.download=false", *LM_SIZES, f"hydra.run.dir={lm.path}")
    lm_results = lm.read_results()
    assert (lm_results["status"], lm_results["model"]) == ("completed", "BigramLM")
    assert lm_results["valid/ppl"] < 0.5 * len(lm.vocab.read_text().split())
    sums = lm.read_test_examples()
    assert sums["loss_sum"].sum() / sums["tokens"].sum() == pytest.approx(lm_results["test/loss"], rel=1e-9)

    # pbexp-eval rebuilds their model and dataset from the run's config (their module on the import path)
    proc = run_cli([str(clf.path)], cwd=tmp_path, env=env, module="pbexp.evaluate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["acc"] == results["test/acc"]

    # pbexp-report reads both
    proc = run_cli([str(clf.path), str(lm.path)], cwd=tmp_path, env=env, module="pbexp.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mycsv_clf_run" in proc.stdout and "bigram_lm_run" in proc.stdout


REFUSED = {
    "lm-on-their-dataset": (
        ["dataset=mycsv", "model=lstm"],
        "model='lstm' is not allowed: a language model, and dataset=mycsv is a classification dataset; "
        "use a classifier, e.g. model=cnn",
    ),
    "their-classifier-on-ptb": (
        ["model=mean_clf", "dataset.root=data", "dataset.download=false", "trainer.optimizer=adam", "trainer.lr=0.1"],
        "model='mean_clf' is not allowed: a classifier, and dataset=ptb is a language-modelling dataset; "
        "use a language model, e.g. model=lstm",
    ),
    "no-init-hidden": (
        ["model=no_hidden_lm", "dataset.root=data", "dataset.download=false", *LM_SIZES],
        "model tinyext.models.NoHiddenLM does not meet the language-model contract: it has no "
        "init_hidden(batch_size, device) method",
    ),
    "logits-per-token": (
        ["dataset=mycsv", "model=per_token_clf"],
        "model tinyext.models.PerTokenClassifier does not meet the classifier contract: forward(x [2, 8] int64) "
        "returned a float32 tensor [2, 8, 2]; expected logits [2, 2] floats",
    ),
}


@pytest.mark.parametrize("args, message", REFUSED.values(), ids=REFUSED)
def test_a_model_that_does_not_fit_is_refused_in_one_line_before_training(
    user, tmp_path, monkeypatch, capsys, args, message
):
    ext, conf = user
    monkeypatch.chdir(tmp_path)
    run = RunDir(tmp_path / "run")
    capsys.readouterr()
    with importable(ext):
        code = main_in_process(["--config-dir", str(conf), *args, f"hydra.run.dir={run.path}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"pbexp-train: error: {message}"), lines[0]
    assert "Traceback" not in err
    assert not run.checkpoints.exists()  # refused before the first step
    assert run.read_results()["status"] == "failed"
