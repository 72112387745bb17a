"""Commands that keep jobs from failing silently: locks, unlock, alerts, resume, check."""

from __future__ import annotations

import typer

from jobrunner.cli.app import app, print_json, project, table
from jobrunner.cli.setup import job_names
from jobrunner.errors import JobrunnerError


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@app.command()
def locks(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """Lock state of every job: free, held (by which run, for how long), stale, crashed."""
    from jobrunner.config.jobfile import LockPolicy
    from jobrunner.config.jobs import load_job
    from jobrunner.locks.file import inspect

    proj = project(ctx)
    records = []
    for name in proj.job_names():
        try:
            stale_after = load_job(proj, name).spec.lock.stale_after
        except JobrunnerError:
            stale_after = LockPolicy().stale_after
        state = inspect(proj.store().lock(f"job-{name}"), stale_after)
        records.append({"job": name, **state.as_json()})
    if as_json:
        print_json(records)
        return
    if not records:
        typer.echo("no jobs")
        return
    rows = [[r["job"], r["state"], r["run_id"] or "-", str(r["pid"] or "-"), r["host"] or "-",
             _age(r["held_for_s"]), _age(r["heartbeat_age_s"])] for r in records]
    typer.echo(table(rows, ["JOB", "STATE", "RUN", "PID", "HOST", "HELD FOR", "HEARTBEAT AGO"],
                     coloured=(1,), optional=(3, 6, 4)))


@app.command()
def unlock(ctx: typer.Context, name: str = typer.Argument(..., help="Job name.",
                                                        autocompletion=job_names)) -> None:
    """Clear what a crashed run left on a job's lock. Refuses while a live process holds it."""
    from jobrunner.config.jobs import load_job
    from jobrunner.locks.file import Busy
    from jobrunner.run import recovery

    proj = project(ctx)
    job = load_job(proj, name)
    lock = proj.store().lock(f"job-{job.name}")
    got = lock.try_acquire()
    if isinstance(got, Busy):
        holder = got.holder or {}
        raise JobrunnerError(
            f"{name}: the lock is held by live run {holder.get('run_id', '?')} (pid "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}); not unlocked. A live "
            "lock is never broken: stop that process, or set lock.on_stale = \"terminate\""
        )
    try:
        previous = got.previous or {}
        if got.left_behind:
            recovery.handle_left_behind(proj, proj.store(), lock,
                                        got.left_behind, job)
        if previous.get("state") in ("held", "crashed"):
            typer.echo(f"{name}: cleared the lock left by crashed run {previous.get('run_id')}")
        else:
            typer.echo(f"{name}: the lock was free")
    finally:
        lock.release()


@app.command()
def resume(ctx: typer.Context, name: str = typer.Argument(..., help="Job name.",
                                                        autocompletion=job_names)) -> None:
    """Lift the pause put on a job after repeated failures."""
    from jobrunner.config.jobs import load_job
    from jobrunner.run.pause import resume as lift

    proj = project(ctx)
    job = load_job(proj, name)
    if lift(proj.store(), job.name):
        typer.echo(f"{job.name}: resumed; its next run will start")
    else:
        typer.echo(f"{job.name}: was not paused")


@app.command("alerts")
def alerts_command(
    ctx: typer.Context,
    test: bool = typer.Option(False, "--test", help="Send a test alert through every channel."),
    limit: int = typer.Option(20, "-n", "--limit", min=1, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Recent alerts and their delivery; --test sends one through every channel."""
    from jobrunner.alerts import outbox as alerts
    proj = project(ctx)
    if test:
        results = alerts.send_test(proj)
        if as_json:
            print_json(results)
        else:
            for r in results:
                typer.echo(f"{'ok  ' if r['ok'] else 'FAIL'}  {r['channel']}"
                           + ("" if r["ok"] else f": {r['error']}"))
        if not all(r["ok"] for r in results):
            raise typer.Exit(1)
        return
    records = alerts.recent(proj, limit)
    if as_json:
        print_json(records)
        return
    if not records:
        typer.echo("no alerts yet")
        return
    for alert in records:
        repeats = f"  (+{alert['repeats']} repeats not sent)" if alert["repeats"] else ""
        typer.echo(f"{alert['at']}  {alert['event']}  {alert['job'] or '-'}  "
                   f"{alert['message']}{repeats}")
        for d in alert["deliveries"]:
            error = f": {d['error']}" if d["error"] and d["status"] != "delivered" else ""
            rest = (f"; runs retry it after {d['retry_at']}, `jobrunner check` at once"
                    if d["retry_at"] else "")
            typer.echo(f"    {d['channel']}: {d['status']} ({d['attempts']} attempts)"
                       f"{error}{rest}")


@app.command()
def check(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """Watchdog for a second crontab line: stale locks, crashed runs, paused jobs, missed
    schedules, undelivered alerts. Alerts on each once; exit 1 when it found something."""
    from jobrunner.scheduling.watchdog import check as run_check

    findings = run_check(project(ctx))
    if as_json:
        print_json({"ok": not findings, "findings": [f.as_json() for f in findings]})
    else:
        for finding in findings:
            typer.echo(f"{finding.kind}: {finding.message}")
    if findings:
        raise typer.Exit(1)
