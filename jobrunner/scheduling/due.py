"""Which scheduled slots are due, and launching a run for one (`run --due`, the daemon).

A scheduled run always carries its slot (the fire time it is for) and runs in a child
process through `jobrunner run NAME --trigger T --slot ISO`, the one code path every
launcher shares; `run_job` then runs a slot once, whoever launched it.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from jobrunner import errors
from jobrunner.clock import iso, utcnow
from jobrunner.config.jobfile import Job
from jobrunner.config.jobs import load_all, load_job
from jobrunner.config.project import Project

log = logging.getLogger("jobrunner")
# cron starts a line within the minute; a slot is on time through its whole minute.
MIN_DUE_WINDOW = timedelta(seconds=60)
# Worst last: what `run --due` exits with when several runs end differently.
_SEVERITY = [errors.EXIT_OK, errors.EXIT_TEMPFAIL, errors.EXIT_APPROVAL, errors.EXIT_LIMIT,
             errors.EXIT_FAILED, errors.EXIT_USAGE]


def jobrunner_command() -> list[str]:
    """The absolute command that starts jobrunner with this same installation."""
    script = Path(sys.executable).parent / "jobrunner"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "jobrunner"]


def run_args(project: Project, name: str, trigger: str, slot: datetime) -> list[str]:
    """`--home ROOT run NAME --trigger T --slot ISO`: the arguments of a scheduled run."""
    return ["--home", str(project.root), "run", name, "--trigger", trigger,
            "--slot", iso(slot) or ""]


def run_command(project: Project, name: str, trigger: str, slot: datetime) -> list[str]:
    """`jobrunner --home ROOT run NAME --trigger T --slot ISO`, all paths absolute."""
    return [*jobrunner_command(), *run_args(project, name, trigger, slot)]


def worst(codes: list[int]) -> int:
    """The most severe of several exit codes (0 when there are none)."""
    def rank(code: int) -> int:
        return _SEVERITY.index(code) if code in _SEVERITY else _SEVERITY.index(1)

    return max(codes, key=rank, default=errors.EXIT_OK)


def due_window(job: Job) -> timedelta:
    return max(timedelta(seconds=job.spec.misfire_grace), MIN_DUE_WINDOW)


@dataclass
class DueSlot:
    job: Job
    slot: datetime


def due_slots(project: Project, jobs: list[Job], now: datetime) -> list[DueSlot]:
    """Jobs whose latest slot came within their misfire grace and has not run yet."""
    store = project.store()
    due = []
    for job in jobs:
        slot = job.schedule().previous_at_or_before(now, due_window(job))
        if slot is not None and store.slot_run(job.name, slot) is None:
            due.append(DueSlot(job, slot))
    return due


def run_due(project: Project, names: list[str] | None = None, trigger: str = "due",
            now: datetime | None = None) -> int:
    """Run every due job (or only `names`), each in its own process, in parallel, after
    its jitter; return the worst exit code. Invalid job files are reported on stderr and
    make the exit code 2, without keeping the valid jobs from running."""
    if names:
        jobs, problems = [load_job(project, n) for n in names], []
    else:
        jobs, problems = load_all(project)
    for problem in problems:
        log.error("%s", problem)
    if problems:
        from jobrunner.alerts import outbox as alerts
        alerts.alert_invalid(project, problems)
    now = now or utcnow()
    due = due_slots(project, jobs, now)
    delays = sorted(((random.uniform(0, d.job.spec.jitter), d) for d in due),
                    key=lambda pair: pair[0])
    started = time.monotonic()
    children: list[tuple[str, subprocess.Popen]] = []
    for delay, item in delays:
        time.sleep(max(0.0, delay - (time.monotonic() - started)))
        # stdout/stderr are inherited: a failure report reaches cron's mail.
        proc = subprocess.Popen(run_command(project, item.job.name, trigger, item.slot),
                                stdin=subprocess.DEVNULL)
        children.append((item.job.name, proc))
    codes = [errors.EXIT_USAGE] if problems else []
    for name, proc in children:
        code = proc.wait()
        if code < 0:
            log.error("%s: run killed by signal %d", name, -code)
            code = errors.EXIT_FAILED
        codes.append(code)
    return worst(codes)
