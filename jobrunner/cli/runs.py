"""Commands about runs: run, runs, show."""

from __future__ import annotations

from typing import NoReturn

import typer

from jobrunner.cli.app import app, find_run, print_json, project, table
from jobrunner.cli.setup import job_names
from jobrunner.cli.trace_text import timed
from jobrunner.errors import NotFoundError


@app.command()
def run(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="The job to run now.",
                                     autocompletion=job_names),
    due: bool = typer.Option(False, "--due", help="Run every job (or NAME only) whose "
                             "scheduled slot has come within its misfire grace and not run."),
    trigger: str = typer.Option("manual", "--trigger", hidden=True),
    slot: str | None = typer.Option(None, "--slot", hidden=True),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Write the run's steps to "
                                 "stderr as they happen (model turns, tool calls and "
                                 "results, guard decisions, retries)."),
) -> None:
    """One session now, under the job's lock (what cron calls).

    Silent when the run completes or is skipped; otherwise the stop-and-report summary
    goes to stderr. Exit codes: 0 completed or skipped, 1 failed/partial/aborted,
    2 configuration error, 3 limit, 4 needs approval, 75 could not run now.
    """
    # The body is `cli.launch.execute`, which the console entry point also calls
    # directly for a plain `run` command line (no typer application built).
    from jobrunner.cli.launch import RunArgs, execute

    home = (ctx.find_root().obj or {}).get("home")
    raise typer.Exit(execute(RunArgs(None if home is None else str(home), name, due,
                                     trigger, slot, verbose)))


def end_run(code: int) -> NoReturn:
    """Exit with a run's code, at once (see `cli.launch.leave_nothing_waiting`)."""
    from jobrunner.cli.launch import leave_nothing_waiting

    leave_nothing_waiting(code)
    raise typer.Exit(code)


def _duration(row: dict) -> str:
    from jobrunner.clock import parse_iso

    start, end = parse_iso(row.started_at), parse_iso(row.ended_at)
    if not start or not end:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


@app.command()
def runs(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Only this job.",
                                     autocompletion=job_names),
    limit: int = typer.Option(20, "-n", "--limit", min=1, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Run history, newest first."""

    proj = project(ctx)
    rows = proj.store().list_runs(name, limit)
    if name and not rows and name not in proj.job_names():
        # A job that is gone keeps its history; a name that never was one is a mistake.
        known = ", ".join(proj.job_names()) or "none"
        raise NotFoundError(f"{proj.job_path(name)}: no such job (jobs: {known})")
    if as_json:
        print_json([r.as_json() for r in rows])
        return
    if not rows:
        typer.echo("no runs yet")
        return
    out = [[r.id, r.job, r.status, r.trigger, (r.started_at or "")[:19],
            _duration(r), str(r.steps), str(r.tool_calls), f"${r.cost_usd:.4f}",
            r.stop_reason or ""] for r in rows]
    typer.echo(table(out, ["RUN", "JOB", "STATUS", "TRIGGER", "STARTED (UTC)", "TOOK",
                           "STEPS", "TOOLS", "COST", "STOP REASON"], coloured=(2,),
                     whole=(0, 8, 1), optional=(5, 6, 7, 3, 4)))


@app.command()
def show(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    as_json: bool = typer.Option(False, "--json", help="The raw trace events as JSON."),
) -> None:
    """One run's record and its trace, step by step."""

    proj = project(ctx)
    row = find_run(proj, run_id)
    events = proj.store().trace_read(row.id)
    if as_json:
        print_json({"run": row.as_json(), "trace": events})
        return
    typer.echo(f"run {row.id}  job {row.job}  status {row.status}  "
               f"trigger {row.trigger}")
    typer.echo(f"started {row.started_at}  ended {row.ended_at or '-'}  "
               f"steps {row.steps}  tool calls {row.tool_calls}  "
               f"tokens {row.input_tokens} in / {row.output_tokens} out  "
               f"cost ${row.cost_usd:.4f}")
    if row.stop_reason:
        typer.echo(f"stop reason: {row.stop_reason}")
    if row.summary:
        typer.echo(f"summary: {row.summary}")
    if row.report:
        typer.echo("report:\n" + row.report)
    if events:
        typer.echo("trace:")
        for event in events:
            typer.echo(timed(event, "  "))
    else:
        typer.echo("trace: (none recorded)")
