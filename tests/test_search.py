"""pbexp-train -m hparams_search=...: Optuna over real runs, pruning, resuming a stopped search, the best trial."""

import yaml

from helpers.cli import cli_env, run_cli
from helpers.configs import TINY_LM_SIZES, search_yaml
from helpers.data import write_tiny_ptb
from pbexp.rundir import RunDir

# A search of the user's own (through --config-dir), over a learning rate from useless to good: the trials
# at tiny learning rates trail after their first epoch, which the median pruner acts on.
SEARCH = search_yaml(n_trials=4, n_startup_trials=1)
TINY = [
    *TINY_LM_SIZES,
    "trainer.checkpoint_every=0",
    "trainer.epochs=3",
    "trainer.limit_batches=6",
    "dataset.download=false",
]


def test_four_trial_search_prunes_resumes_and_names_the_best(tmp_path):
    (tmp_path / "mine" / "hparams_search").mkdir(parents=True)
    (tmp_path / "mine" / "hparams_search" / "tiny.yaml").write_text(SEARCH)
    data = write_tiny_ptb(tmp_path / "data" / "ptb").parent
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "-cd",
        str(tmp_path / "mine"),
        "hparams_search=tiny",
        *TINY,
        f"dataset.root={data}",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = {int(d.name): RunDir(d).read_results() for d in sweep.iterdir() if RunDir(d).results.is_file()}
    assert sorted(results) == [0, 1, 2, 3]  # trial N ran as job N
    statuses = {n: r["status"] for n, r in results.items()}
    assert set(statuses.values()) == {"completed", "pruned"}, statuses
    for n, r in results.items():
        if r["status"] == "pruned":  # stopped after an epoch, before the last
            epochs = RunDir(sweep / str(n)).read_metrics()
            assert 1 <= len(epochs) < 3
    best = yaml.safe_load((sweep / "optuna_best.yaml").read_text())
    completed = {n: r["valid/ppl"] for n, r in results.items() if r["status"] == "completed"}
    assert best["number"] == min(completed, key=completed.get) and best["value"] == completed[best["number"]]
    assert best["run_dir"] == str(sweep / str(best["number"]))
    assert best["trials"]["complete"] + best["trials"]["pruned"] == 4
    assert f"best trial {best['number']}" in proc.stdout

    # The same command again: the study is in <sweep>/optuna.journal, four trials are done, nothing reruns.
    again = run_cli(args, cwd=tmp_path, env=cli_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit()) == [0, 1, 2, 3]
    assert "4 trial(s) already done, 0 to go" in again.stdout + again.stderr


def test_a_search_space_on_the_command_line_is_checked_and_runs(tmp_path):
    # interval(...) on the command line: the override check composed each value of a sweep, and Hydra cannot
    # enumerate an interval ("Can only enumerate CHOICE and RANGE sweeps", a traceback); its two ends are checked.
    data = write_tiny_ptb(tmp_path / "data" / "ptb").parent
    args = ["-m", "hydra/sweeper=pbexp_optuna", "hydra.sweeper.n_trials=1", *TINY, f"dataset.root={data}"]
    proc = run_cli([*args, "trainer.lr=tag(log, interval(0.5, 5.0))", f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (lr,) = [o for o in RunDir(tmp_path / "s" / "0").read_results()["overrides"] if o.startswith("trainer.lr=")]
    assert 0.5 <= float(lr.split("=")[1]) <= 5.0
    bad = run_cli([*args, "trainer.lrr=interval(0.5, 5.0)", f"hydra.sweep.dir={tmp_path / 'b'}"], tmp_path)
    assert bad.returncode == 2 and "trainer.lrr" in bad.stderr and "Traceback" not in bad.stderr
