"""Commands about side effects: approvals, approve, reject, ledger."""

from __future__ import annotations

import json

import typer

from jobrunner.cli.app import app, print_json, project, table


def _store(ctx: typer.Context):

    return project(ctx).store()


def _redactor(ctx: typer.Context):
    """Display-time masking as well, for rows written before a secret was configured."""
    return project(ctx).redactor()


def _short(value: object, width: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@app.command()
def approvals(
    ctx: typer.Context,
    everything: bool = typer.Option(False, "--all", help="Decided ones too, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """The queue of high-risk calls proposed by agents, waiting for a person."""
    from jobrunner.effects import approvals as queue
    redactor = _redactor(ctx)
    rows = [redactor.data(a.as_json()) for a in queue.listing(_store(ctx), everything)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no approvals" if everything else "no pending approvals")
        return
    typer.echo(table(
        [[r["id"], r["status"], r["job"], r["tool"], _short(r["args"]),
          r["expires_at"] if r["status"] == "pending" else (r["decided_by"] or "-")]
         for r in rows],
        ["ID", "STATUS", "JOB", "TOOL", "ARGUMENTS", "EXPIRES (UTC) / BY"], coloured=(1,),
        optional=(5,)))
    for r in rows:
        if r["status"] == "pending":
            typer.echo(f"\n{r['id']}: {r['tool']} for {r['job']} (run {r['run_id']})\n"
                       f"  arguments: {json.dumps(r['args'], default=str)}\n"
                       f"  agent's reason: {_short(r['reason'], 400)}")


@app.command()
def approve(
    ctx: typer.Context,
    approval_id: str = typer.Argument(..., metavar="ID", help="Approval id (or unique prefix)."),
) -> None:
    """Execute a queued call once (through the ledger) and record who approved it."""
    from jobrunner.effects import approvals as queue
    done = queue.approve(project(ctx), approval_id, queue.os_user())
    redactor = _redactor(ctx)
    if done.outcome == "already_done":
        typer.echo(f"approved {done.id} by {done.decided_by}: {done.note}")
        return
    if done.outcome == "ok":
        result = json.loads(done.result) if done.result else None
        typer.echo(f"approved {done.id} by {done.decided_by}: {done.tool} executed: ok\n"
                   f"  result: {_short(redactor.data(result), 400)}")
        return
    typer.echo(f"approved {done.id} by {done.decided_by}: {done.tool} FAILED "
               f"({done.outcome}): {done.error}", err=True)
    if done.outcome == "in_doubt":
        typer.echo(f"  it may have acted; see `jobrunner ledger` for key {done.ledger_key!r}",
                   err=True)
    raise typer.Exit(1)


@app.command()
def reject(
    ctx: typer.Context,
    approval_id: str = typer.Argument(..., metavar="ID", help="Approval id (or unique prefix)."),
    reason: str = typer.Option("", "--reason", help="Why, for the record."),
) -> None:
    """Refuse a queued call; it is never executed."""
    from jobrunner.effects import approvals as queue

    done = queue.reject(_store(ctx), approval_id, queue.os_user(), reason)
    typer.echo(f"rejected {done.id} ({done.tool} for {done.job}) by {done.decided_by}")


ledger_app = typer.Typer(help="Side effects by idempotency key: done, failed, in doubt.",
                         no_args_is_help=False, rich_markup_mode=None)
app.add_typer(ledger_app, name="ledger")


@ledger_app.callback(invoke_without_command=True)
def ledger_list(
    ctx: typer.Context,
    job: str | None = typer.Option(None, "--job", help="Only this job."),
    limit: int = typer.Option(50, "-n", "--limit", min=1, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Side-effecting calls by idempotency key, newest first. An entry `in_doubt` stops
    its job's runs until `jobrunner ledger resolve KEY --done|--not-done`."""
    if ctx.invoked_subcommand is not None:
        return
    from jobrunner.effects import ledger
    redactor = _redactor(ctx)
    rows = [redactor.data(e.as_json()) for e in ledger.entries(_store(ctx), job, limit)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no ledger entries")
        return
    typer.echo(table(
        [[r["key"], r["state"], r["job"], r["tool"], r["run_id"] or "-",
          (r["outcome_at"] or r["intent_at"] or "")[:19], _short(r["error"] or "", 50)]
         for r in rows],
        ["KEY", "STATE", "JOB", "TOOL", "RUN", "AT (UTC)", "ERROR"], coloured=(1,),
        optional=(5, 4)))
    doubtful = [r for r in rows if r["state"] == "in_doubt"]
    for r in doubtful:
        typer.echo(f"\nin doubt: {r['key']}: resolve with\n"
                   f"  jobrunner ledger resolve '{r['key']}' --done      (it happened)\n"
                   f"  jobrunner ledger resolve '{r['key']}' --not-done  (it did not)")


@ledger_app.command("resolve")
def ledger_resolve(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The entry's idempotency key."),
    done: bool | None = typer.Option(None, "--done/--not-done",
                                     help="It happened / it did not happen."),
) -> None:
    """Say what became of an in-doubt call. --done: later calls with this key get a
    note instead of acting. --not-done: a later run may make the call again."""
    from jobrunner.effects import ledger
    from jobrunner.effects.approvals import os_user
    from jobrunner.errors import ConfigError

    if done is None:
        raise ConfigError("say --done (it happened) or --not-done (it did not)")
    entry = ledger.resolve(_store(ctx), key, done, os_user())
    typer.echo(f"{entry.key}: marked {entry.status} by {entry.resolved_by}")
