"""pbexp-report: finished runs and sweeps -> the report's tables (markdown, CSV or JSON), learning curves.

    pbexp-report <sweep or run dir> [more dirs ...] [--table auto|rnn_types|embedding_size|hidden_units|
                 pretrained|layers|imdb_models|generic] [--format markdown|csv|json] [--with-report] [--ci]
                 [--plot out.png] [--output FILE]
    pbexp-report --compare RUN_A RUN_B [--resamples N] [--format json] [--output FILE]

A directory holding a results file or ``.hydra/`` is one run (:meth:`pbexp.rundir.RunDir.is_run`); any other
directory contributes its immediate subfolders that are runs (a sweep's jobs ``0/``, ``1/``, ..., sorted by
number). Every run is in a row: a job that failed, diverged or died without its results shows as ``failed``
with its error, never silently missing. Runs that differ only in ``seed`` are one row, each number the mean ±
sample std over their completed runs with n (``--ci``: and the 95 % t interval). ``--table auto`` picks a report
table only for runs of its dataset and models (else the generic table, every metric). ``--with-report`` adds the
report's published numbers (``published.yaml``, in this package) in a "<column> (report)" column beside each of
ours. ``--compare``: the paired difference of two runs' test metric (:mod:`.compare`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pbexp.errors import PbexpError
from pbexp.report.compare import RESAMPLES, as_text, compare
from pbexp.report.plot import plot_curves
from pbexp.report.published import add_published, load_published, reference_lines
from pbexp.report.render import FORMATS, format_table, title_of
from pbexp.report.runs import ReportError, Run, collect_runs
from pbexp.report.tables import TABLES, build_table, detect_table

MIN_RESAMPLES = 100


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a one-line error instead of usage + message."""

    def error(self, message):
        raise ReportError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="pbexp-report", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="*", type=Path, help="sweep dirs (multirun) or run dirs")
    p.add_argument("--table", default="auto", help=f"auto (default) or one of: {', '.join(TABLES)}")
    p.add_argument("--format", default="markdown", help="markdown (default), csv or json")
    p.add_argument("--with-report", action="store_true", help="put the report's published numbers beside ours")
    p.add_argument("--ci", action="store_true", help="over seeds, also the 95%% t interval of the mean")
    p.add_argument("--plot", type=Path, help="write learning curves to this PNG")
    p.add_argument("--output", type=Path, help="write the table to this file instead of stdout")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"), help="two runs' test metric")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help=f"--compare's bootstrap ({RESAMPLES:,})")
    args = p.parse_args(argv)
    if args.table not in ("auto", *TABLES):
        raise ReportError(f"unknown table {args.table!r}: choose auto or one of {', '.join(TABLES)}")
    if args.format not in FORMATS:
        raise ReportError(f"unknown format {args.format!r}: choose markdown, csv or json")
    if args.compare:
        if args.dirs or args.table != "auto" or args.with_report or args.ci or args.plot:
            raise ReportError("--compare RUN_A RUN_B takes no other dirs, --table, --with-report, --ci or --plot")
        if args.format == "csv":
            raise ReportError("--compare prints text (--format markdown, the default) or json, not csv")
        if args.resamples < MIN_RESAMPLES:
            raise ReportError(f"--resamples={args.resamples} is not allowed: a whole number >= {MIN_RESAMPLES}")
    elif not args.dirs:
        raise ReportError("sweep or run dirs are required (or --compare RUN_A RUN_B)")
    return args


def render(args: argparse.Namespace, runs: list[Run]) -> str:
    name = detect_table(args.dirs, runs) if args.table == "auto" else args.table
    table = build_table(name, runs)
    notes, references = [], []
    if args.with_report:
        published = load_published()
        notes = add_published(table, published)
        references = reference_lines(published, table)
    return format_table(table, args.format, title_of(table, runs, args.dirs), notes, references, args.ci)


def render_comparison(args: argparse.Namespace) -> str:
    result = compare(*args.compare, resamples=args.resamples)
    return json.dumps(result, indent=2) + "\n" if args.format == "json" else as_text(result)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.compare:
            text = render_comparison(args)
        else:
            runs = collect_runs(args.dirs)
            text = render(args, runs)
            if args.plot:
                plot_curves(runs, args.plot)
                print(f"pbexp-report: wrote {args.plot}", file=sys.stderr)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text, encoding="utf-8")
            print(f"pbexp-report: wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    except (PbexpError, OSError) as e:  # OSError: an output file or folder that cannot be written
        print(f"pbexp-report: error: {e}", file=sys.stderr)
        return 2
