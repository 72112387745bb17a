"""Commands about runs: run, runs, show."""

from __future__ import annotations

import json

import typer

from jobrunner.cli.app import app, print_json, project, table
from jobrunner.errors import NotFoundError


@app.command()
def run(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="The job to run now."),
    due: bool = typer.Option(False, "--due", help="Run every job (or NAME only) whose "
                             "scheduled slot has come within its misfire grace and not run."),
    trigger: str = typer.Option("manual", "--trigger", hidden=True),
    slot: str | None = typer.Option(None, "--slot", hidden=True),
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
                                     trigger, slot)))


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
    name: str | None = typer.Argument(None, help="Only this job."),
    limit: int = typer.Option(20, "-n", "--limit", min=1, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Run history, newest first."""

    store = project(ctx).store()
    rows = store.list_runs(name, limit)
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
                           "STEPS", "TOOLS", "COST", "STOP REASON"]))


# Trace events that read as one line with their own fields filled in.
_PLAIN = {
    "model.request": "model request (step {step}, attempt {attempt})",
    "model.error": "model error (attempt {attempt}): {message}",
    "model.retry": "retrying the model call in {delay_s}s",
    "run.end": "run ended {status} ({stop_reason})",
    "session.finish": "finish: {status}: {summary}",
}


def _describe(event: dict) -> str:
    """One trace event as a line a person can read."""
    kind = event.get("event", "?")
    if kind in _PLAIN:
        return _PLAIN[kind].format_map(_Missing(event))
    if kind == "model.response":
        return _response(event)
    if kind == "tool.call":
        args = json.dumps(event.get("input"), default=str)
        return f"tool call {event.get('tool')}({args[:160]}) [risk {event.get('risk')}]"
    if kind == "tool.result":
        if event.get("ok"):
            return (f"tool result {event.get('tool')}: ok ({event.get('data_chars')} chars, "
                    f"{event.get('duration_s')}s)")
        return f"tool result {event.get('tool')}: FAILED: {event.get('error')}"
    if kind in ("approval.approved", "approval.rejected", "approval.expired"):
        return _decision(event, kind.split(".")[1])
    skip = {"seq", "at", "event", "run_id"}
    rest = ", ".join(f"{k}={json.dumps(v, default=str)[:80]}" for k, v in event.items()
                     if k not in skip)
    return f"{kind} {rest}".strip()


class _Missing(dict):
    """An event's fields for `format_map`; a field it lacks reads as None."""

    def __missing__(self, key: str) -> None:
        return None


def _response(event: dict) -> str:
    usage = event.get("usage", {})
    parts = []
    for block in event.get("content", []):
        if block.get("type") == "text" and block.get("text", "").strip():
            text = " ".join(block["text"].split())
            parts.append(f'says "{text[:100]}{"..." if len(text) > 100 else ""}"')
        elif block.get("type") == "tool_use":
            args = json.dumps(block.get("input"), default=str)
            parts.append(f"calls {block.get('name')}({args[:100]})")
    return (f"model response: {'; '.join(parts) or '(empty)'} "
            f"[{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out, "
            f"${event.get('cost_usd', 0):.4f}, {event.get('duration_s', 0)}s]")


def _decision(event: dict, verb: str) -> str:
    line = f"approval {event.get('approval_id')} ({event.get('tool')}) {verb}"
    line += f" by {event.get('by')}" if event.get("by") != "ttl" else " (nobody decided)"
    if event.get("outcome"):
        line += f": {event['outcome']}"
    if event.get("error") or event.get("reason"):
        line += f": {event.get('error') or event.get('reason')}"
    return line


@app.command()
def show(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    as_json: bool = typer.Option(False, "--json", help="The raw trace events as JSON."),
) -> None:
    """One run's record and its trace, step by step."""

    proj = project(ctx)
    row = proj.store().find_run(run_id)
    if row is None:
        raise NotFoundError(f"no run {run_id!r} (see `jobrunner runs`)")
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
            typer.echo(f"  {event.get('at', '')[11:19]}  {_describe(event)}")
    else:
        typer.echo("trace: (none recorded)")
