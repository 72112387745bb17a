"""Auto-pause: after `pause_after` consecutive runs that did not complete, a job is
paused until `jobrunner resume NAME`, so cron cannot burn money in a loop."""

from __future__ import annotations

from jobrunner.events import UNFINISHED, Status
from jobrunner.state import State
from jobrunner.state.records import Pause

# Statuses that count towards a pause; `completed` resets the count. Skipped, paused,
# running and needs_approval runs are neither (the job did not fail, nor succeed).
FAILED = tuple(str(s) for s in UNFINISHED)
COUNTED = (*FAILED, str(Status.COMPLETED))


def is_paused(store: State, job: str) -> Pause | None:
    """The pause record of `job`, or None when it is not paused."""
    record = store.pause_of(job)
    return record if record is not None and record.paused else None


def pause(store: State, job: str, reason: str, run_id: str | None) -> bool:
    """Pause `job`; True when it was not paused already (so `job.paused` is sent once)."""
    return store.pause(job, reason, run_id)


def resume(store: State, job: str) -> bool:
    """Lift the pause; True when the job was paused. Failures before now stop counting."""
    return store.resume(job)


def recent_outcomes(store: State, job: str, limit: int, since_resume: bool = True) -> list[str]:
    """Statuses of the job's last `limit` finished runs that count (newest first), since
    the last `resume` unless `since_resume` is False."""
    record = store.pause_of(job) if since_resume else None
    since = (record.resumed_at if record else None) or ""
    return store.statuses(job, COUNTED, since, limit)


def consecutive_failures(store: State, job: str, limit: int) -> int:
    """How many of the newest counted runs (up to `limit`) did not complete, in a row."""
    count = 0
    for status in recent_outcomes(store, job, limit):
        if status == Status.COMPLETED:
            break
        count += 1
    return count
