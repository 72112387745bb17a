"""Commands about declared jobs: add, list, validate, next."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from jobrunner.cli.app import app, print_json, project, relative, table
from jobrunner.cli.setup import job_names
from jobrunner.errors import ConfigError

JOB_TEMPLATE = '''\
# {name}: a jobrunner job. Every key and its default: see README ("Job files").
description = "Say what this job is for"
schedule = "{schedule}"        # crontab: minute hour day-of-month month day-of-week
timezone = "{timezone}"
model = "{model}"
tools = []                      # names of built-in tools or functions in jobs/tools/*.py
prompt = """
Check that everything is in order and finish with a one-line summary.
"""

[limits]
max_steps = 10
max_cost_usd = 0.10

# Per-tool policy for this job, e.g.:
# [tool.send_email]
# idempotency_key = "{{job}}:{{tool}}:{{date}}"   # at most one email a day
'''


@app.command()
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Job name: [a-z0-9][a-z0-9_-]{0,63}"),
    schedule: str = typer.Option("0 8 * * 1-5", "--schedule", help="Crontab expression."),
    model: str = typer.Option("claude-sonnet-4-6", "--model", help="Model id or replay:PATH."),
    timezone: str = typer.Option("", "--timezone", help="IANA zone (default: the system's)."),
) -> None:
    """Scaffold jobs/NAME.toml and memory/NAME/MEMORY.md (never overwrites either)."""
    from jobrunner.config.jobfile import _system_timezone
    from jobrunner.config.schedule import ScheduleError, parse_schedule
    from jobrunner.formats.names import JOB_NAME
    from jobrunner.memory import format as memory

    proj = project(ctx)
    if not JOB_NAME.match(name):
        raise ConfigError(f"{name!r}: job names match [a-z0-9][a-z0-9_-]{{0,63}}")
    zone = timezone or _system_timezone()
    try:
        parse_schedule(schedule, zone)
    except ScheduleError as exc:
        raise ConfigError(f"--schedule: {exc}") from exc
    job_path = proj.job_path(name)
    memory.refuse_symlinks(proj.memory_dir, name)
    memory_file = memory.memory_path(proj.memory_dir, name)
    existing = [str(p) for p in (job_path, memory_file) if p.exists()]
    if existing:
        raise ConfigError(f"{existing[0]}: already exists; not overwritten")
    job_path.parent.mkdir(parents=True, exist_ok=True)
    with open(job_path, "x", encoding="utf-8") as handle:
        handle.write(JOB_TEMPLATE.format(name=name, schedule=schedule, timezone=zone,
                                         model=model))
    memory_file.parent.mkdir(parents=True, exist_ok=True)
    with open(memory_file, "x", encoding="utf-8") as handle:
        handle.write(memory.template(name))
    typer.echo(f"created {job_path}\ncreated {memory_file}")


def _next_text(job, now: datetime) -> str:
    from jobrunner.config.schedule import format_local

    return format_local(job.schedule().next_after(now), job.spec.timezone)


@app.command("list")
def list_jobs(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """Jobs with schedule, next run, last status, paused or not."""
    from jobrunner.config.jobs import load_all

    proj = project(ctx)
    jobs, problems = load_all(proj)
    store = proj.store()
    now = datetime.now(UTC)
    records = []
    for job in jobs:
        last = store.last_run(job.name)
        records.append({
            "name": job.name,
            "description": job.spec.description,
            "schedule": job.spec.schedule,
            "timezone": job.spec.timezone,
            "next_run": job.schedule().next_after(now).isoformat(),
            "next_run_local": _next_text(job, now),
            "last_status": last.status if last else None,
            "last_run_at": last.started_at if last else None,
            "paused": is_paused(store, job.name),
        })
    if as_json:
        print_json({"jobs": records, "invalid": problems})
    else:
        rows = [[r["name"], r["schedule"], r["next_run_local"], r["last_status"] or "-",
                 "paused" if r["paused"] else ""] for r in records]
        if rows:
            typer.echo(table(rows, ["JOB", "SCHEDULE", "NEXT RUN", "LAST", "PAUSED"],
                             coloured=(3, 4)))
        else:
            typer.echo("no valid jobs in " + str(proj.jobs_dir))
        for problem in problems:
            typer.echo(relative(problem), err=True)
    if problems:
        raise typer.Exit(2)


def is_paused(store, job: str) -> bool:
    """Whether the job is paused after repeated failures (`jobrunner resume` lifts it)."""
    from jobrunner.run.pause import is_paused as paused

    return paused(store, job) is not None


@app.command()
def validate(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="One job (default: all).",
                                     autocompletion=job_names),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    connect: bool = typer.Option(False, "--connect",
                                 help="Start each MCP server a job uses, list its tools "
                                      "and their policy, and stop it."),
) -> None:
    """Check job files and settings without running anything."""
    from jobrunner.config.jobs import load_all, load_job, mcp_tool_listing

    proj = project(ctx)
    proj.settings  # noqa: B018 - validates jobrunner.toml first
    if name:
        jobs, problems = [load_job(proj, name)], []
    else:
        jobs, problems = load_all(proj)
    jobs = _ready(proj, jobs, problems)
    state = _state_line(proj, problems)
    mcp: dict[str, list[dict]] = {}
    for job in list(jobs):
        mcp[job.name], found = mcp_tool_listing(proj, job, connect)
        problems.extend(found)
        if found:  # what its servers said makes it invalid
            jobs.remove(job)
    now = datetime.now(UTC)
    if as_json:
        print_json({
            "valid": [{"name": j.name, "timezone": j.spec.timezone,
                       "next_run": j.schedule().next_after(now).isoformat(),
                       "next_run_local": _next_text(j, now), "mcp_tools": mcp[j.name]}
                      for j in jobs],
            "problems": problems, "state": state,
        })
    else:
        for job in jobs:
            typer.echo(f"ok  {job.name}: next run {_next_text(job, now)}")
            for line in _mcp_lines(mcp[job.name]):
                typer.echo(f"    {line}")
        if state["reachable"]:
            typer.echo(f"state: {state['backend']} (reachable)")
        for problem in problems:
            typer.echo(relative(problem), err=True)
    _legacy_note(proj)
    if problems:
        raise typer.Exit(2)


def _legacy_note(proj) -> None:
    """Point at state an earlier version left under $XDG_STATE_HOME (not read any more)."""
    from jobrunner.config.project import legacy_state_dir

    legacy = None if proj.configured_state_dir else legacy_state_dir(proj.root)
    if legacy is not None:
        typer.echo(f"note: {legacy} holds state of this project from runs launched where "
                   f"$XDG_STATE_HOME was set; jobrunner now always uses {proj.state_dir} "
                   "(the same for a shell, cron and the daemon): move what you need there",
                   err=True)


def _ready(proj, jobs: list, problems: list[str]) -> list:
    """The jobs `run` would start: what it checks before it runs, validate checks too
    (the env_file's mode, an API key, the MCP servers' variables); the others' problems
    are added to `problems`."""
    from jobrunner.config.jobs import environment_problems

    ready = []
    try:
        for job in jobs:
            missing = environment_problems(proj, job)
            problems.extend(missing)
            if not missing:
                ready.append(job)
    except ConfigError as exc:  # the env_file: no job can run
        problems.extend(exc.problems)
        return []
    return ready


def _state_line(proj, problems: list[str]) -> dict:
    """Which state backend the project uses, and whether it answers (a problem if not)."""
    from jobrunner.errors import StateError

    try:
        store = proj.store()
    except (StateError, ConfigError) as exc:
        problems.append(str(exc))
        return {"backend": None, "reachable": False, "error": str(exc)}
    return {"backend": store.describe(), "reachable": True, "error": None}


def _mcp_lines(listing: list[dict]) -> list[str]:
    """A job's MCP tools as `validate` shows them."""
    lines = []
    for item in listing:
        if "entry" in item:
            lines.append(f"{item['entry']}: tools and policy come from the server "
                         "(validate --connect lists them)")
            continue
        effect = "side effect" if item["side_effect"] else "read-only"
        then = "approval" if item["needs_approval"] else "runs"
        lines.append(f"{item['tool']} ({item['server']}/{item['name']}): risk {item['risk']}"
                     f" ({then}), {effect}, retries {item['retries']}, timeout "
                     f"{item['timeout']:g}s" + (", untrusted output" if
                                                item["untrusted_output"] else ""))
    return lines


@app.command("next")
def next_runs(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Job name.", autocompletion=job_names),
    count: int = typer.Option(5, "-n", "--count", min=1, max=1000, help="How many."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """The next fire times of a job, in its time zone with the UTC offset."""
    from jobrunner.config.jobs import load_job
    from jobrunner.config.schedule import format_local

    job = load_job(project(ctx), name)
    times = job.schedule().next_times(datetime.now(UTC), count)
    if as_json:
        print_json([{"at": t.isoformat(), "local": format_local(t, job.spec.timezone)}
                    for t in times])
    else:
        typer.echo(f"{job.name}: {job.spec.schedule} ({job.spec.timezone})")
        for moment in times:
            typer.echo(format_local(moment, job.spec.timezone))
