"""`jobrunner doctor`: is this machine set up to run the project's jobs? One line per
check, each problem with its fix; exit 1 on any problem."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import typer

from jobrunner.cli.app import app, print_json, project, relative
from jobrunner.cli.term import colour, wrap
from jobrunner.errors import JobrunnerError

if TYPE_CHECKING:
    from jobrunner.config.project import Project

KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


@dataclass
class Check:
    """One finding: `ok`, `warn` (worth knowing, not a problem) or `problem`."""

    check: str
    status: str
    detail: str
    fix: str = ""


def _settings(proj: Project) -> list[Check]:
    try:
        proj.settings  # noqa: B018 - validates jobrunner.toml
    except JobrunnerError as exc:
        return [Check("settings", "problem", relative(str(exc)), "fix jobrunner.toml "
                      "(`jobrunner validate` says the same)")]
    return [Check("settings", "ok", f"{proj.settings_path.name} is valid"
                  if proj.settings_path.is_file() else "no jobrunner.toml: all defaults")]


def _env_file(proj: Project) -> list[Check]:
    path = proj.env_file
    if path is None:
        return [Check("env_file", "ok", "none configured")]
    try:
        values = proj.env_values()
    except JobrunnerError as exc:
        fix = f"chmod 600 {path}" if "readable by" in str(exc) else \
            f"create {path} (KEY=VALUE lines, mode 0600) or drop env_file from jobrunner.toml"
        return [Check("env_file", "problem", relative(str(exc)), fix)]
    return [Check("env_file", "ok", f"{path}: mode 0600, {len(values)} values")]


def _api_key(proj: Project, jobs: list[Any]) -> list[Check]:
    live = [j.name for j in jobs if not j.spec.model.startswith("replay:")]
    if not live:
        return [Check("api key", "ok", "no job needs one (replay models only)")]
    try:
        in_file = [k for k in KEYS if proj.env_values().get(k)]
    except JobrunnerError:
        in_file = []  # said by the env_file check
    if in_file:
        return [Check("api key", "ok", f"{in_file[0]} is set in the env_file")]
    if any(os.environ.get(k) for k in KEYS):
        return [Check("api key", "warn", "ANTHROPIC_API_KEY is set in this shell only; cron "
                      "and a systemd unit do not see it",
                      "put it in the env_file named by jobrunner.toml (mode 0600)")]
    return [Check("api key", "problem", f"no ANTHROPIC_API_KEY for {', '.join(live)}",
                  "set it in an env_file named by jobrunner.toml (env_file = \".env\", "
                  "mode 0600)")]


def _state_dir(proj: Project) -> list[Check]:
    import tempfile

    from jobrunner.scheduling.due import jobrunner_command

    try:
        where = proj.state_dir
    except OSError as exc:
        return [Check("state folder", "problem", f"cannot create it: {exc}",
                      "set state_dir in jobrunner.toml to a folder this user can write")]
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=".doctor-"):
            pass
        proj.store().now()
    except (OSError, JobrunnerError) as exc:
        return [Check("state folder", "problem", f"{where}: not writable: {exc}",
                      f"make {where} writable by this user, or set state_dir in "
                      "jobrunner.toml")]
    checks = [Check("state folder", "ok", f"{where} is writable ({proj.store().describe()})")]
    # What a cron line runs, in cron's bare environment: the same folder, or two ledgers.
    from jobrunner.config.project import account_home

    home = account_home()  # cron sets $HOME from the password database
    try:
        done = subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin",
                               *jobrunner_command(), "--home", str(proj.root), "doctor",
                               "--state-dir"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [*checks, Check("cron's state folder", "problem", f"jobrunner did not start in "
                               f"cron's environment: {exc}", "check the installation")]
    seen = done.stdout.strip()
    if done.returncode != 0:
        checks.append(Check("cron's state folder", "problem", "jobrunner fails in cron's bare "
                            f"environment: {done.stderr.strip()[:300]}",
                            "put what it needs in jobrunner.toml and the env_file"))
    elif seen != str(where):
        checks.append(Check("cron's state folder", "problem", f"cron would use {seen}, this "
                            f"shell {where}: two ledgers and two sets of locks",
                            "set state_dir in jobrunner.toml"))
    else:
        checks.append(Check("cron's state folder", "ok", "cron's environment uses the same"))
    return checks


def _scheduler(proj: Project, jobs: list[Any]) -> list[Check]:
    from jobrunner.scheduling import crontab
    from jobrunner.scheduling.presence import DaemonPresence, daemon_presence

    try:
        daemon = daemon_presence(proj)
    except (OSError, JobrunnerError):  # no state folder: said by its own check
        daemon = DaemonPresence(False)
    try:
        installed = crontab.installed_block(proj, crontab.read_crontab())
    except crontab.CronError as exc:
        installed, cron_error = None, str(exc)
    else:
        cron_error = ""
    running = crontab.cron_running()
    checks = []
    if installed is not None:
        wanted = crontab.render_block(proj, [crontab.line_for(proj, j, crontab.system_timezone())
                                             for j in jobs])
        checks.append(Check("cron block", "ok" if installed == wanted else "warn",
                            "installed" + ("" if installed == wanted else
                                           ", but not the lines the jobs need now"),
                            "" if installed == wanted else "jobrunner cron --install"))
        checks.append(Check("cron daemon", "ok" if running else "problem",
                            "running" if running else "not running: the installed block never "
                            "fires", "" if running else "start it (Debian: `service cron start`; "
                            "systemd: `systemctl enable --now cron`)"))
    if daemon.up:
        checks.append(Check("daemon", "ok", f"up since {daemon.since} on {daemon.host} "
                            f"(pid {daemon.pid})"))
    if installed is None and not daemon.up and jobs:
        checks.append(Check("scheduling", "problem", "nothing runs the jobs on their schedules "
                            "(no cron block" + (f": {cron_error}" if cron_error else "")
                            + ", no daemon)", "jobrunner cron --install, or run "
                            "`jobrunner daemon` (e.g. `jobrunner daemon --systemd-unit`)"))
    return checks


def _reachable(host: str, port: int, timeout: float) -> str | None:
    import socket  # here: `jobrunner --help` builds this module too

    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return None
    except OSError as exc:
        return str(exc.strerror or exc)


def _channels(proj: Project, send_test: bool) -> list[Check]:
    from urllib.parse import urlsplit

    settings = proj.settings
    checks = []
    if send_test:
        from jobrunner.alerts import outbox as alerts

        try:
            results = alerts.send_test(proj)
        except (OSError, JobrunnerError) as exc:  # the state refused the test alert
            results = [{"channel": "alerts", "ok": False, "error": str(exc)}]
        for result in results:
            checks.append(Check(f"alert {result['channel']}", "ok" if result["ok"] else
                                "problem", "test alert delivered" if result["ok"] else
                                str(result["error"]), "" if result["ok"] else
                                "check the channel in jobrunner.toml"))
    else:
        for channel in settings.alerts.channels:
            if channel.type == "webhook":
                url = urlsplit(channel.url)
                port = url.port or (443 if url.scheme == "https" else 80)
                error = _reachable(url.hostname or "", port, channel.timeout)
                checks.append(Check(f"webhook {url.hostname}:{port}", "problem" if error else
                                    "ok", error or "reachable (--send-test sends a test alert)",
                                    "check the url and the network" if error else ""))
    if settings.smtp is not None:
        smtp = settings.smtp
        error = _reachable(smtp.host, smtp.port, smtp.timeout)
        checks.append(Check(f"smtp {smtp.host}:{smtp.port}", "problem" if error else "ok",
                            error or "reachable", "check [smtp] host and port" if error else ""))
    return checks


def _files(proj: Project, problems: list[str]) -> list[Check]:
    from jobrunner.tools.registry import tool_file_problems

    tools = tool_file_problems(proj)
    checks = [Check("tool files", "problem", relative(p), "fix the file (`jobrunner validate`)")
              for p in tools] or [Check("tool files", "ok", "every jobs/tools/*.py imports")]
    others = [p for p in problems if p not in tools]
    checks += [Check("job files", "problem", relative(p), "fix the job file") for p in others]
    return checks


def _time_zone() -> list[Check]:
    from jobrunner.config.schedule import system_timezone

    system = system_timezone(honour_tz_env=False)
    shell = os.environ.get("TZ", "").lstrip(":")
    if shell and shell != system:
        return [Check("time zone", "warn", f"TZ={shell} here, but cron and systemd read the "
                      f"system's zone ({system}): a job without `timezone` differs between them",
                      "give each job a `timezone` (or [defaults] timezone)")]
    return [Check("time zone", "ok", f"system zone {system}")]


@app.command()
def doctor(
    ctx: typer.Context,
    send_test: bool = typer.Option(False, "--send-test", help="Send a test alert through "
                                   "every channel (default: only check they are reachable)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    state_dir: bool = typer.Option(False, "--state-dir", hidden=True),
) -> None:
    """Set-up checks, each problem with its fix: the API key, the env_file's mode, the state
    folder (writable, the same one cron uses), cron or the daemon, alert channels and SMTP,
    tool files, the time zone. Exit 1 on any problem."""
    proj = project(ctx)
    if state_dir:  # what cron's environment resolves (see _state_dir)
        typer.echo(str(proj.state_dir))
        return
    checks = _settings(proj)
    if checks[0].status == "ok":
        from jobrunner.config.jobs import load_all

        jobs, problems = load_all(proj)
        checks += [*_env_file(proj), *_api_key(proj, jobs), *_state_dir(proj),
                   *_scheduler(proj, jobs), *_channels(proj, send_test),
                   *_files(proj, problems), *_time_zone()]
    if as_json:
        print_json([asdict(c) for c in checks])
    else:
        for c in checks:
            word = {"ok": "ok", "warn": "warn", "problem": "FAIL"}[c.status]
            typer.echo(wrap(f"{colour(word, word.ljust(4))}  {c.check}: {c.detail}",
                            indent="      "))
            if c.fix:
                typer.echo(wrap(f"      fix: {c.fix}", indent="        "))
    if any(c.status == "problem" for c in checks):
        raise typer.Exit(1)
