"""`jobrunner daemon`: every job on its schedule, in the foreground, each run in its own
process (`jobrunner run NAME --trigger daemon --slot ISO`, the code path cron uses),
forked by a fork server that has imported jobrunner once (`launcher`, `forkserver`), or
exec'd as a fresh interpreter with `--launch exec`.

APScheduler (3.x) does the timing with one trigger per job that asks our own
`Schedule` for the next fire time, so the daemon, `next`, cron and `run --due` share one
meaning of a schedule (crontab's day-of-week and OR rule, our DST rules). Jitter is
applied here, after the slot is known, so the slot a run records is the scheduled one.
The main thread supervises: it reloads job files when they change or on SIGHUP, and on
SIGTERM/SIGINT stops scheduling, passes SIGTERM to the running children, waits a grace
period, kills what is left and exits 0. Signal handlers only set flags.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from jobrunner import errors
from jobrunner.alerts import outbox as alerts
from jobrunner.clock import iso, utcnow
from jobrunner.config.jobfile import Job
from jobrunner.config.jobs import load_all
from jobrunner.config.project import Project
from jobrunner.config.schedule import Schedule, format_local
from jobrunner.locks.file import Busy, held_by_live_run
from jobrunner.scheduling.due import jobrunner_command, run_args
from jobrunner.scheduling.launcher import Child, Launcher
from jobrunner.scheduling.presence import daemon_lock


class ScheduleTrigger(BaseTrigger):
    """An APScheduler trigger that fires exactly when `Schedule` says.

    On first use it looks `catch_up` back, so a slot that passed while the daemon was
    down or starting still runs within the job's misfire grace (once: the firing checks
    whether the slot already ran)."""

    def __init__(self, schedule: Schedule, catch_up: timedelta = timedelta(0)) -> None:
        self.schedule = schedule
        self.catch_up = catch_up

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        after = previous_fire_time or now - self.catch_up - timedelta(microseconds=1)
        return self.schedule.next_after(after)

    def __str__(self) -> str:
        return f"schedule[{self.schedule.expression} {self.schedule.timezone}]"


# The daemon's one line per event (the CLI gives it its time and its stderr).
LOG = logging.getLogger("jobrunner.daemon")


def _watched(project: Project) -> dict[str, int]:
    """Modification times of everything a job's validity depends on."""
    paths = [project.settings_path, *project.jobs_dir.glob("*.toml"),
             *project.tools_dir.glob("*.py")]
    out = {}
    for path in paths:
        with contextlib.suppress(OSError):
            out[str(path)] = path.stat().st_mtime_ns
    return out


class Daemon:
    """The scheduler, its children, and the supervising loop."""

    def __init__(self, project: Project, max_concurrent: int = 4, grace: float = 30.0,
                 poll: float = 2.0, launch: str = "fork") -> None:
        self.project = project
        self.grace = grace
        self.poll = poll
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.children: dict[int, tuple[str, Child]] = {}  # by id(): the pid follows
        self.launcher = Launcher(launch)
        self.jobs: dict[str, Job] = {}
        self.keys: dict[str, str] = {}
        self.last_fired: dict[str, datetime] = {}  # job -> the latest slot it fired for
        self.fired_lock = threading.Lock()
        self.mtimes: dict[str, int] = {}
        self.problems: list[str] = []
        self.flags = {"term": False, "hup": False}
        self.scheduler: Any = None

    # -- signals: flags only -------------------------------------------------------------

    def _on_term(self, _signum: int, _frame: Any) -> None:
        self.flags["term"] = True

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.flags["hup"] = True

    # -- scheduling ----------------------------------------------------------------------

    def reload(self, why: str) -> None:
        """Read every job file again; (re)schedule what changed, drop what went away."""
        LOG.info(f"reading job files ({why})")
        self.mtimes = _watched(self.project)
        self.project = Project.discover(self.project.root)  # settings are cached per object
        try:
            jobs, problems = load_all(self.project)
        except errors.JobrunnerError as exc:  # jobrunner.toml itself is broken
            LOG.info(f"reload ({why}): {exc}; keeping the current schedule")
            if isinstance(exc, errors.ConfigError):
                alerts.alert_invalid(self.project, exc.problems)
            return
        if problems != self.problems:
            for problem in problems:
                LOG.info(f"not scheduled: {problem}")
            alerts.alert_invalid(self.project, problems)
        self.problems = problems
        fresh = {job.name: job for job in jobs}
        for name in sorted(set(self.jobs) - set(fresh)):
            self.scheduler.remove_job(name)
            self.keys.pop(name, None)
            LOG.info(f"unscheduled {name}")
        now = utcnow()
        # Known before they are scheduled: the scheduler already runs, and a catch-up
        # firing can come at once; fire() finding no job would drop it.
        self.jobs = fresh
        for name, job in sorted(fresh.items()):
            key = job.spec.model_dump_json()
            if self.keys.get(name) == key:
                continue
            self.scheduler.add_job(
                self.fire, args=[name], id=name,
                trigger=ScheduleTrigger(job.schedule(), timedelta(seconds=job.spec.misfire_grace)),
                name=name, replace_existing=True, coalesce=True,
                # A firing that finds the previous run still going is launched anyway: the
                # job's lock records it `skipped` (or alerts on a stale holder).
                max_instances=1000,
                misfire_grace_time=max(1, int(job.spec.misfire_grace)),
            )
            self.keys[name] = key
            nxt = job.schedule().next_after(now)
            LOG.info(f"scheduled {name}: {job.spec.schedule} ({job.spec.timezone}), next "
                f"{format_local(nxt, job.spec.timezone)}")

    def fire(self, name: str) -> None:
        """One firing (in a scheduler thread): find the slot, then hand the launch to a
        thread of its own, so a long run or a full concurrency cap never holds up the
        scheduler's workers and every other job's firing."""
        job = self.jobs.get(name)
        if job is None:
            return
        window = timedelta(seconds=job.spec.misfire_grace) + timedelta(seconds=60)
        slot = job.schedule().previous_at_or_before(utcnow(), window)
        if slot is None:
            LOG.info(f"{name}: fired with no slot in the last {window}; not run")
            return
        with self.fired_lock:  # not self.lock: launch threads hold that across a fork
            # Two firings can land on one slot: a catch-up at start that ran late enough
            # to see the next slot, then that slot's own firing, before the first child
            # has recorded its run. The child's once-per-slot check would skip it; not
            # launching it at all is cheaper, and keeps the log honest.
            last = self.last_fired.get(name)
            if last is not None and slot <= last:
                return
            self.last_fired[name] = slot
        if self._slot_ran(name, slot):
            return  # caught up at start or after a reload, but that slot already ran
        jitter = random.uniform(0, job.spec.jitter) if job.spec.jitter else 0.0
        LOG.info(f"firing {name} for slot {iso(slot)}"
            + (f" after a jitter of {jitter:.2f}s" if jitter else ""))
        threading.Thread(target=self._launch, args=(job, slot, window, jitter),
                         name=f"run-{name}", daemon=True).start()

    def _slot_ran(self, name: str, slot: datetime) -> bool:
        """Whether the slot already ran. A state that cannot be read is no reason to lose
        the firing: the run then claims its slot itself, once."""
        try:
            return self.project.store().slot_run(name, slot)
        except errors.StateError as exc:
            LOG.info(f"{name}: slot {iso(slot)}: the state could not be read ({exc}); "
                     "starting the run, which claims the slot itself")
            return False

    def _launch(self, job: Job, slot: datetime, window: timedelta, jitter: float) -> None:
        """Jitter, the concurrency cap, then a child `jobrunner run` and its exit."""
        try:
            self._launch_once(job, slot, window, jitter)
        finally:
            # A thread per firing: its database connection must not outlive it (200 jobs
            # a minute kept ~200 connections open, and their caches resident).
            self.project.store().close()

    def _launch_once(self, job: Job, slot: datetime, window: timedelta, jitter: float) -> None:
        name = job.name
        if jitter and self.stop.wait(jitter):
            return
        waited = jitter > 0
        while not self.slots.acquire(timeout=0 if not waited else 0.5):
            waited = True
            if self.stop.is_set():
                return
        try:
            # fire() found the slot not run; only a wait since can have changed that.
            if waited and self._slot_ran(name, slot):
                return  # it ran while this firing waited for a free run slot
            late = utcnow() - slot
            if late > window:
                self._missed(job, slot, f"waited {late.total_seconds():.0f}s for a free "
                             "run slot (--max-concurrent)")
                return
            with self.lock:
                if self.stop.is_set():
                    return
                child = self.launcher.spawn(run_args(self.project, name, "daemon", slot))
                self.children[id(child)] = (name, child)
            pid = child.wait_started()
            if pid is not None:
                LOG.info(f"started {name} for slot {iso(slot)} (pid {pid})")
                code = child.wait()
            with self.lock:
                self.children.pop(id(child), None)
            if pid is None:
                LOG.info(f"{name}: slot {iso(slot)}: the run could not start: {child.error}")
                return
            ended = ("ended, exit status not known (its fork server stopped)" if code is None
                     else f"ended: killed by signal {-code}" if code < 0
                     else f"ended: exit code {code}")
            LOG.info(f"{name} (pid {pid}) {ended}")
        finally:
            self.slots.release()

    def _missed(self, job: Job, slot: datetime, why: str) -> None:
        from jobrunner.alerts import outbox as alerts
        message = f"{job.name}: slot {iso(slot)} not run: {why}"
        LOG.info(message)
        alerts.emit(self.project, "job.missed", job, None, message,
                    {"slot": iso(slot), "reason": why}, cause=iso(slot) or "", once=True)

    def _on_missed(self, event: Any) -> None:
        job = self.jobs.get(event.job_id)
        if job is not None:
            self._missed(job, event.scheduled_run_time,
                         "the daemon was not running on time (beyond misfire_grace)")

    # -- the supervising loop ------------------------------------------------------------

    def run(self) -> int:
        """Schedule until SIGTERM/SIGINT; returns the exit code."""
        from apscheduler.events import EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        held = daemon_lock(self.project)
        got = held.try_acquire()
        if isinstance(got, Busy) and not held_by_live_run(got.holder):
            got = held.try_acquire(timeout=1.0)  # `status` testing it for an instant
        if isinstance(got, Busy):
            holder = got.holder or {}
            raise DaemonBusy(f"a daemon already runs this project (pid {holder.get('pid')} on "
                             f"{holder.get('host')}); not starting a second one")
        held.mark_held(f"daemon-{os.getpid()}", "*")
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                            format="%(asctime)s %(name)s: %(message)s")
        # BackgroundScheduler: the main thread stays free to act on the signal flags.
        self.scheduler = BackgroundScheduler(
            timezone="UTC", executors={"default": ThreadPoolExecutor(max_workers=100)})
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self.launcher.start()  # before the first firing: a fork server imports once
        self.scheduler.start()
        LOG.info(f"started (pid {os.getpid()}) for {self.project.root}")
        self.reload("start")
        try:
            while not self.flags["term"]:
                time.sleep(min(self.poll, 0.5))
                if self.flags["hup"]:
                    self.flags["hup"] = False
                    self.reload("SIGHUP")
                elif _watched(self.project) != self.mtimes:
                    self.reload("job files changed")
                self.launcher.check()  # jobrunner upgraded: later runs fork from its code
            self._shutdown()
        finally:
            self.launcher.close()
            held.release()
        return errors.EXIT_OK

    def _shutdown(self) -> None:
        LOG.info("stopping: no new runs")
        self.scheduler.shutdown(wait=False)
        with self.lock:
            self.stop.set()
            running = list(self.children.values())
        for name, child in running:
            pid = child.wait_started()
            if pid is None:
                continue
            LOG.info(f"passing SIGTERM to {name} (pid {pid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            with self.lock:
                if not self.children:
                    break
            time.sleep(0.1)
        with self.lock:
            left = list(self.children.values())
        for name, child in left:
            pid = child.wait_started()
            if pid is None:
                continue
            LOG.info(f"{name} (pid {pid}) still running after {self.grace:g}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            child.wait()
        LOG.info("stopped")


class DaemonBusy(errors.JobrunnerError):
    """Another daemon already schedules this project."""

    exit_code = errors.EXIT_TEMPFAIL


def systemd_unit(project: Project, max_concurrent: int, grace: float) -> str:
    """A systemd service unit that runs the daemon for this project."""
    import getpass
    import shlex

    argv = [*jobrunner_command(), "--home", str(project.root), "daemon",
            "--max-concurrent", str(max_concurrent), "--grace", f"{grace:g}"]
    slug = project.root.name or "project"
    return f"""\
# /etc/systemd/system/jobrunner-{slug}.service
# Install: save this file there, then `systemctl daemon-reload` and
# `systemctl enable --now jobrunner-{slug}`. Secrets: `env_file` in jobrunner.toml.
[Unit]
Description=jobrunner daemon for {project.root}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={getpass.getuser()}
WorkingDirectory={project.root}
ExecStart={" ".join(shlex.quote(a) for a in argv)}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM to the daemon only; it passes it on to running jobs and waits {grace:g}s.
KillMode=mixed
TimeoutStopSec={int(grace) + 15}
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
