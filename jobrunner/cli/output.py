"""What every command shares that needs no command-line parser: where log lines go and
how an error is told. Kept free of typer, so `jobrunner run NAME` can use it without
building the application (see `cli.launch`)."""

from __future__ import annotations

import sys
from typing import Any


def relative(line: str) -> str:
    """A located message (`/abs/FILE:LINE: ...`) with the path relative to where the user
    stands, as editors and people read it best."""
    import os

    return line.removeprefix(os.getcwd().rstrip("/") + "/")


def report_error(exc: Exception) -> None:
    """An error the CLI reports without a traceback: each line on stderr, located lines
    as they are, others prefixed `jobrunner:`."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        line = relative(line)
        print(line if ":" in line.split(" ", 1)[0] else f"jobrunner: {line}", file=sys.stderr)


class _UtcFormatter:
    """`2026-11-21T08:00:00Z jobrunner daemon: message`: one whole line per record."""

    def format(self, record: Any) -> str:
        from jobrunner.clock import iso, utcnow

        return f"{iso(utcnow())} jobrunner daemon: {record.getMessage()}"


def setup_logging() -> None:
    """Library code logs; only the CLI decides where that goes: stderr, where cron mails
    it and the journal keeps it. The daemon's own lines carry their time."""
    import logging

    root = logging.getLogger("jobrunner")
    if root.handlers:
        return
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("jobrunner: %(message)s"))
    root.addHandler(plain)
    root.setLevel(logging.WARNING)
    root.propagate = False
    daemon = logging.getLogger("jobrunner.daemon")
    timed = logging.StreamHandler(sys.stderr)
    timed.setFormatter(_UtcFormatter())  # type: ignore[arg-type] - duck-typed formatter
    daemon.addHandler(timed)
    daemon.setLevel(logging.INFO)
    daemon.propagate = False
