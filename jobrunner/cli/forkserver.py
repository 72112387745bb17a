"""`python -m jobrunner.cli.forkserver FD`: the daemon's fork server (see
`scheduling.forkserver`). It imports what a run uses, once, and forks one child per
run; each child runs the console entry point on the run's command line, as the
`jobrunner` script would, and exits as the interpreter would."""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
import threading
from pathlib import Path

# What a run imports, jobrunner's own modules and their libraries; never a project file.
PRELOAD = (
    "jobrunner.cli", "jobrunner.cli.launch", "jobrunner.cli.output",
    "jobrunner.config.checked", "jobrunner.config.jobs", "jobrunner.config.jobfile",
    "jobrunner.config.settings", "jobrunner.config.schedule", "jobrunner.formats.tomlpos",
    "jobrunner.run.runner", "jobrunner.run.session", "jobrunner.run.calls",
    "jobrunner.run.model_calls", "jobrunner.run.prompt", "jobrunner.run.guards",
    "jobrunner.run.recovery", "jobrunner.run.report", "jobrunner.run.heartbeat",
    "jobrunner.run.pause", "jobrunner.run.tally", "jobrunner.tools.registry",
    "jobrunner.tools.builtins", "jobrunner.tools.dispatch", "jobrunner.tools.api",
    "jobrunner.models", "jobrunner.models.replay", "jobrunner.models.anthropic_client",
    "jobrunner.models.pricing", "jobrunner.memory.format", "jobrunner.memory.store",
    "jobrunner.memory.shared", "jobrunner.effects.ledger", "jobrunner.effects.gate",
    "jobrunner.effects.approvals", "jobrunner.alerts.outbox", "jobrunner.alerts.channels",
    "jobrunner.state.sqlite", "jobrunner.state.traces", "jobrunner.locks.file",
    "jobrunner.otel_export", "jobrunner.scheduling.due", "pydantic", "anthropic",
)


def run_child(argv: list[str]) -> int:
    """In a forked child: `jobrunner ARGV` through the console entry point; its exit code
    once the interpreter's own ending (other threads joined, atexit) has run."""
    from jobrunner.cli import main
    from jobrunner.scheduling.due import jobrunner_command

    sys.argv = [jobrunner_command()[0], *argv]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 130
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # as the interpreter waits for non-daemon threads before it exits
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    return code


def _exit_code(value: object) -> int:
    """What the interpreter exits with for `sys.exit(value)`."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def main() -> int:
    from jobrunner.scheduling.forkserver import serve

    for name in PRELOAD:
        importlib.import_module(name)
    # The imported objects are never freed: leave them out of every child's collections,
    # so a child's garbage collector does not copy their pages (memory stays shared).
    gc.freeze()
    return serve(int(sys.argv[1]), run_child)


if __name__ == "__main__":
    # `python -m` put the daemon's working folder first on sys.path; the console script
    # has its own folder there instead (a project file must not shadow a library).
    sys.path[0] = str(Path(sys.executable).parent)
    sys.exit(main())
