"""`jobrunner check`: the watchdog for a second crontab line. It finds stale locks
(and stops their holders under `on_stale = "terminate"`), crashed runs, paused jobs,
degraded jobs (most recent runs unfinished, even when none paused them) and missed
schedules, alerts on each once, and retries the alert outbox. Time is passed in
(`now`) so the logic is testable."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobrunner.clock import iso, parse_iso, utcnow
from jobrunner.state import State

if TYPE_CHECKING:
    from jobrunner.config.project import Project

# How far back `check` looks for missed slots (and never before a job's first run).
LOOKBACK = timedelta(hours=24)
MAX_SLOTS = 20_000


@dataclass
class Finding:
    kind: str  # stale | crashed | held | paused | degraded | missed | undelivered | invalid
    job: str | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check(project: Project, now: datetime | None = None) -> list[Finding]:
    """Look at every job once; alert on what is wrong; return what was found."""
    from jobrunner.alerts import outbox as alerts
    from jobrunner.config.jobs import environment_problems, load_all
    from jobrunner.errors import ConfigError

    now = now or utcnow()
    store = project.store()
    jobs, problems = load_all(project)
    try:
        for job in jobs:  # what `run` would refuse: a missing key, the env_file's mode
            problems.extend(environment_problems(project, job))
    except ConfigError as exc:
        problems.extend(exc.problems)
    problems = list(dict.fromkeys(problems))
    alerts.alert_invalid(project, problems)
    findings = [Finding("invalid", None, p) for p in problems]
    for job in jobs:
        findings += _lock_findings(project, store, job, now)
        paused = _pause_findings(store, job)
        findings += paused or _degraded_findings(project, store, job)
        findings += _missed_findings(project, store, job, now)
    alerts.deliver_pending(project, force=True)  # the watchdog ignores channel backoff
    waiting = alerts.undelivered(project)
    if waiting:
        findings.append(Finding("undelivered", None,
                                f"{waiting} alert deliveries still waiting in the outbox "
                                "(see `jobrunner alerts`)", {"count": waiting}))
    return findings


def _lock_findings(project: Project, store: State, job: Any, now: datetime) -> list[Finding]:
    from jobrunner.alerts import outbox as alerts
    from jobrunner.locks.file import Acquired, holder_died, inspect
    from jobrunner.run import recovery

    lock = store.lock(f"job-{job.name}")
    state = inspect(lock, job.spec.lock.stale_after, now)
    meta = state.meta
    if state.state == "stale" and job.spec.lock.on_stale == "terminate":
        # The watchdog is what notices a hung run of a daily job within minutes; waiting
        # for the job's next tick to stop it could take a day.
        got = recovery.on_stale(project, store, job, lock, meta)
        if isinstance(got, Acquired):
            lock.release()
            return [Finding("stale", job.name, f"{job.name}: run {meta.get('run_id')} held "
                            "the lock past lock.stale_after; stopped it and recorded it crashed",
                            state.as_json())]
        where = ("it runs on another host, so it was not stopped"
                 if meta.get("host") != socket.gethostname() else "it could not be stopped")
        return [Finding("stale", job.name, f"{job.name}: run {meta.get('run_id')} has held "
                        f"the lock since {meta.get('started_at')}, past lock.stale_after; "
                        f"{where}", state.as_json())]
    if state.state == "stale":
        holder = meta.get("run_id") or ""
        alerts.emit(project, "lock.stale", job, holder,
                    f"{job.name}: run {holder} has held the lock since {meta.get('started_at')}, "
                    "past lock.stale_after", {"holder": meta}, cause=holder, once=True)
        return [Finding("stale", job.name, recovery.stale_message(job, meta), state.as_json())]
    if state.state != "crashed":
        return []
    got = lock.try_acquire()
    if not isinstance(got, Acquired) and holder_died(got.holder):
        got = lock.try_acquire(timeout=1.0)  # as a run does: an instant's hold, waited out
        if not isinstance(got, Acquired) and holder_died(got.holder):
            return [Finding("crashed", job.name, recovery.on_orphaned(
                project, store, job, lock, got.holder or {}), state.as_json())]
    if not isinstance(got, Acquired):
        return []  # a run started meanwhile; it handles what was left
    try:
        if got.left_behind:
            recovery.handle_left_behind(project, store, lock, got.left_behind, job)
            return [Finding("crashed", job.name, f"{job.name}: run {meta.get('run_id')} died "
                            "without finishing; recorded as crashed", state.as_json())]
        if job.spec.lock.after_crash == "hold":
            return [Finding("held", job.name, f"{job.name}: will not run after the crash of run "
                            f"{meta.get('run_id')} until `jobrunner unlock {job.name}`",
                            state.as_json())]
        return []
    finally:
        lock.release(keep_meta=True)


def _pause_findings(store: State, job: Any) -> list[Finding]:
    from jobrunner.run.pause import is_paused

    paused = is_paused(store, job.name)
    if not paused:
        return []
    return [Finding("paused", job.name, f"{job.name}: paused since {paused.paused_at} "
                    f"({paused.reason}); `jobrunner resume {job.name}` lifts it", paused.as_json())]


def _degraded_findings(project: Project, store: State, job: Any) -> list[Finding]:
    """More than half of the job's last `alerts.degraded_runs` runs did not complete:
    failing every other run never reaches `pause_after` in a row, and is still broken."""
    from jobrunner.alerts import outbox as alerts
    from jobrunner.events import UNFINISHED, AlertEvent, Status

    window = alerts.alert_settings(project).degraded_runs
    if not window:
        return []
    statuses = store.statuses(job.name, (Status.COMPLETED, *UNFINISHED), "", window)
    failed = sum(1 for s in statuses if s != Status.COMPLETED)
    if len(statuses) < window or failed * 2 <= window:
        return []
    message = (f"{job.name}: degraded: {failed} of its last {window} runs did not complete "
               f"(newest first: {', '.join(statuses)})")
    details = {"runs": window, "unfinished": failed, "statuses": statuses}
    # One cause: repeated each `alerts.cooldown` while it lasts, not each minute.
    alerts.emit(project, AlertEvent.JOB_DEGRADED, job, None, message, details,
                cause="degraded")
    return [Finding("degraded", job.name, message, details)]


def missed_slots(store: State, job: Any, now: datetime) -> list[datetime]:
    """Fire times more than `misfire_grace` ago with no run started for them, after the
    job's first run and after the last slot already alerted, within LOOKBACK."""
    first = store.first_started(job.name)
    if not first:
        return []  # never run: not set up yet, nothing to miss
    alerted = store.last_cause("job.missed", job.name)
    start = max(t for t in (parse_iso(first), parse_iso(alerted), now - LOOKBACK) if t)
    rows = store.runs_since(job.name, start - timedelta(days=1))
    started = sorted(t for t in (parse_iso(r.started_at) for r in rows) if t)
    slots_run = {r.slot for r in rows if r.slot}
    grace = timedelta(seconds=job.spec.misfire_grace)
    schedule = job.schedule()
    missed: list[datetime] = []
    for count, slot in enumerate(schedule.iter_after(start)):
        if slot > now - grace or count >= MAX_SLOTS:
            break
        until = max(schedule.next_after(slot), slot + grace)
        if iso(slot) in slots_run or any(slot <= t <= until for t in started):
            continue
        missed.append(slot)
    return missed


def _missed_findings(project: Project, store: State, job: Any, now: datetime) -> list[Finding]:
    from jobrunner.alerts import outbox as alerts
    missed = missed_slots(store, job, now)
    if not missed:
        return []
    last = iso(missed[-1]) or ""
    shown = ", ".join(iso(s) or "" for s in missed[:5]) + (" …" if len(missed) > 5 else "")
    message = (f"{job.name}: {len(missed)} scheduled run(s) did not start: {shown} "
               "(is its crontab line or the daemon running?)")
    alerts.emit(project, "job.missed", job, None, message,
                {"slots": [iso(s) for s in missed[:50]], "count": len(missed)},
                cause=last, once=True)
    return [Finding("missed", job.name, message, {"slots": [iso(s) for s in missed[:50]]})]
