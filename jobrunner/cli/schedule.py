"""Commands that run jobs on their schedules: daemon, cron."""

from __future__ import annotations

import sys

import typer

from jobrunner.cli.app import app, print_json, project, relative
from jobrunner.errors import ConfigError


@app.command()
def daemon(
    ctx: typer.Context,
    max_concurrent: int = typer.Option(4, "--max-concurrent", min=1,
                                       help="Most runs at once; later firings wait."),
    grace: float = typer.Option(30.0, "--grace", min=0,
                                help="Seconds running jobs get to stop after SIGTERM."),
    poll: float = typer.Option(2.0, "--poll", min=0.1, hidden=True),
    launch: str = typer.Option("fork", "--launch", help="How each run's process starts: "
                               "fork (from a fork server that has imported jobrunner once) "
                               "or exec (a fresh interpreter per run)."),
    systemd_unit: bool = typer.Option(False, "--systemd-unit",
                                      help="Print a systemd unit that runs the daemon, and exit."),
) -> None:
    """Run every job on its schedule, in the foreground; each run in its own process.

    Job files are reloaded when they change and on SIGHUP. SIGTERM (or Ctrl-C) stops
    scheduling, passes SIGTERM to running jobs, waits --grace seconds, exits 0.
    """
    if launch not in ("fork", "exec"):
        raise ConfigError(f"--launch: {launch!r}: give fork or exec")
    proj = project(ctx)
    if systemd_unit:
        from jobrunner.scheduling.daemon import systemd_unit as unit

        sys.stdout.write(unit(proj, max_concurrent, grace))
        return
    from jobrunner.scheduling.daemon import Daemon

    raise typer.Exit(Daemon(proj, max_concurrent=max_concurrent, grace=grace, poll=poll,
                            launch=launch).run())


@app.command()
def cron(
    ctx: typer.Context,
    install: bool = typer.Option(False, "--install",
                                 help="Write the lines into your crontab as a marked block."),
    uninstall: bool = typer.Option(False, "--uninstall",
                                   help="Remove this project's block from your crontab."),
    as_json: bool = typer.Option(False, "--json", help="JSON output (printing only)."),
) -> None:
    """Print the crontab lines that run the jobs, or install/uninstall them.

    Each line runs `run --due NAME`, which works out the slot itself and runs it once.
    A job whose time zone is not the system's gets a line that checks every minute.
    """
    from jobrunner.config.jobs import load_all
    from jobrunner.scheduling import crontab

    if install and uninstall:
        raise ConfigError("give --install or --uninstall, not both")
    proj = project(ctx)
    if uninstall:
        changed = crontab.update(proj, None)
        typer.echo("removed the jobrunner block for " + str(proj.root) if changed
                   else "no jobrunner block for " + str(proj.root) + " in the crontab")
        return
    jobs, problems = load_all(proj)
    for problem in problems:
        typer.echo(relative(problem), err=True)
    if problems and install:
        raise ConfigError("crontab not changed: fix the job files above first")
    zone = crontab.system_timezone()
    lines = [crontab.line_for(proj, job, zone) for job in jobs]
    block = crontab.render_block(proj, lines)
    if install:
        changed = crontab.update(proj, block)
        typer.echo(("installed" if changed else "already installed, unchanged") +
                   f": {len(lines)} line(s) for {proj.root} in your crontab")
    elif as_json:
        print_json({"system_timezone": zone, "lines": [
            {"job": ln.job, "schedule": ln.expression, "command": ln.command, "note": ln.note}
            for ln in lines]})
    else:
        typer.echo(block, nl=False)
    if problems:
        raise typer.Exit(2)
