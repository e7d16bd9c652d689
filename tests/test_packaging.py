"""A built wheel carries configs/ (as pbexp.configs) and trains from a folder that knows nothing of the repo."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from helpers.configs import REPO, TINY_LM
from helpers.data import write_tiny_ptb
from pbexp.rundir import RunDir


def run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_wheel_ships_the_configs_and_trains_outside_the_repository(tmp_path):
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("pbexp-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("pbexp/configs/")}
    expected = {
        f"pbexp/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")
    }
    assert expected and expected <= shipped

    # A fresh virtualenv with the wheel; its dependencies come from this venv's site-packages through a .pth
    # (paths only: this venv's own .pth files, the editable install among them, are not run there).
    fresh = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", "--without-pip", str(fresh)])  # this venv's pip installs into it
    site = run([fresh / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    (Path(site.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(fresh / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ]
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PBEXP_DATA_MIRROR", "PYTHONPATH")}
    where = run(
        [fresh / "bin" / "python", "-c", "import pbexp.train as t; print(t.CONFIG_DIR)"], cwd=elsewhere, env=env
    )
    assert where.stdout.strip().startswith(str(fresh)), where.stdout  # the wheel's copy, not the repository's
    job = run([fresh / "bin" / "pbexp-train", "--cfg", "job"], cwd=elsewhere, env=env)
    assert "_target_: pbexp.models.lm.RNNLanguageModel" in job.stdout

    data = write_tiny_ptb(tmp_path / "data" / "ptb").parent
    run(
        [
            fresh / "bin" / "pbexp-train",
            *TINY_LM,
            f"dataset.root={data}",
            "trainer.max_steps=20",
            "trainer.epochs=0",
            "hydra.run.dir=run",
        ],
        cwd=elsewhere,
        env=env,
    )
    results = RunDir(elsewhere / "run").read_results()
    assert results["status"] == "completed" and results["steps"] == 20


def test_hydras_plugin_scan_of_a_plain_install_finds_the_sweeper(tmp_path):
    # Installed from the wheel (or on PYTHONPATH), hydra_plugins/ is a plain folder that Hydra's plugin scan
    # executes without registering the module: a dataclass defined there crashed every compose but pbexp-train's.
    code = (
        "from hydra import compose, initialize_config_dir\n"
        "from pbexp.config import CONFIG_DIR\n"
        "with initialize_config_dir(config_dir=CONFIG_DIR, version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['hydra/sweeper=pbexp_optuna'], return_hydra_config=True)\n"
        "print(cfg.hydra.sweeper._target_)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = run([sys.executable, "-c", code], cwd=tmp_path, env=env).stdout
    assert out.strip() == "hydra_plugins.pbexp_optuna.optuna_sweeper.OptunaSweeper"
