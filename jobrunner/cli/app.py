"""The typer application and what every command shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

# Re-exported: the commands import them from here.
from jobrunner.cli.output import relative, report_error, setup_logging  # noqa: F401

if TYPE_CHECKING:
    from jobrunner.config.project import Project
from jobrunner.cli.term import table  # noqa: F401 - every command's tables

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


def _version(value: bool) -> None:
    if value:
        from jobrunner.version import __version__

        typer.echo(f"jobrunner {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", help="Project folder (default: $JOBRUNNER_HOME, else the nearest "
        "folder at or above here with jobrunner.toml or jobs/)."
    ),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print the version and exit."),
) -> None:
    del version  # handled by its callback
    ctx.obj = {"home": home}


def project(ctx: typer.Context):
    """The project the command works on (discovered once per invocation)."""
    from jobrunner.config.project import Project

    obj = ctx.find_root().obj or {}
    if "project" not in obj:
        obj["project"] = Project.discover(obj.get("home"))
    return obj["project"]


def find_run(proj: Project, ref: str) -> Any:
    """The run `ref` names (an id or a unique prefix); NotFoundError says which runs an
    ambiguous prefix matches, or that none does."""
    from jobrunner.errors import NotFoundError

    store = proj.store()
    row = store.find_run(ref)
    if row is not None:
        return row
    matches = store.find_runs(ref, limit=6)
    if not matches:
        raise NotFoundError(f"no run {ref!r} (see `jobrunner runs`)")
    shown = ", ".join(f"{r.id} ({r.job}, {r.status})" for r in matches[:5])
    more = " and more" if len(matches) > 5 else ""
    raise NotFoundError(f"run id prefix {ref!r} is ambiguous: it matches {shown}{more}; "
                        "give more of the id")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
