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

from jobrunner.errors import JobrunnerError


def _application():
    """The typer application with every command registered (imported only when the
    command line is not a plain `run`: see `cli.launch`)."""
    # Each module registers its commands on `app`.
    from jobrunner.cli import approvals as _approvals  # noqa: F401
    from jobrunner.cli import doctor as _doctor  # noqa: F401
    from jobrunner.cli import health as _health  # noqa: F401
    from jobrunner.cli import jobs as _jobs  # noqa: F401
    from jobrunner.cli import logs as _logs  # noqa: F401
    from jobrunner.cli import memory as _memory  # noqa: F401
    from jobrunner.cli import rehearse as _rehearse  # noqa: F401
    from jobrunner.cli import replay as _replay  # noqa: F401
    from jobrunner.cli import runs as _runs  # noqa: F401
    from jobrunner.cli import schedule as _schedule  # noqa: F401
    from jobrunner.cli import setup as _setup  # noqa: F401
    from jobrunner.cli import status as _status  # noqa: F401
    from jobrunner.cli.app import app

    return app


def main() -> None:
    """Console entry point."""
    from jobrunner.cli.launch import quick_main
    from jobrunner.cli.output import report_error, setup_logging

    setup_logging()
    code = quick_main(sys.argv[1:])  # a plain `run`: no typer application to build
    if code is not None:
        sys.exit(code)
    from jobrunner.cli import setup

    if setup.completing():
        setup.enable_completion()
    try:
        _application()()
    except JobrunnerError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
