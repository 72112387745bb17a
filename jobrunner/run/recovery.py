"""What a run does about a lock it cannot simply take, and what it concludes after it
ended: stale holders (alert once, or terminate), crashed holders, auto-pause, recovery."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner.clock import iso, utcnow
from jobrunner.hosts import pid_alive
from jobrunner.locks.file import Acquired, Busy, RunLock
from jobrunner.state import State
from jobrunner.state.records import RunRecord

if TYPE_CHECKING:
    from jobrunner.config.jobfile import Job
    from jobrunner.config.project import Project


def record_crash(project: Project, store: State, meta: dict[str, Any], job: Job | None = None,
                 reason: str = "process_died", how: str = "died without finishing") -> None:
    """A run died holding the lock (kill -9, OOM, reboot, or stopped as stale): record it
    `crashed`, note it in the agent's failure log, and alert `run.crashed` once for that run."""
    from jobrunner.alerts import outbox as alerts
    from jobrunner.config.jobs import agent_history
    from jobrunner.memory import store as memory_store
    run_id = meta.get("run_id")
    row = store.get_run(run_id) if run_id else None
    where = f"pid {meta.get('pid')} on {meta.get('host')}"
    if row and (row.status == "running" or reason != "process_died"):
        # Only one of the processes that find the same dead run records it (and notes it).
        changed = store.update_run(
            run_id, where_status="running" if reason == "process_died" else None,
            status="crashed", ended_at=row.ended_at or iso(utcnow()), stop_reason=reason,
            report=f"run {run_id} ({where}) {how}", exit_code=errors.EXIT_FAILED)
        if job is not None and changed and row.status == "running":
            keep = functools.partial(agent_history, project, job.agent)
            memory_store.note_crash(project, job, meta, keep, then=functools.partial(
                _share_note, project, store, job.agent, f"crash-{run_id}", keep))
    alerts.emit(project, "run.crashed", job if job is not None else meta.get("job"), run_id,
                f"run {run_id} of {meta.get('job')} {how} ({where})",
                {"lock": meta, "stop_reason": reason}, cause=run_id or "", once=True)


def _share_note(project: Project, store: State, agent: str, source: str, keep: Any,
                path: Any) -> None:
    """On a state several hosts share, the crash note is the memory's next version."""
    if store.shares_memory:
        from jobrunner.memory import shared

        shared.push(project, store, agent, path, source, keep)


def handle_left_behind(project: Project, store: State, lock: RunLock, meta: dict[str, Any],
                       job: Job) -> None:
    """We hold the OS lock and found a holder record left by a dead process. A run that
    ended (its end is in the database or in its trace) is no crash: its release could not
    rewrite the record (a full disk). Otherwise mark the record crashed first (so a
    launcher arriving meanwhile does not take the dead run for a live, stale one), then
    record the run and alert."""
    run_id = meta.get("run_id")
    row = store.get_run(run_id) if run_id else None
    if row and row.status != "running":
        return
    if row and settle(store, row, None):
        return
    lock.mark_crashed(meta)
    record_crash(project, store, meta, job)


def settle(store: State, row: RunRecord,
           last_run: dict[str, Any] | None) -> bool:
    """Record the end of a run left `running` in the database by a process that is gone,
    from the lock's release record (`last_run`) or else the run's own trace. Returns
    whether either knew how it ended."""

    fields: dict[str, Any] | None = None
    if last_run and last_run.get("run_id") == row.id:
        fields = {k: last_run.get(k) for k in ("status", "stop_reason", "exit_code",
                                                "ended_at", "report")}
    else:
        ends = [e for e in store.trace_read(row.id)
                if e.get("event") == "run.end" and e.get("status")]
        if ends:
            end = ends[-1]
            fields = {"status": end["status"], "stop_reason": end.get("stop_reason"),
                      "exit_code": end.get("exit_code"), "ended_at": end.get("at"),
                      "report": end.get("report")}
    if fields is None:
        return False
    note = "recorded afterwards: the state database refused it at the time"
    fields["report"] = "\n".join(filter(None, [fields.get("report"), note]))
    store.update_run(row.id, where_status="running", **fields)
    return True


def settle_unrecorded(store: State, job: Job,
                      previous: dict[str, Any] | None) -> None:
    """Under the job's lock no other run of it lives, so a run of it still `running` in
    the database ended without its end reaching it (a full disk). Record that end from the
    lock's release record or the run's trace; failing both, the outcome is unknown: it
    is recorded `aborted` (`end_not_recorded`), never taken for a crash."""
    # Called after handle_left_behind: a run left `held` is settled or crashed by now.
    last_run = (previous or {}).get("last_run")
    for row in store.running_runs(job.name):
        if settle(store, row, last_run):
            continue
        store.update_run(
            row.id, where_status="running", status="aborted",
            stop_reason="end_not_recorded", ended_at=iso(utcnow()),
            exit_code=errors.EXIT_FAILED,
            report=f"run {row.id} (pid {row.pid} on {row.host}) ended, but neither "
                   "the state database nor its lock's record could take how (a full or "
                   f"read-only state disk?); its outcome is unknown: see `jobrunner show "
                   f"{row.id}`")


def on_orphaned(project: Project, store: State, job: Job, lock: RunLock,
                holder: dict[str, Any]) -> str:
    """The lock's recorded holder died, yet its OS lock is still taken (by a process it
    left behind that took the lock itself, or one outside this pid namespace): record the
    run crashed and alert once; no run can start until that process lets go. Returns the
    report."""
    record_crash(project, store, holder, job,
                 how="died without finishing, and another process still holds its lock")
    return (f"{job.name}: run {holder.get('run_id')} (pid {holder.get('pid')}) died without "
            f"finishing, but its lock {lock.path} is still held by another process; this run "
            f"did not start (find that process with `fuser -v {lock.path}`)")


def stale_message(job: Job, holder: dict[str, Any]) -> str:
    elsewhere = holder.get("host") not in (None, socket.gethostname())
    return (f"{job.name}: lock held by run {holder.get('run_id')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}) since {holder.get('started_at')}, longer than "
            "lock.stale_after; this run did not start"
            + ("; that host's process cannot be signalled from here: stop it there"
               if elsewhere else ""))


def on_stale(project: Project, store: State, job: Job, lock: RunLock,
             holder: dict[str, Any]) -> Acquired | Busy:
    """A live holder past `stale_after`: alert `lock.stale` once for that holder; with
    `on_stale = "terminate"` on the same host, stop it (SIGTERM, then SIGKILL after
    `terminate_grace`), record it crashed and hand the lock over."""
    from jobrunner.alerts import outbox as alerts
    policy = job.spec.lock
    holder_id = holder.get("run_id") or ""
    elsewhere = holder.get("host") not in (None, socket.gethostname())
    terminate = policy.on_stale == "terminate" and not elsewhere
    action = "terminating it" if terminate else "not starting another run"
    if elsewhere:
        action += (f"; it runs on {holder.get('host')} and cannot be signalled from "
                   f"{socket.gethostname()}: stop it there")
    alerts.emit(project, "lock.stale", job, holder_id,
                f"{job.name}: run {holder_id} has held the lock since {holder.get('started_at')}, "
                f"past lock.stale_after; {action}",
                {"holder": holder, "on_stale": policy.on_stale}, cause=holder_id, once=True)
    if not terminate:
        return Busy(holder)
    got = _terminate(lock, holder, getattr(policy, "terminate_grace", 30.0))
    if isinstance(got, Acquired):
        record_crash(project, store, holder, job, reason="stale_terminated",
                     how="was stopped after holding the lock past lock.stale_after")
        return Acquired(None, got.previous)
    return got


def _terminate(lock: RunLock, holder: dict[str, Any], grace: float) -> Acquired | Busy:
    pid = holder.get("pid")
    current = lock.read_meta() or {}
    if not isinstance(pid, int) or pid == os.getpid() or current.get("run_id") != holder.get(
            "run_id"):
        return Busy(current)  # the holder changed meanwhile: not ours to stop
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):  # it died on its own meanwhile
                os.kill(pid, sig)
        got = lock.try_acquire(timeout=wait)
        if isinstance(got, Acquired):
            return got
    return Busy(holder)


def after_run(project: Project, store: State, job: Job, run_id: str, status: str) -> None:
    """Auto-pause after `pause_after` consecutive runs that did not complete (alert
    `job.paused` once); `run.recovered` on the first completion after failures."""
    from jobrunner.alerts import outbox as alerts
    from jobrunner.run import pause
    if status in pause.FAILED:
        limit = job.spec.pause_after
        failures = pause.consecutive_failures(store, job.name, limit)
        reason = f"{failures} consecutive runs did not complete (pause_after = {limit})"
        if failures >= limit and pause.pause(store, job.name, reason, run_id):
            alerts.emit(project, "job.paused", job, run_id,
                        f"{job.name} paused: {reason}; `jobrunner resume {job.name}` lifts it",
                        {"failures": failures, "pause_after": limit}, cause=run_id)
    elif status == "completed":
        previous = pause.recent_outcomes(store, job.name, 2, since_resume=False)
        if len(previous) == 2 and previous[1] in pause.FAILED:
            alerts.emit(project, "run.recovered", job, run_id,
                        f"{job.name} completed again after failed runs",
                        {"previous_status": previous[1]}, cause=run_id)
