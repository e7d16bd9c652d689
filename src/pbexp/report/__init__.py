"""pbexp-report, the report's tables and learning curves from finished runs and sweeps (see :mod:`.cli`).

:mod:`.runs` reads run directories, :mod:`.seeds` groups runs that differ only in their seed (mean ± std),
:mod:`.tables` builds and picks tables, :mod:`.published` holds the report's own numbers, :mod:`.render` writes
markdown/CSV/JSON, :mod:`.plot` draws curves, :mod:`.compare` tests two runs' difference (``--compare``),
:mod:`.cli` is the command. The names below are what the rest of the code and the tests use.
"""

from pbexp.report.cli import main
from pbexp.report.plot import distinguishing_overrides, logged_curve, plot_curves
from pbexp.report.published import load_published
from pbexp.report.runs import ReportError, Run, collect_runs, load_run
from pbexp.report.seeds import Group, Summary, group_runs
from pbexp.report.tables import TABLES, Table, build_table, detect_table

__all__ = [
    "TABLES",
    "Group",
    "ReportError",
    "Run",
    "Summary",
    "Table",
    "build_table",
    "collect_runs",
    "detect_table",
    "distinguishing_overrides",
    "group_runs",
    "load_published",
    "load_run",
    "logged_curve",
    "main",
    "plot_curves",
]
