"""Train every IMDB classifier on the real data, one real ``pbexp-train`` run after another, and print
a markdown table of what each run measured (read from its run dir's results, pbexp.rundir.RunDir), plus the
exact command of each run.

    .venv/bin/python benches/imdb_models.py                              # cnn, gru_clf, cnn_rnn, fasttext, defaults
    .venv/bin/python benches/imdb_models.py --models gru_clf --override trainer.epochs=2
    .venv/bin/python benches/imdb_models.py --override gru_clf:trainer.epochs=2 --report-settings
    .venv/bin/python benches/imdb_models.py --models report_gru --override dataset.max_len=400 --out outputs/x

--models         comma-separated model names (default: the working ones: cnn,gru_clf,cnn_rnn,fasttext;
                 model=gru is the GRU language model, not a classifier)
--report-settings  also run the report's literal models (report_cnn, report_gru, report_cnn_rnn)
                 A report model (added so or named in --models) always gets the report's input length,
                 dataset.max_len=30 (report_cnn, report_gru) or 50 (report_cnn_rnn), unless --override sets it
--override K=V   extra Hydra override for every run (repeatable); MODEL:K=V applies to that model only.
                 Per key the last wins: report setting < global --override < MODEL: --override
--out DIR        output root (default outputs/bench_imdb); each run goes to DIR/<model>
--reuse          a run dir that already holds a completed run's results is read, not rerun (marked
                 "reused"); an unfinished one is resumed by pbexp-train. Without --reuse or --fresh an
                 existing run dir is an error, so numbers are never mixed up silently
--fresh          delete an existing DIR/<model> before its run
--dry-run        print the commands only
--threads N      run each training with OMP_NUM_THREADS=N and MKL_NUM_THREADS=N (default: torch's own
                 choice, one thread per core). On a box shared with other jobs, 1 avoids the OpenMP
                 oversubscription stalls seen with 2 threads (a GRU step went from ~3 s to 35-80 s)
--target ACC     flag the working (non-report) models whose test accuracy is below ACC (default 0.85)

Runs are sequential (one training at a time: the 2-core box is shared). SIGTERM/Ctrl-C is passed on to
the running training, which saves a checkpoint; rerun with --reuse to go on from there. The data comes from
$PBEXP_DATA_MIRROR, set to ../shared/data next to the repo when unset and that folder exists.

Columns: ``wall s`` is the results' ``wall_s`` (training epochs + per-epoch validation + the final
test pass and checkpoint writes, without process start and data loading);
``proc s`` is the whole subprocess as timed here;
``s/epoch`` and ``examples/s`` are the last epoch's training-loop figures (``perf/*``); valid acc is the
best epoch's (its weights are the ones tested); precision/recall/F1 are macro averages over the classes.
Wall times depend on what else runs on the box: the load average before each run is printed too.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pbexp.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
WORKING = ["cnn", "gru_clf", "cnn_rnn", "fasttext"]
# The report's literal models with the input length the report used for each (report.txt, Problem 5.3/5.4).
REPORT = {
    "report_cnn": ["dataset.max_len=30"],
    "report_gru": ["dataset.max_len=30"],
    "report_cnn_rnn": ["dataset.max_len=50"],
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default=",".join(WORKING), help="comma-separated model names")
    p.add_argument(
        "--report-settings",
        action="store_true",
        help="also run report_cnn, report_gru and report_cnn_rnn (at max_len 30, 30, 50)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="[MODEL:]KEY=VALUE",
        help="extra override, repeatable; MODEL: limits it to one model",
    )
    p.add_argument("--out", default="outputs/bench_imdb", help="output root (default outputs/bench_imdb)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reuse", action="store_true", help="read completed runs instead of rerunning them")
    g.add_argument("--fresh", action="store_true", help="delete an existing run dir before its run")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS/MKL_NUM_THREADS for the runs")
    p.add_argument("--target", type=float, default=0.85, help="test accuracy the working models should reach")
    return p.parse_args(argv)


def split_overrides(raw: list[str], models: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Global overrides and per-model ones (``model:key=value``)."""
    common, scoped = [], {m: [] for m in models}
    for o in raw:
        if "=" not in o:
            sys.exit(f"imdb_models: --override {o!r}: expected KEY=VALUE or MODEL:KEY=VALUE")
        key = o.split("=", 1)[0]
        if ":" in key:
            model, rest = o.split(":", 1)
            if model not in scoped:
                sys.exit(f"imdb_models: --override {o!r}: model {model!r} is not among the runs {models}")
            scoped[model].append(rest)
        else:
            common.append(o)
    return common, scoped


def merge(overrides: list[str]) -> list[str]:
    """One override per key, the last one given winning, in first-seen key order."""
    out: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0]
        out.pop(key, None)
        out[key] = o
    return list(out.values())


def plan(args: argparse.Namespace) -> list[dict]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.report_settings:
        models += [m for m in REPORT if m not in models]
    if not models:
        sys.exit("imdb_models: no models to run")
    if len(set(models)) != len(models):
        sys.exit(f"imdb_models: a model is listed twice: {models}")
    common, scoped = split_overrides(args.override, models)
    out = Path(args.out).resolve()  # the runs' cwd is the repo root; the dirs are read from here
    exe = Path(sys.executable).with_name("pbexp-train")
    runs = []
    for m in models:
        run_dir = out / m
        shown_dir = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir
        ovr = merge([*REPORT.get(m, []), *common, *scoped[m]])  # later wins; Hydra refuses a key given twice
        cmd = [
            str(exe) if exe.exists() else "pbexp-train",
            "dataset=imdb",
            f"model={m}",
            *ovr,
            f"hydra.run.dir={shown_dir}",
        ]
        runs.append({"model": m, "dir": run_dir, "cmd": cmd, "report": m in REPORT})
    return runs


def data_env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        if threads < 1:
            sys.exit(f"imdb_models: --threads {threads}: expected an integer >= 1")
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if not env.get("PBEXP_DATA_MIRROR"):
        shared = REPO.parent / "shared" / "data"
        if shared.is_dir():
            env["PBEXP_DATA_MIRROR"] = str(shared)
    return env


def show_cmd(run: dict, env: dict) -> str:
    cmd = [
        Path(run["cmd"][0]).relative_to(REPO).as_posix() if Path(run["cmd"][0]).is_relative_to(REPO) else run["cmd"][0],
        *run["cmd"][1:],
    ]
    pre = "".join(
        f"{k}={shlex.quote(env[k])} " for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PBEXP_DATA_MIRROR") if env.get(k)
    )
    return pre + shlex.join(cmd)


def run_child(cmd: list[str], env: dict) -> int:
    """Run one training; SIGTERM/SIGINT to this script are passed on to it (pbexp-train then saves a
    checkpoint and exits, so ``--reuse`` resumes it later), and this script stops after it."""
    child = subprocess.Popen(cmd, cwd=REPO, env=env)
    stopped = []

    def forward(signum, frame):
        stopped.append(signum)
        child.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if stopped:
        sys.exit(f"imdb_models: stopped by {signal.Signals(stopped[0]).name}; rerun with --reuse to resume")
    return rc


def execute(run: dict, args: argparse.Namespace, env: dict) -> None:
    d = run["dir"]
    done = RunDir(d).read_results()
    if d.exists() and any(d.iterdir()):
        if args.fresh:
            shutil.rmtree(d)
        elif args.reuse and done and done.get("status") == "completed":
            run.update(results=done, reused=True, rc=0, proc_s=None)
            print(f"[imdb_models] {run['model']}: reusing the completed run in {d}", flush=True)
            return
        elif args.reuse:
            run["resumed"] = True  # pbexp-train continues from the last checkpoint: its wall_s covers the rest only
            print(f"[imdb_models] {run['model']}: resuming the unfinished run in {d}", flush=True)
        else:
            sys.exit(
                f"imdb_models: {d} already exists; pass --reuse (read/resume it) or --fresh (delete it), "
                f"or choose another --out"
            )
    load = os.getloadavg()[0]
    print(f"[imdb_models] {run['model']}: load average {load:.1f}; {show_cmd(run, env)}", flush=True)
    t = time.perf_counter()
    rc = run_child(run["cmd"], env)
    run.update(
        rc=rc,
        proc_s=time.perf_counter() - t,
        load=load,
        reused=False,
        results=RunDir(d).read_results() or {"status": f"no {RunDir(d).results.name} (exit {rc})"},
    )
    print(f"[imdb_models] {run['model']}: exit {rc} after {run['proc_s']:.0f} s", flush=True)


def curve(run_dir: Path) -> str:
    """valid acc per epoch, from the run's epoch records: '0.62 0.81 0.85'."""
    return " ".join(f"{r['valid/acc']:.3f}" for r in RunDir(run_dir).read_metrics() if "valid/acc" in r)


def losses(run_dir: Path) -> str:
    """train loss / valid loss per epoch, from the run's epoch records: '0.69/0.61 0.52/0.48'."""
    return " ".join(
        f"{r.get('train/loss', float('nan')):.3f}/{r.get('valid/loss', float('nan')):.3f}"
        for r in RunDir(run_dir).read_metrics()
    )


def fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def table(runs: list[dict], env: dict, target: float) -> str:
    head = [
        "model",
        "params",
        "epochs",
        "wall s",
        "proc s",
        "s/epoch",
        "examples/s",
        "valid acc",
        "test acc",
        "precision",
        "recall",
        "F1",
        "status",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for r in runs:
        res = r["results"]
        status = (
            res.get("status", "?")
            + (" (reused)" if r.get("reused") else "")
            + (" (resumed: wall s and s/epoch cover the resumed part only)" if r.get("resumed") else "")
        )
        if not r["report"] and isinstance(res.get("test/acc"), float) and res["test/acc"] < target:
            status += f", below {target:.0%}"
        rows.append(
            "| "
            + " | ".join(
                [
                    r["model"],
                    fmt(res.get("params"), ","),
                    fmt(res.get("epochs"), "d"),
                    fmt(res.get("wall_s"), ".0f"),
                    fmt(r.get("proc_s"), ".0f"),
                    fmt(res.get("perf/epoch_s"), ".1f"),
                    fmt(res.get("perf/examples_per_s"), ".0f"),
                    fmt(res.get("valid/acc"), ".4f"),
                    fmt(res.get("test/acc"), ".4f"),
                    fmt(res.get("test/precision"), ".4f"),
                    fmt(res.get("test/recall"), ".4f"),
                    fmt(res.get("test/f1"), ".4f"),
                    status,
                ]
            )
            + " |"
        )
    out = [
        "\n".join(rows),
        "",
        "Learning curves (epoch records): valid acc per epoch; train loss / valid loss per epoch",
        "",
    ]
    for r in runs:
        out.append(f"- {r['model']}: valid acc {curve(r['dir']) or '-'}; loss {losses(r['dir']) or '-'}")
    out += ["", "Commands (run from the repo root, one after another):", ""]
    for r in runs:
        if r.get("reused"):  # ran in an earlier invocation: its environment (threads) is not known here
            ovr = r["results"].get("overrides") or r["cmd"][1:]
            mirror = env.get("PBEXP_DATA_MIRROR")
            cmd = (f"PBEXP_DATA_MIRROR={shlex.quote(mirror)} " if mirror else "") + shlex.join(
                [".venv/bin/pbexp-train", *ovr, f"hydra.run.dir={r['cmd'][-1].split('=', 1)[1]}"]
            )
            out.append(f"    {cmd}  # reused from an earlier invocation (its thread settings are not recorded)")
            continue
        note = f"  # load average {r['load']:.1f} at start" if r.get("load") is not None else ""
        if r.get("resumed"):
            note += "; resumed an unfinished run (the earlier epochs ran in an earlier invocation)"
        out.append(f"    {show_cmd(r, env)}{note}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = data_env(args.threads)
    runs = plan(args)
    if args.dry_run:
        for r in runs:
            print(show_cmd(r, env))
        return 0
    start = time.perf_counter()
    for r in runs:
        execute(r, args, env)
    total = time.perf_counter() - start
    print()
    print(
        f"## IMDB classifiers ({os.cpu_count()} cores, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}; "
        f"total {total / 60:.1f} min)"
    )
    print()
    print(table(runs, env, args.target))
    failed = [r["model"] for r in runs if r["results"].get("status") != "completed"]
    if failed:
        print(f"\nnot completed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
