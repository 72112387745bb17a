"""`jobrunner status`: one screen of what is happening — the daemon, each job, pending
approvals, undelivered alerts, and which state is in use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from jobrunner.cli.app import app, print_json, project, relative, table
from jobrunner.cli.term import colour, wrap

if TYPE_CHECKING:
    from jobrunner.config.project import Project

# A job's states, the most pressing first: the table shows the first that applies.
ORDER = ("invalid", "in doubt", "crashed", "stale", "paused", "running", "scheduled")


def _job_record(store: Any, job: Any, now: datetime) -> dict[str, Any]:
    from jobrunner.config.schedule import format_local
    from jobrunner.effects import ledger
    from jobrunner.locks.file import inspect
    from jobrunner.run.pause import is_paused

    lock = inspect(store.lock(f"job-{job.name}"), job.spec.lock.stale_after, now)
    states = []
    doubtful = ledger.in_doubt(store, job.name)
    if doubtful:
        states.append("in doubt")
    if lock.state in ("crashed", "stale"):
        states.append(lock.state)
    paused = is_paused(store, job.name)
    if paused:
        states.append("paused")
    if lock.state in ("held", "stale"):
        states.append("running")
    states.append("scheduled")
    last = store.last_run(job.name)
    nxt = job.schedule().next_after(now)
    return {
        "name": job.name, "state": states[0], "states": states,
        "schedule": job.spec.schedule, "timezone": job.spec.timezone,
        "running_run": lock.meta.get("run_id") if lock.state in ("held", "stale") else None,
        "in_doubt": [e.key for e in doubtful],
        "paused_since": paused.paused_at if paused else None,
        "last_run": last.id if last else None,
        "last_status": last.status if last else None,
        "last_stop_reason": last.stop_reason if last else None,
        "last_started_at": last.started_at if last else None,
        "next_run": nxt.isoformat(), "next_run_local": format_local(nxt, job.spec.timezone),
        "problems": [],
    }


def _invalid(proj: Project, problems: list[str], valid: set[str]) -> list[dict[str, Any]]:
    """A record for each job file that does not validate (its problems with it)."""
    by_job: dict[str, list[str]] = {}
    for problem in problems:
        path = Path(problem.split(":", 1)[0])
        if path.parent == proj.jobs_dir and path.suffix == ".toml":
            by_job.setdefault(path.stem, []).append(relative(problem))
    return [{"name": name, "state": "invalid", "states": ["invalid"], "problems": found}
            for name, found in sorted(by_job.items()) if name not in valid]


def gather(proj: Project) -> dict[str, Any]:
    """Everything `status` shows, as JSON-ready data."""
    from jobrunner.config.jobs import load_all
    from jobrunner.effects import approvals
    from jobrunner.scheduling.presence import daemon_presence

    jobs, problems = load_all(proj)
    store = proj.store()
    now = datetime.now(UTC)
    records = [_job_record(store, job, now) for job in jobs]
    records += _invalid(proj, problems, {j.name for j in jobs})
    records.sort(key=lambda r: r["name"])
    pending = approvals.listing(store)
    return {
        "project": str(proj.root),
        "daemon": daemon_presence(proj).as_json(),
        "state": {"backend": store.kind, "where": store.describe(),
                  "state_dir": str(proj.state_dir)},
        "jobs": records,
        "problems": [relative(p) for p in problems],
        "approvals": [{"id": a.id, "job": a.job, "tool": a.tool, "expires_at": a.expires_at}
                      for a in pending],
        "undelivered_alerts": store.undelivered(),
    }


def _daemon_line(daemon: dict[str, Any]) -> str:
    if daemon["up"]:
        return (f"daemon: {colour('up')} since {daemon['since']} on {daemon['host']} "
                f"(pid {daemon['pid']})")
    if daemon["died"]:
        return (f"daemon: {colour('down')}: pid {daemon['pid']} on {daemon['host']} died "
                f"without stopping (it started {daemon['since']})")
    since = f" since {daemon['since']}" if daemon["since"] else " (never started here)"
    return f"daemon: {colour('down')}{since}; cron or `jobrunner daemon` runs the jobs"


def _last(record: dict[str, Any]) -> str:
    if not record.get("last_status"):
        return "-"
    why = f" ({record['last_stop_reason']})" if record.get("last_stop_reason") else ""
    return f"{record['last_status']}{why} {str(record['last_started_at'])[:16]}"


@app.command()
def status(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """One screen: the daemon (up or not, since when, where), each job's state (scheduled,
    invalid, paused, in doubt, running; last outcome; next run), pending approvals,
    undelivered alerts, and the state in use."""
    proj = project(ctx)
    data = gather(proj)
    if as_json:
        print_json(data)
        return
    say = [f"project: {data['project']}", f"state: {data['state']['where']}",
           _daemon_line(data["daemon"])]
    for line in say:
        typer.echo(wrap(line))
    rows = [[r["name"], r["state"], _last(r) if r["state"] != "invalid" else
             (r["problems"][0] if r["problems"] else "-"),
             r.get("next_run_local", "-") if r["state"] not in ("invalid", "paused") else "-"]
            for r in data["jobs"]]
    if rows:
        typer.echo(table(rows, ["JOB", "STATE", "LAST RUN (UTC)", "NEXT RUN"], coloured=(1,)))
    else:
        typer.echo(f"no jobs in {proj.jobs_dir}")
    for problem in data["problems"]:
        if not any(problem in r.get("problems", []) for r in data["jobs"]):
            typer.echo(wrap(f"problem: {problem}"))
    pending = data["approvals"]
    typer.echo(wrap(f"approvals: {len(pending)} pending" + (
        "; " + ", ".join(f"{a['id']} ({a['tool']} for {a['job']})" for a in pending[:5])
        + "; see `jobrunner approvals`" if pending else "")))
    waiting = data["undelivered_alerts"]
    typer.echo(wrap(f"alerts: {waiting} undelivered" + (
        "; see `jobrunner alerts` (`jobrunner check` retries them)" if waiting else "")))
