"""The GPU acceptance run: every check below on one GPU in at most 10 minutes, one summary table at the end,
exit status 1 when any check failed (2 when there is no CUDA device, before anything runs).

    scripts/gpu_check.sh                # on a machine with an NVIDIA GPU (after `make install`)
    scripts/gpu_check.sh --dry-run      # the same checks on the CPU with tiny budgets (PBEXP_GPU_CHECK_DRY=1 too);
                                        # the CUDA-only ones become 'skipped: no GPU' rows

Checks, in order (each row: check | result | figures | seconds):
  device        the GPU(s), torch, CUDA, cuDNN
  cuda tests    pytest -m cuda: every one must pass (a skip on a GPU machine is a failure)
  resume        an LSTM LM run SIGKILLed mid-epoch 2 (faults.py's PBEXP_KILL_AT), rerun with the same command:
                the same final metrics and epoch records as an uninterrupted run, bit for bit
  determinism   a second uninterrupted run of the same command: bit-identical metrics
  rnn_types     one epoch of experiment=rnn_types preset=full model=lstm (2x250, bptt 40): tokens/s, valid ppl
  amp bf16      trainer.amp=bf16 against fp32 on the same steps (Zaremba-medium-sized LSTM): speed, loss
  trainer/plain benches/lm_throughput.py: the trainer's tokens/s against the hand-written loop
  imdb cnn      dataset=imdb model=cnn, one epoch: accuracy, examples/s (builds the IMDB cache first time)
  self-trained  dataset=imdb model=sklearn_linear: accuracy
  ddp           torchrun --nproc_per_node=2 (NCCL) when there are two GPUs: step-by-step losses against one process
  compile lstm  trainer.compile=true on the LSTM: a one-line refusal is the expected outcome; if it trains
                instead, its speed and loss against fp32 on the same steps
  compile cnn   trainer.compile=true on the IMDB CNN against eager fp32 on the same steps: speed, loss

Every run gets a fresh run dir under one folder made per invocation (outputs/gpu_check/<timestamp>/, or --out),
so a rerun never skips or resumes an old run; each run's output is in <name>.log beside its run dir, and the
table is also written to summary.md and summary.json there. Data: $PBEXP_DATA_MIRROR (the wrapper sets it to
../shared/data when unset and that exists), never downloaded (dataset.download=false).

Speeds are the median of the trainer's per-interval figures (TensorBoard perf/*_per_s) after the first
log_every steps, so cuDNN autotuning and compilation stay out of them; a run's whole-epoch figure is in
its record. The one speed that fails the check is the trainer against the hand-written loop (--min-ratio).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# Final-record keys a resumed (or repeated) run must reproduce exactly (tests/test_resume.py's list).
LM_METRICS = ("train/loss", "train/ppl", "valid/loss", "valid/ppl", "test/loss", "test/ppl", "steps", "epochs")
EXIT_USER_ERROR = 2  # pbexp.cli's exit status for a refused setting


class Failed(Exception):
    """The check failed: the message is its table cell."""


class Skipped(Exception):
    """The check does not apply here: Skipped(why, figures) (the result is 'skipped: <why>')."""


# ----------------------------------------------------------------------------------------------- the two modes

TINY_LM = [
    "model.emb_size=16",
    "model.hidden_size=16",
    "model.num_layers=1",
]
TINY_CNN = ["dataset.max_len=64", "model.emb_size=16", "model.filters=8"]
NO_CKPT = ["trainer.epochs=1", "trainer.checkpoint_every=0"]


# Each check's limit on the GPU, in seconds (all of them together stay within the 590-s budget in practice:
# the sum is the worst case, the estimate in the report is about 400 s).
GPU_TIMEOUTS = {
    "pytest": 150,
    "lm": 90,  # each of the resume and determinism runs
    "rnn_types": 180,
    "speed": 90,  # each of fp32 and bf16
    "bench": 150,
    "imdb": 240,  # the first IMDB run builds the tokenised cache
    "self_trained": 180,
    "ddp": 150,
    "compile_lstm": 180,
    "compile_cnn": 180,  # each of eager and compiled
}


def plan(dry: bool) -> dict:
    """What each check runs: the GPU's budgets, or tiny ones for the CPU dry run. Timeouts are seconds."""
    if not dry:
        return {
            "budget": 590,
            # 2x200 LSTM (model=lstm), dropout 0.2; 2 epochs of 150 batches, a checkpoint every 50 steps
            "lm": [
                "trainer.epochs=2",
                "trainer.limit_batches=150",
                "trainer.checkpoint_every=50",
                "trainer.log_every=50",
            ],
            "kill_at": 230,
            "resume_from": 200,
            "rnn_types": [],
            "rnn_types_max_ppl": 300.0,
            # Zaremba-medium-sized LSTM: where bf16 and compile have something to speed up
            "speed_lm": ["model.emb_size=650", "model.hidden_size=650", "model.dropout=0.5", *NO_CKPT]
            + ["trainer.max_steps=400", "trainer.log_every=50"],
            "bench": ["--case", "medium", "--steps", "100", "--repeats", "3"],
            "min_ratio": 0.9,
            "imdb": ["dataset=imdb", "model=cnn", "trainer.epochs=1"],
            "imdb_min_acc": 0.80,
            "self_trained": ["dataset=imdb", "model=sklearn_linear"],
            "self_trained_min_acc": 0.85,
            "cnn_steps": ["dataset=imdb", "model=cnn", *NO_CKPT, "trainer.max_steps=200", "trainer.log_every=25"],
            "timeouts": GPU_TIMEOUTS,
        }
    return {
        # On a shared CPU a check's wall time is mostly waiting for a core (a 10-s run took 4 min here under load):
        # the dry run's limits only catch a hang.
        "budget": 3600,
        "lm": [*TINY_LM, "model.dropout=0.3", "trainer.epochs=2", "trainer.limit_batches=20"]
        + ["trainer.checkpoint_every=7", "trainer.log_every=10"],
        "kill_at": 31,
        "resume_from": 28,
        "rnn_types": ["trainer.limit_batches=20", "trainer.log_every=10"],
        "rnn_types_max_ppl": None,
        "speed_lm": [*TINY_LM, *NO_CKPT, "trainer.max_steps=30", "trainer.log_every=10"],
        "bench": ["--case", "small", "--steps", "5", "--repeats", "2"],
        "min_ratio": None,
        "imdb": ["dataset=imdb", "model=cnn", *TINY_CNN, "trainer.epochs=1", "trainer.limit_batches=20"]
        + ["trainer.log_every=10"],
        "imdb_min_acc": None,
        "self_trained": ["dataset=imdb", "model=sklearn_linear", "dataset.max_len=64"],
        "self_trained_min_acc": None,
        "cnn_steps": ["dataset=imdb", "model=cnn", *TINY_CNN, *NO_CKPT, "trainer.max_steps=30", "trainer.log_every=10"],
        "timeouts": dict.fromkeys(GPU_TIMEOUTS, 900),
    }


# The table's rows in order: (check, Checker method).
CHECKS = [
    ("device", "device"),
    ("cuda tests", "cuda_tests"),
    ("resume (SIGKILL + rerun)", "resume"),
    ("determinism", "determinism"),
    ("rnn_types LSTM, 1 full epoch", "rnn_types"),
    ("amp bf16 vs fp32", "amp"),
    ("trainer vs hand loop", "bench"),
    ("imdb cnn", "imdb"),
    ("self-trained model", "self_trained"),
    ("ddp, 2 processes", "ddp"),
    ("compile lstm", "compile_lstm"),
    ("compile cnn vs eager", "compile_cnn"),
]

# ----------------------------------------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def fmt(x, digits=4) -> str:
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}g}"
    return str(x)


def pbexp_error(log: str) -> str:
    """The one line pbexp-train ends a failed run with, else the log's last line."""
    lines = [l.strip() for l in log.splitlines() if l.strip()]
    for line in reversed(lines):
        if line.startswith("pbexp-train: error:"):
            return line[len("pbexp-train: error:") :].strip()
    return lines[-1] if lines else "(no output)"


class Run:
    """One finished (or killed) subprocess and, for a training run, its run dir."""

    def __init__(self, name: str, rc: int | None, seconds: float, log_path: Path, run_dir: Path | None):
        from pbexp.rundir import RunDir

        self.name, self.rc, self.seconds, self.log_path = name, rc, seconds, log_path
        self.run = RunDir(run_dir) if run_dir else None

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def results(self) -> dict:
        return (self.run.read_results() if self.run else None) or {}

    def ok(self) -> dict:
        """The results of a run that completed, else Failed with its error line."""
        if self.rc is None:
            raise Failed(f"{self.name}: timed out after {self.seconds:.0f} s (log: {self.log_path})")
        res = self.results
        if self.rc != 0 or res.get("status") != "completed":
            raise Failed(f"{self.name}: exit {self.rc}, {pbexp_error(self.log)} (log: {self.log_path})")
        return res

    def points(self, tag: str) -> list[tuple[int, float]]:
        """A TensorBoard scalar of the run as (step, value) in step order; [] when it was not logged."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(self.run.tb), size_guidance={"scalars": 0})
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []

    def speed(self, unit: str, after_step: int) -> float | None:
        """Median of the trainer's logged per-interval speed (perf/<unit>_per_s) past ``after_step``."""
        points = self.points(f"perf/{unit}_per_s")
        steady = [v for s, v in points if s > after_step] or [v for _, v in points[1:]] or [v for _, v in points]
        return statistics.median(steady) if steady else None


def log_every(overrides) -> int:
    return next((int(o.split("=")[1]) for o in reversed(overrides) if o.startswith("trainer.log_every=")), 200)


# ----------------------------------------------------------------------------------------------- the runner


class Checker:
    def __init__(self, args):
        self.args, self.dry = args, args.dry_run
        self.p = plan(self.dry)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + (args.budget or self.p["budget"])
        self.rows: list[tuple[str, str, str, float]] = []
        self.failed = False
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S") + ("_dry" if self.dry else "")
        out = Path(args.out) if args.out else REPO / "outputs" / "gpu_check" / stamp
        n = 1
        while out.exists():  # never reuse a folder: a rerun must not skip or resume an old run
            n += 1
            out = out.with_name(f"{out.name.split('.')[0]}.{n}")
        out.mkdir(parents=True)
        self.out = out
        # No fault injection from the caller's shell; unbuffered output, so a killed run's log is complete.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PBEXP_KILL_", "PBEXP_DISK_FULL"))}
        self.env["PYTHONUNBUFFERED"] = "1"
        if self.dry:
            self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            self.common = ["trainer.device=cpu", "trainer.num_threads=1"]
        else:
            self.common = ["trainer.device=cuda"]
        self.common.append("dataset.download=false")
        self.ref: Run | None = None  # the uninterrupted LM run (resume and determinism compare with it)
        self.speed_fp32: tuple[dict, float | None] | None = None  # the fp32 LM on the speed steps

    # -- time
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, key: str) -> float:
        left = self.left()
        if left < 10:
            raise Failed(f"not run: the {self.args.budget or self.p['budget']} s budget is spent")
        return min(self.p["timeouts"][key], left)

    # -- processes
    def launch(self, name: str, cmd: list[str], timeout: float, env=None, watch=None, run_dir=None) -> Run:
        """Run ``cmd`` in its own process group, output to <out>/<name>.log. On timeout SIGTERM, then SIGKILL
        10 s later (a training run stops only after its current step). ``watch(log_text)`` returning True
        ends it early (rc None is a timeout; a watched stop gives rc 'watched')."""
        log_path = self.out / f"{name}.log"
        t0 = time.monotonic()
        rc: int | str | None = None
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if watch is not None and watch(log_path.read_text(encoding="utf-8", errors="replace")):
                        self._stop(proc)
                        rc = "watched"
                        break
                    if time.monotonic() - t0 > timeout:
                        self._stop(proc)
                        rc = None
                        break
            except BaseException:
                self._stop(proc)
                raise
        return Run(name, rc, time.monotonic() - t0, log_path, run_dir)

    @staticmethod
    def _stop(proc):
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def train(
        self, name: str, overrides: list[str], key: str, env=None, watch=None, torchrun=False, run_dir=None
    ) -> Run:
        """A pbexp-train run (``torchrun``: two processes) in ``run_dir`` (default: a fresh <out>/<name>)."""
        run_dir = run_dir or self.out / name
        full = [*overrides, *self.common, f"hydra.run.dir={run_dir}"]
        if torchrun:
            launcher = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
            cmd = [*launcher, "--master_port", str(free_port()), "-m", "pbexp.train", *full]
        else:
            cmd = [PY, "-m", "pbexp.train", *full]
        print(f"   {name}: {' '.join(overrides)}", flush=True)
        return self.launch(name, cmd, self.timeout(key), env=env, watch=watch, run_dir=run_dir)

    # -- rows
    def check(self, name: str, fn) -> None:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            got = fn()
            result, figures = got if isinstance(got, tuple) else ("ok", got)
        except Skipped as e:
            result, figures = f"skipped: {e.args[0]}", (e.args[1] if len(e.args) > 1 else "")
        except Failed as e:
            result, figures = "FAIL", str(e)
        except KeyboardInterrupt:
            self.rows.append((name, "FAIL", "interrupted", time.monotonic() - t0))
            raise
        except Exception as e:  # a bug here, or in what the check read: the check failed, the run goes on
            traceback.print_exc()
            result, figures = "FAIL", f"{type(e).__name__}: {e}"
        seconds = time.monotonic() - t0
        self.failed |= result == "FAIL"
        self.rows.append((name, result, figures, seconds))
        print(f"   -> {result}: {figures} ({seconds:.0f} s)", flush=True)

    def table(self) -> str:
        head = ("check", "result", "figures", "seconds")
        rows = [head, *[(c, r, f, f"{s:.0f}") for c, r, f, s in self.rows]]
        w = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"| {c:<{w[0]}} | {r:<{w[1]}} | {f:<{w[2]}} | {s:>7} |" for c, r, f, s in rows]
        lines.insert(1, f"|-{'-' * w[0]}-|-{'-' * w[1]}-|-{'-' * w[2]}-|-{'-' * 7}:|")
        total = time.monotonic() - self.t0
        verdict = "FAILED" if self.failed else "passed"
        mode = "dry run on the CPU" if self.dry else "GPU"
        return "\n".join([*lines, f"gpu_check ({mode}) {verdict} in {total:.0f} s; runs and logs in {self.out}"])

    def finish(self) -> int:
        text = self.table()
        print("\n" + text, flush=True)
        (self.out / "summary.md").write_text(text + "\n", encoding="utf-8")
        rows = [dict(zip(("check", "result", "figures", "seconds"), r)) for r in self.rows]
        summary = {"dry_run": self.dry, "failed": self.failed, "rows": rows}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return 1 if self.failed else 0

    # ------------------------------------------------------------------------------------------- the checks

    def device(self) -> str:
        import torch

        mirror = os.environ.get("PBEXP_DATA_MIRROR") or "(unset: data/ only)"
        if self.dry:
            return f"CPU dry run: torch {torch.__version__}, {os.cpu_count()} cores; data {mirror}"
        n = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        return (
            f"{n} x {props.name} ({props.total_memory / 2**30:.0f} GiB); torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; data {mirror}"
        )

    def cuda_tests(self) -> str:
        import xml.etree.ElementTree as ET

        xml = self.out / "cuda_tests.xml"
        cmd = [PY, "-m", "pytest", "-m", "cuda", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}", "tests"]
        run = self.launch("cuda_tests", cmd, self.timeout("pytest"))
        if run.rc is None:
            raise Failed(f"pytest -m cuda timed out after {run.seconds:.0f} s (log: {run.log_path})")
        try:
            suite = ET.parse(xml).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            total, skipped = int(suite.get("tests")), int(suite.get("skipped"))
            bad = int(suite.get("failures")) + int(suite.get("errors"))
        except (OSError, ET.ParseError, AttributeError, TypeError) as e:
            raise Failed(f"pytest -m cuda exit {run.rc}, no readable report ({e}; log: {run.log_path})") from None
        ran = total - skipped - bad
        if run.rc != 0 or bad:
            raise Failed(f"pytest -m cuda exit {run.rc}: {bad} of {total} failed or errored (log: {run.log_path})")
        if not total:
            raise Failed("pytest -m cuda collected no test")
        if self.dry:  # some cuda-marked tests check what CPU-only code does about a GPU: they run here
            raise Skipped("no GPU", f"{skipped} of {total} cuda tests skip on the CPU, {ran} ran and passed")
        if skipped:
            raise Failed(f"on a GPU every cuda test must run: {skipped} of {total} skipped (log: {run.log_path})")
        return f"{ran} passed"

    def resume(self) -> str:
        from pbexp.training import checkpoint as ckpt

        lm, k, want = self.p["lm"], self.p["kill_at"], self.p["resume_from"]
        self.ref = ref = self.train("lm_uninterrupted", lm, "lm")
        a = ref.ok()
        killed = self.train("lm_killed", lm, "lm", env={**self.env, "PBEXP_KILL_AT": f"step:{k}"})
        if killed.rc != -signal.SIGKILL:
            raise Failed(f"the run meant to be SIGKILLed at step {k} ended with {killed.rc}: {pbexp_error(killed.log)}")
        if killed.run.results.exists():
            raise Failed("the killed run wrote its results")
        state = ckpt.load_latest(killed.run.last)
        got = None if state is None else state["step"]
        if got != want:
            raise Failed(f"killed at step {k}: the resume checkpoint is at step {got}, expected {want}")
        # The same command again, in the same run dir: it must continue from the checkpoint.
        resumed = self.train("lm_resumed", lm, "lm", run_dir=killed.run.path)
        b = resumed.ok()
        if f"step {want}" not in resumed.log or "resuming from" not in resumed.log:
            raise Failed(f"the rerun did not say it resumed from step {want} (log: {resumed.log_path})")
        diff = [f"{m} {a.get(m)} vs {b.get(m)}" for m in LM_METRICS if a.get(m) != b.get(m)]
        records = [
            [{k2: v for k2, v in r.items() if not k2.startswith("perf/")} for r in run.run.read_metrics()]
            for run in (ref, resumed)
        ]
        if records[0] != records[1]:
            diff.append("epoch records differ")
        if diff:
            raise Failed(f"killed at step {k}, resumed from {want}, but: {'; '.join(diff)}")
        return (
            f"SIGKILL at step {k}, rerun resumed from step {want}: {len(LM_METRICS)} final metrics and "
            f"{len(records[0])} epoch records identical (valid ppl {a['valid/ppl']:.2f}, test ppl {a['test/ppl']:.2f})"
        )

    def determinism(self) -> str:
        if self.ref is None or self.ref.rc != 0:
            raise Failed("no uninterrupted reference run (see resume)")
        a = self.ref.ok()
        b = self.train("lm_again", self.p["lm"], "lm").ok()
        diff = [f"{m} {a.get(m)!r} vs {b.get(m)!r}" for m in LM_METRICS if a.get(m) != b.get(m)]
        if diff:
            raise Failed(f"two runs of the same command differ: {'; '.join(diff)}")
        return f"two fresh runs, same seed: bit-identical (valid ppl {a['valid/ppl']!r})"

    def rnn_types(self) -> str:
        over = ["experiment=rnn_types", "preset=full", "model=lstm", "trainer.epochs=1", *self.p["rnn_types"]]
        run = self.train("rnn_types_lstm_full", over, "rnn_types")
        res = run.ok()
        steady = run.speed("tokens", log_every(over))
        ppl, limit = res["valid/ppl"], self.p["rnn_types_max_ppl"]
        figures = (
            f"{res['steps']} steps, {fmt(res['perf/tokens_per_s'])} tokens/s over the epoch "
            f"(steady {fmt(steady)}), epoch {res['perf/epoch_s']:.1f} s; valid ppl {ppl:.1f}, "
            f"test ppl {res['test/ppl']:.1f}"
        )
        if not math.isfinite(ppl) or (limit and ppl > limit):
            raise Failed(f"{figures}: valid ppl above {limit}")
        return figures

    def lm_fp32(self) -> tuple[dict, float | None]:
        if self.speed_fp32 is None:
            run = self.train("speed_lm_fp32", self.p["speed_lm"], "speed")
            self.speed_fp32 = (run.ok(), run.speed("tokens", log_every(self.p["speed_lm"])))
        return self.speed_fp32

    def amp(self) -> str:
        base, v0 = self.lm_fp32()
        run = self.train("speed_lm_bf16", [*self.p["speed_lm"], "trainer.amp=bf16"], "speed")
        res, v1 = run.ok(), run.speed("tokens", log_every(self.p["speed_lm"]))
        fell_back = "training in fp32 instead" in run.log
        d = rel_diff(res["train/loss"], base["train/loss"])
        figures = (
            f"{res['steps']} steps: fp32 {fmt(v0)}, bf16 {fmt(v1)} tokens/s ({v1 / v0:.2f}x); train loss "
            f"{base['train/loss']:.4f} vs {res['train/loss']:.4f} ({d:.2%})"
            + ("; bf16 fell back to fp32 (no native bf16 on this CPU)" if fell_back else "")
        )
        if not math.isfinite(res["train/loss"]) or d > 0.05:
            raise Failed(f"{figures}: bf16 loss more than 5% from fp32")
        if not self.dry and fell_back:
            raise Failed(f"{figures}: on the GPU bf16 must not fall back")
        return figures

    def bench(self) -> str:
        device = "cpu" if self.dry else "cuda"
        cmd = [PY, "benches/lm_throughput.py", *self.p["bench"], "--device", device]
        run = self.launch("bench_lm_throughput", cmd, self.timeout("bench"))
        m = re.search(r"median: plain (\d+), pbexp (\d+) (\S+), ratio ([\d.]+)", run.log)
        if run.rc != 0 or not m:
            why = "timed out" if run.rc is None else f"exit {run.rc}"
            raise Failed(f"benches/lm_throughput.py {why}: {pbexp_error(run.log)} (log: {run.log_path})")
        plain, ours, unit, ratio = int(m[1]), int(m[2]), m[3], float(m[4])
        case = self.p["bench"][1]
        figures = f"{case} LM: trainer {fmt(float(ours))} vs hand loop {fmt(float(plain))} {unit} (ratio {ratio:.3f})"
        limit = self.args.min_ratio if self.args.min_ratio is not None else self.p["min_ratio"]
        if limit is not None and ratio < limit:
            raise Failed(f"{figures}: below {limit}")
        return figures

    def imdb(self) -> str:
        over = self.p["imdb"]
        run = self.train("imdb_cnn", over, "imdb")
        res = run.ok()
        acc, limit = res["valid/acc"], self.p["imdb_min_acc"]
        figures = (
            f"{res['steps']} steps, {fmt(res['perf/examples_per_s'])} examples/s over the epoch; valid acc "
            f"{acc:.3f}, test acc {res['test/acc']:.3f}"
        )
        if limit and acc < limit:
            raise Failed(f"{figures}: valid acc below {limit}")
        return figures

    def self_trained(self) -> str:
        over = self.p["self_trained"]
        res = self.train("imdb_" + over[1].split("=")[1], over, "self_trained").ok()
        acc, limit = res["valid/acc"], self.p["self_trained_min_acc"]
        figures = f"{over[1]}: fit {res['perf/epoch_s']:.1f} s; valid acc {acc:.3f}, test acc {res['test/acc']:.3f}"
        if limit and acc < limit:
            raise Failed(f"{figures}: valid acc below {limit}")
        return figures

    def ddp(self) -> str:
        import torch

        if not self.dry and torch.cuda.device_count() < 2:
            raise Skipped("one GPU", "a two-process NCCL run needs two GPUs")
        # No dropout (each process draws its own masks), a loss point every step: one 2-process step equals
        # one single-process step on the whole batch, so the losses agree step by step until rounding
        # differences grow (lr 20 amplifies them within tens of steps): the first 10 steps are compared.
        over = [*self.p["lm"], "model.dropout=0.0", "trainer.epochs=1", "trainer.max_steps=20", "trainer.log_every=1"]
        one = self.train("ddp_one_process", over, "ddp")
        a = one.ok()
        two = self.train("ddp_two_processes", over, "ddp", torchrun=True)
        b = two.ok()
        la, lb = ([v for _, v in run.points("train/loss")] for run in (one, two))
        if len(la) < 10 or len(lb) != len(la):
            raise Failed(f"expected a train/loss point per step: {len(la)} and {len(lb)} points")
        first = max(rel_diff(x, y) for x, y in zip(lb[:10], la[:10]))
        backend = "gloo on the CPU" if self.dry else "NCCL"
        figures = (
            f"2 processes ({backend}) vs 1, {b['steps']} steps: train loss max rel diff {first:.1e} over the "
            f"first 10 steps, {max(rel_diff(x, y) for x, y in zip(lb, la)):.1e} over all; valid ppl "
            f"{b['valid/ppl']:.2f} vs {a['valid/ppl']:.2f}"
        )
        if b["steps"] != a["steps"] or first > 1e-3:
            raise Failed(f"{figures}: expected the same steps and the first 10 losses within 1e-3")
        return figures

    def compile_lstm(self) -> str:
        over = [*self.p["speed_lm"], "trainer.compile=true"]
        # On the CPU, compiling an LSTM takes minutes: the dry run only sees whether it is refused.
        started = (lambda log: re.search(r"epoch 1: \d+ batches", log) is not None) if self.dry else None
        run = self.train("speed_lm_compile", over, "compile_lstm", watch=started)
        if run.rc == EXIT_USER_ERROR and "compile" in pbexp_error(run.log):
            return "expected: refused", "refused in one line: " + pbexp_error(run.log).split(" (")[0][:200]
        if run.rc == "watched":
            raise Skipped("no GPU", "not refused; compiling an LSTM takes minutes on a CPU (the GPU run measures it)")
        res, v1 = run.ok(), run.speed("tokens", log_every(over))
        base, v0 = self.lm_fp32()
        d = rel_diff(res["train/loss"], base["train/loss"])
        figures = (
            f"not refused: {res['steps']} steps, eager {fmt(v0)}, compiled {fmt(v1)} tokens/s ({v1 / v0:.2f}x), "
            f"epoch incl. compilation {res['perf/epoch_s']:.0f} s; train loss {base['train/loss']:.4f} vs "
            f"{res['train/loss']:.4f} ({d:.2%})"
        )
        if d > 0.05:
            raise Failed(f"{figures}: loss more than 5% from eager")
        return figures

    def compile_cnn(self) -> str:
        over = self.p["cnn_steps"]
        eager = self.train("cnn_eager", over, "compile_cnn")
        a, v0 = eager.ok(), eager.speed("examples", log_every(over))
        comp = self.train("cnn_compile", [*over, "trainer.compile=true"], "compile_cnn")
        b, v1 = comp.ok(), comp.speed("examples", log_every(over))
        d = rel_diff(b["train/loss"], a["train/loss"])
        figures = (
            f"{b['steps']} steps: eager {fmt(v0)}, compiled {fmt(v1)} examples/s ({v1 / v0:.2f}x), compiled "
            f"run's training {b['perf/epoch_s']:.0f} s incl. compilation; train loss {a['train/loss']:.4f} vs "
            f"{b['train/loss']:.4f} ({d:.2%})"
        )
        if not math.isfinite(b["train/loss"]) or d > 0.05:
            raise Failed(f"{figures}: loss more than 5% from eager")
        return figures

    def run_all(self) -> int:
        checks = [(name, getattr(self, fn)) for name, fn in CHECKS]
        only = set(self.args.only.split(",")) if self.args.only else None
        try:
            for name, fn in checks:
                if only is None or fn.__name__ in only or name == "device":
                    self.check(name, fn)
        except KeyboardInterrupt:
            self.failed = True
            print("\ninterrupted: the table so far", file=sys.stderr)
        return self.finish()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("PBEXP_GPU_CHECK_DRY", "") not in ("", "0"),
        help="run every check on the CPU with tiny budgets (also PBEXP_GPU_CHECK_DRY=1)",
    )
    ap.add_argument("--out", help="the folder for this invocation's runs (default outputs/gpu_check/<timestamp>)")
    ap.add_argument("--budget", type=float, help="seconds for all checks (default 590 on a GPU, 3600 dry)")
    ap.add_argument("--min-ratio", type=float, help="least trainer/hand-loop speed ratio (default 0.9 on a GPU)")
    ap.add_argument("--only", help="comma-separated check functions to run (e.g. resume,determinism,ddp)")
    args = ap.parse_args()
    unknown = set(args.only.split(",") if args.only else ()) - {fn for _, fn in CHECKS}
    if unknown:
        ap.error(f"--only {','.join(sorted(unknown))}: no such check")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device (torch {torch.__version__} sees none); --dry-run runs the checks on the CPU",
            file=sys.stderr,
        )
        return 2
    os.chdir(REPO)
    return Checker(args).run_all()


if __name__ == "__main__":
    sys.exit(main())
