"""``python -m pbexp.report``: the pbexp-report command."""

import sys

from pbexp.report.cli import main

sys.exit(main())
