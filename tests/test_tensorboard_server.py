"""What a person opening the dashboard would see: the real TensorBoard server over a finished 2-run
sweep, queried through its HTTP data API (runs, scalar tags, HPARAMS rows)."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers.cli import free_port, run_cli
from helpers.configs import TINY_LM


def get(url, data=None):
    req = urllib.request.Request(url, data=data, headers={"X-XSRF-Protected": "1", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def served_sweep(tmp_path, tiny_ptb):
    out = tmp_path / "sweep"
    proc = run_cli(
        ["-m", *TINY_LM, f"dataset.root={tiny_ptb}", "model=lstm,gru", "trainer.epochs=1", f"hydra.sweep.dir={out}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    port = free_port()
    # <sweep>/tb names each job's curves by what the sweep varies (callbacks.SweepStatus)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(out / "tb"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:  # the server loads event files asynchronously
            try:
                runs = get(base + "/data/runs")
                if len(runs) >= 2:
                    break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                pytest.fail(f"tensorboard did not serve both runs: {server.stderr.read() if server.poll() else ''}")
            time.sleep(0.5)
        time.sleep(1.5)  # one more reload, so every event of both runs is in
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_tensorboard_serves_both_runs_tags_and_hparams(served_sweep):
    base = served_sweep
    runs = get(base + "/data/runs")
    assert sorted(runs) == ["model=gru", "model=lstm"]  # one run per job, named by what differs, no phantoms
    tags = get(base + "/data/plugin/scalars/tags")
    for run in ("model=lstm", "model=gru"):
        for tag in ("train/loss", "train/ppl", "valid/ppl", "test/ppl", "opt/lr", "perf/tokens_per_s"):
            assert tag in tags[run], (run, tag)
    points = get(base + "/data/plugin/scalars/scalars?run=model=lstm&tag=test/ppl")
    assert len(points) == 1
    body = json.dumps(
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        }
    ).encode()
    groups = get(base + "/data/plugin/hparams/session_groups", data=body)
    sessions = {s["name"]: s for g in groups["sessionGroups"] for s in g["sessions"]}
    assert set(sessions) == {"model=gru", "model=lstm"}
    assert sorted(g["hparams"]["model"] for g in groups["sessionGroups"]) == ["gru", "lstm"]
    experiment = get(base + "/data/plugin/hparams/experiment", data=json.dumps({"experimentName": ""}).encode())
    names = {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"model", "trainer.lr", "seed"} <= names and "test/ppl" in metrics
