"""The typer application and what every command shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

# Re-exported: the commands import them from here.
from jobrunner.cli.output import relative, report_error, setup_logging  # noqa: F401

EPILOG = (
    "Exit codes of `run`: 0 completed (or skipped: a live run holds the lock); "
    "1 failed, partial or aborted; 2 usage or configuration error; 3 a hard limit ended "
    "the run; 4 waiting for approval; 75 could not run now (stale lock, paused, day budget)."
)

app = typer.Typer(
    name="jobrunner",
    help="Run LLM agent jobs on cron schedules: one at a time, with compact memory, "
    "stop-and-report on failure, hard limits and alerts.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", help="Project folder (default: $JOBRUNNER_HOME, else the nearest "
        "folder at or above here with jobrunner.toml or jobs/)."
    ),
) -> None:
    ctx.obj = {"home": home}


def project(ctx: typer.Context):
    """The project the command works on (discovered once per invocation)."""
    from jobrunner.config.project import Project

    obj = ctx.find_root().obj or {}
    if "project" not in obj:
        obj["project"] = Project.discover(obj.get("home"))
    return obj["project"]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Plain aligned columns: reads well in a terminal and in a cron mail."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
