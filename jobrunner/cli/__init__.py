"""The `jobrunner` command: parse, call, print. Errors become exit codes here only.

Exit codes of `jobrunner run`:
  0  completed, or skipped because a live run holds the lock
  1  failed, partial, aborted (or crashed)
  2  usage or configuration error (nothing was run or written)
  3  a hard limit ended the run
  4  ended waiting for approval
  75 could not run now (stale lock, job paused, budget for the day spent)
"""

from __future__ import annotations

import sys

# Each module registers its commands on `app`.
from jobrunner.cli import approvals as _approvals  # noqa: E402,F401
from jobrunner.cli import doctor as _doctor  # noqa: E402,F401
from jobrunner.cli import health as _health  # noqa: E402,F401
from jobrunner.cli import jobs as _jobs  # noqa: E402,F401
from jobrunner.cli import logs as _logs  # noqa: E402,F401
from jobrunner.cli import memory as _memory  # noqa: E402,F401
from jobrunner.cli import rehearse as _rehearse  # noqa: E402,F401
from jobrunner.cli import replay as _replay  # noqa: E402,F401
from jobrunner.cli import runs as _runs  # noqa: E402,F401
from jobrunner.cli import schedule as _schedule  # noqa: E402,F401
from jobrunner.cli import setup as _setup  # noqa: E402,F401
from jobrunner.cli import status as _status  # noqa: E402,F401
from jobrunner.cli.app import app, report_error, setup_logging
from jobrunner.errors import JobrunnerError


def main() -> None:
    """Console entry point."""
    setup_logging()
    if _setup.completing():
        _setup.enable_completion()
    try:
        app()
    except JobrunnerError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
