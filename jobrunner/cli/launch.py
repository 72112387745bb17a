"""`jobrunner run`, the command cron and the daemon call, without the typer application.

Building the application (typer, its vendored click, and the pydantic adapters typer
coerces each parameter through) costs several times a bare interpreter; a run skipped on
a held lock must cost little more than one. So the console entry point first offers its
arguments to `quick_main`, which takes exactly the plain forms of `run`:

    jobrunner [--home DIR] run NAME [--trigger T] [--slot ISO]
    jobrunner [--home DIR] run --due [NAME] [--trigger T]

and anything else (help, a typo, an option it does not know) to the typer application,
whose `run` command calls the same `execute`. One body, two parsers of the same grammar.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from jobrunner.errors import ConfigError, JobrunnerError

if TYPE_CHECKING:
    from jobrunner.config.project import Project
    from jobrunner.run.outcome import RunOutcome


@dataclass(frozen=True)
class RunArgs:
    """The arguments of one `jobrunner run`."""

    home: str | None = None
    name: str | None = None
    due: bool = False
    trigger: str = "manual"
    slot: str | None = None
    verbose: bool = False  # only through the typer application (`-v`)


_VALUED = {"--trigger": "trigger", "--slot": "slot"}


def parse(argv: list[str]) -> RunArgs | None:
    """The arguments when `argv` is a plain `run` command line; None for anything the
    typer application must see (it reports usage errors and prints help)."""
    values: dict[str, str | bool | None] = {}
    rest = list(argv)
    while rest and rest[0].startswith("--home"):
        key, eq, value = rest.pop(0).partition("=")
        if key != "--home" or (not eq and not rest):
            return None
        values["home"] = value if eq else rest.pop(0)
    if not rest or rest.pop(0) != "run":
        return None
    while rest:
        arg = rest.pop(0)
        if arg == "--due" and "due" not in values:
            values["due"] = True
        elif arg.startswith("--"):
            key, eq, value = arg.partition("=")
            field = _VALUED.get(key)
            if field is None or field in values or (not eq and not rest):
                return None
            values[field] = value if eq else rest.pop(0)
        elif arg.startswith("-") or "name" in values:
            return None  # `-h`, `--`, a second name: the application's to report
        else:
            values["name"] = arg
    return RunArgs(**values)  # type: ignore[arg-type]


def quick_main(argv: list[str]) -> int | None:
    """Run a plain `run` command line and return its exit code, or None when `argv` is
    not one (the caller then hands it to the typer application)."""
    args = parse(argv)
    if args is None:
        return None
    from jobrunner.cli.output import report_error

    try:
        return execute(args)
    except JobrunnerError as exc:
        report_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C: the run is recorded; exit as typer would, quietly
        return 130


def execute(args: RunArgs) -> int:
    """One `jobrunner run`: the exit code; the report on stderr unless the run completed
    or was skipped. Raises JobrunnerError for a usage error found before any run."""
    from jobrunner.cli.output import report_error
    from jobrunner.config.project import Project
    from jobrunner.events import StopReason

    if not (args.due or args.name) or (args.due and args.slot):
        raise ConfigError("give a job NAME, or --due (optionally with NAME)")
    if args.due and args.verbose:
        raise ConfigError("-v follows one run: give NAME without --due (`jobrunner logs -f` "
                          "follows every run)")
    proj = Project.discover(Path(args.home) if args.home is not None else None)
    try:
        if args.due:
            from jobrunner.scheduling.due import run_due

            code = run_due(proj, [args.name] if args.name else None,
                           trigger="due" if args.trigger == "manual" else args.trigger)
        else:
            assert args.name is not None
            slot_time = _slot(args.slot) if args.slot else None
            outcome = _run_one(proj, args.name, args.trigger, slot_time, args.verbose)
            if outcome.report and (outcome.status not in ("completed", "skipped")
                                   or outcome.exit_code != 0 or outcome.problems):
                print(outcome.report, file=sys.stderr)
            elif outcome.stop_reason == StopReason.LOCK_HELD and (args.verbose
                                                                  or sys.stderr.isatty()):
                # A person at a terminal is told; cron (no terminal) stays silent.
                print(f"jobrunner: {args.name}: not run: {outcome.report}; it is still "
                      f"running (`jobrunner logs -f {args.name}` follows it)", file=sys.stderr)
            code = outcome.exit_code
    except JobrunnerError as exc:
        report_error(exc)
        code = exc.exit_code
    leave_nothing_waiting(code)
    return code


def _run_one(proj: Project, name: str, trigger: str, slot: datetime | None,
             verbose: bool) -> RunOutcome:
    """One run of `name`; with `verbose`, its steps go to stderr as they happen."""
    from jobrunner.run.runner import new_run_id, run_job

    if not verbose:
        return run_job(proj, name, trigger=trigger, slot=slot)
    from jobrunner.cli.logs import following

    run_id = new_run_id()
    with following(proj.store(), run_id,
                   lambda line: print(line, file=sys.stderr, flush=True)):
        return run_job(proj, name, trigger=trigger, slot=slot, run_id=run_id)


def leave_nothing_waiting(code: int) -> None:
    """The run has ended and is recorded: a thread or process a tool left, or an
    abandoned model call (its connection still open), must not keep the process (and
    cron, or the daemon) waiting for it."""
    if "jobrunner.tools.dispatch" not in sys.modules and "jobrunner.models" not in sys.modules:
        return  # no session ran in this process: nothing can be left running
    from jobrunner.models import abandoned_calls
    from jobrunner.tools.dispatch import left_running, real_exit

    if left_running() or abandoned_calls():
        sys.stdout.flush()
        sys.stderr.flush()
        real_exit(code)


def _slot(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--slot: {text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise ConfigError(f"--slot: {text!r} needs a UTC offset (e.g. 2026-11-23T07:00:00Z)")
    return moment
