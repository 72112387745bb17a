"""The one function that runs a job: validate → lock → memory → session → memory →
record → alerts → release. Every outcome is one branch and one status."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobrunner import errors
from jobrunner.clock import iso, utcnow
from jobrunner.config.jobfile import Job
from jobrunner.config.jobs import environment_problems, load_job
from jobrunner.config.project import Project
from jobrunner.locks.file import (
    Acquired,
    Busy,
    HeartbeatThread,
    RunLock,
    heartbeat_interval,
    held_by_live_run,
    holder_died,
    is_stale,
)
from jobrunner.redact import Redactor
from jobrunner.state import State
from jobrunner.state.records import RunRecord

EXIT_BY_STATUS = {
    "completed": errors.EXIT_OK,
    "skipped": errors.EXIT_OK,
    "failed": errors.EXIT_FAILED,
    "partial": errors.EXIT_FAILED,
    "aborted": errors.EXIT_FAILED,
    "crashed": errors.EXIT_FAILED,
    "limit": errors.EXIT_LIMIT,
    "needs_approval": errors.EXIT_APPROVAL,
    "paused": errors.EXIT_TEMPFAIL,
}
# A partial run (the agent's own verdict: some of it was not done) exits 1 like a failure,
# and is alerted as one.
ALERT_BY_STATUS = {"aborted": "run.aborted", "failed": "run.failed", "partial": "run.failed",
                   "limit": "run.limit"}


class Terminated(BaseException):
    """SIGTERM reached a run: unwind, record, release the lock."""


# Set while a SIGTERM may interrupt the run (from taking the lock to the end of the
# session); cleared once the session has ended, so the signal cannot land in the middle
# of writing the memory, the record and the alerts.
_TERM_ARMED = threading.Event()


@dataclass
class RunOutcome:
    run_id: str
    job: str
    status: str
    exit_code: int
    stop_reason: str = ""
    report: str = ""
    # What went wrong keeping the run's record (a full state disk): said on stderr even
    # when the run completed. `recorded`: whether the state database has the run's end.
    problems: list[str] = field(default_factory=list)
    recorded: bool = True

    def last_run(self) -> dict[str, Any]:
        """The run's end as the lock's release record carries it, for the next holder to
        record should the database have refused it."""
        record: dict[str, Any] = {"run_id": self.run_id, "status": self.status,
                                  "stop_reason": self.stop_reason,
                                  "exit_code": self.exit_code, "ended_at": iso(utcnow()),
                                  "recorded": self.recorded}
        if not self.recorded:
            record["report"] = self.report[:2000]
        return record


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and short: `20261121T080000-3f9a1c`."""
    moment = now or utcnow()
    return f"{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def locks_dir(project: Project):
    return project.state_dir / "locks"


def _day_start(job: Job, now: datetime) -> datetime:
    local = now.astimezone(job.schedule().zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _skip(store: State, job: Job, run_id: str, trigger: str, slot, reason: str,
          status: str = "skipped", report: str = "", exit_code: int | None = None) -> None:
    now = iso(utcnow())
    store.insert_run(RunRecord(
        id=run_id, job=job.name, agent=job.agent, status=status, trigger=trigger,
        slot=iso(slot), started_at=now or "", ended_at=now, pid=os.getpid(),
        host=socket.gethostname(), model=job.spec.model, stop_reason=reason, report=report,
        exit_code=EXIT_BY_STATUS.get(status, 0) if exit_code is None else exit_code,
    ))


def _not_now(store: State, job: Job, run_id: str, trigger: str, slot, reason: str,
             report: str, status: str = "skipped") -> RunOutcome:
    """Could not run now (paused, stale lock, crash on hold): recorded, exit 75."""
    _skip(store, job, run_id, trigger, slot, reason, status, report, errors.EXIT_TEMPFAIL)
    return RunOutcome(run_id, job.name, status, errors.EXIT_TEMPFAIL, reason, report)


def run_job(
    project: Project,
    name: str,
    trigger: str = "manual",
    slot: datetime | None = None,
    now: datetime | None = None,
) -> RunOutcome:
    """Run one session of job `name` now, under its lock. Raises ConfigError (nothing
    run or written) for a bad job; every other outcome is recorded and returned."""
    from jobrunner.run import pause
    job = load_job(project, name)
    missing = environment_problems(project, job)
    if missing:  # an operator's problem: nothing is recorded, paused or learned from it
        raise errors.ConfigError(missing)
    # A memory that is a symlink is refused like a bad job file: before anything is
    # recorded or any model is called.
    from jobrunner.memory.format import refuse_symlinks

    refuse_symlinks(project.memory_dir, job.agent)
    try:
        store = project.store()
    except errors.StateError as exc:
        raise errors.StateError(f"{job.name}: the run did not start: {exc}") from exc
    run_id = new_run_id(now)
    paused = pause.is_paused(store, job.name)
    if paused:
        return _not_now(store, job, run_id, trigger, slot, "paused",
                        f"jobrunner: {job.name}: paused since {paused.paused_at} "
                        f"({paused.reason}); `jobrunner resume {job.name}` lifts it",
                        status="paused")
    spent = store.cost_since(job.name, _day_start(job, now or utcnow()))
    if spent >= job.limits.max_cost_usd_per_day:
        # Not a failure: it must not count towards a pause, alert, or touch the memory.
        return _not_now(store, job, run_id, trigger, slot, "max_cost_usd_per_day",
                        f"jobrunner: {job.name}: not run: ${spent:.4f} spent today of "
                        f"max_cost_usd_per_day ${job.limits.max_cost_usd_per_day:.2f} "
                        f"({job.spec.timezone}); runs start again after midnight")
    lock = store.lock(f"job-{job.name}")
    got = lock.try_acquire()
    if isinstance(got, Busy) and not held_by_live_run(got.holder):
        got = lock.try_acquire(timeout=1.0)  # an instant's hold, not a run: wait it out
    if isinstance(got, Busy) and holder_died(got.holder):
        from jobrunner.run import recovery

        report = recovery.on_orphaned(project, store, job, lock, got.holder or {})
        return _not_now(store, job, run_id, trigger, slot, "lock_orphaned", "jobrunner: " + report)
    if isinstance(got, Busy):
        holder = got.holder or {}
        if not is_stale(holder, job.spec.lock.stale_after):
            _skip(store, job, run_id, trigger, slot,
                  f"lock held by run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')})")
            return RunOutcome(run_id, job.name, "skipped", errors.EXIT_OK, "lock_held")
        from jobrunner.run import recovery
        got = recovery.on_stale(project, store, job, lock, holder)
        if isinstance(got, Busy):
            return _not_now(store, job, run_id, trigger, slot, "lock_stale",
                            "jobrunner: " + recovery.stale_message(job, holder))
    assert isinstance(got, Acquired)
    previous_handler = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        if _TERM_ARMED.is_set():
            raise Terminated()
        # The session is over and its end is being recorded: finish that, then exit.

    # Only the main thread may set handlers; elsewhere (embedding) runs keep the default.
    _TERM_ARMED.set()
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, on_term)
    keep_meta = False
    outcome: RunOutcome | None = None
    try:
        from jobrunner.run import recovery
        if got.left_behind:
            recovery.handle_left_behind(project, store, lock, got.left_behind, job)
        recovery.settle_unrecorded(project, store, job, got.previous)
        crashed = lock.read_meta() or {}
        if crashed.get("state") == "crashed" and job.spec.lock.after_crash == "hold":
            keep_meta = True  # stays visible until `jobrunner unlock`
            return _not_now(store, job, run_id, trigger, slot, "crash_hold",
                            f"jobrunner: {job.name}: run {crashed.get('run_id')} crashed and "
                            'lock.after_crash = "hold"; `jobrunner unlock '
                            f'{job.name}` lets it run again')
        taken = store.slot_run(job.name, slot) if slot else None
        if taken:
            # Once per slot, whoever launches it (daemon, cron, --due, a second host's line).
            _skip(store, job, run_id, trigger, slot,
                  f"slot {iso(slot)} already run by run {taken.id} ({taken.trigger})")
            return RunOutcome(run_id, job.name, "skipped", errors.EXIT_OK, "slot_taken")
        try:
            lock.mark_held(run_id, job.name, trigger=trigger)
        except errors.StateError as exc:
            raise errors.StateError(f"{job.name}: the run did not start: {exc}") from exc
        beat = HeartbeatThread(lock, heartbeat_interval(job.spec.lock.stale_after)).start()
        from jobrunner.tools.dispatch import exit_guarded

        # Until the run is recorded, a tool's os._exit fails the call, not the process.
        # Tools open project files by relative path, wherever jobrunner was started
        # (cron starts in the home folder).
        with exit_guarded(), contextlib.chdir(project.root):
            try:
                outcome = _run_locked(project, store, job, run_id, trigger, slot,
                                      now or utcnow())
            finally:
                beat.stop()
            try:
                recovery.after_run(project, store, job, run_id, outcome.status)
            except errors.StateError as exc:
                outcome.problems.append(f"the pause state could not be updated: {exc}")
                outcome.report = "\n".join([outcome.report, outcome.problems[-1]]).strip()
        return outcome
    finally:
        lock.release(keep_meta=keep_meta,
                     last_run=outcome.last_run() if outcome is not None else None)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous_handler)
        if outcome is not None:
            from jobrunner.alerts import outbox as alerts
            alerts.deliver_pending(project)  # the outbox: retry what could not go earlier
            # OpenTelemetry export of the finished run (off unless configured; bounded).
            from jobrunner import otel_export

            otel_export.after_run(project, outcome.run_id)


def _run_locked(project: Project, store: State, job: Job, run_id: str, trigger: str,
                slot: datetime | None, now: datetime) -> RunOutcome:
    from jobrunner.effects.gate import CallGate, in_doubt_report
    from jobrunner.memory import format as mem
    from jobrunner.memory import store as memory_store
    from jobrunner.models import client_for
    from jobrunner.models.pricing import REPLAY_PRICE
    from jobrunner.run.session import Session, SessionResult
    from jobrunner.state.traces import Trace
    from jobrunner.tools.registry import job_tools

    # What can still refuse the job's configuration (a broken replay script) runs before
    # anything is recorded: exit 2 writes nothing. Tool files were loaded by load_job.
    tools = job_tools(project, job)
    client = client_for(job.spec.model, project.root)
    price = project.settings.prices().get(job.spec.model, REPLAY_PRICE)
    redactor = store.redactor
    try:
        store.insert_run(RunRecord(
            id=run_id, job=job.name, agent=job.agent, status="running", trigger=trigger,
            slot=iso(slot), started_at=iso(now) or "", pid=os.getpid(),
            host=socket.gethostname(), model=job.spec.model,
        ))
    except errors.StateError as exc:
        raise errors.StateError(f"{job.name}: the run did not start: {exc}") from exc
    trace = Trace(store, run_id)
    trace.emit("run.start", job=job.name, agent=job.agent, trigger=trigger, slot=iso(slot),
               model=job.spec.model, pid=os.getpid())
    from jobrunner.run.heartbeat import Pinger

    pinger = Pinger(job.spec.heartbeat_url, trace)
    pinger.start()
    started = time.monotonic()
    result: SessionResult | None = None
    memory_note = ""
    agent_lock = raw = None
    try:
        # The agent's lock is held for the whole session: see memory_store.
        agent_lock = memory_store.hold_agent(project, job.agent, run_id, job.name,
                                             job.limits.max_seconds, trace)
        if not isinstance(agent_lock, RunLock):
            return _finish(project, store, trace, job, run_id, "aborted", "agent_busy",
                           memory_store.busy_message(job.agent, agent_lock) + " for "
                           f"{job.limits.max_seconds:.0f}s; this run did not start", None,
                           redactor)
        started = time.monotonic()  # waiting for the agent is not the session's time
        memory_file = mem.memory_path(project.memory_dir, job.agent)
        try:
            memory, raw = mem.load(memory_file)
        except mem.MemoryFileError as exc:
            return _finish(project, store, trace, job, run_id, "aborted", "memory_unreadable",
                           str(exc), None, redactor)
        from jobrunner.effects import ledger
        from jobrunner.tools.api import ToolContext, set_context

        doubtful = ledger.in_doubt(store, job.name)
        if doubtful:  # never act again while an earlier side effect is unaccounted for
            trace.emit("ledger.in_doubt", keys=[e.key for e in doubtful])
            return _finish(project, store, trace, job, run_id, "aborted", "ledger_in_doubt",
                           in_doubt_report(job, run_id, doubtful), None, redactor)
        set_context(ToolContext(project.root, job.name, run_id, job.agent, project.settings,
                                policy=dict(job.spec.tool)))
        session = Session(
            job=job, run_id=run_id, client=client,
            tools=tools, memory=memory, price=price, trace=trace, redactor=redactor,
            started_monotonic=started, now=now, slot=slot,
            spent_today_usd=store.cost_since(job.name, _day_start(job, now)),
            call_gate=CallGate(project, job, store, run_id, now, slot, trace, redactor),
        )
        try:
            result = session.run()
        finally:
            _TERM_ARMED.clear()
        memory_note = memory_store.write_after_run(
            project, job, run_id, memory_file, memory, raw, result.state.memory_update,
            memory_store.run_failure_line(job, run_id, result), trace)
        report = "" if result.status == "completed" else build_report(job, run_id, result, redactor)
        marked = [a for a in result.state.actions if a.detail == "medium risk"]
        if marked and not report:  # medium-risk actions are named even in a quiet run
            report = "medium-risk actions: " + "; ".join(
                f"step {a.step}: {a.tool}: {a.outcome}" for a in marked)
        if memory_note:
            report = (report + "\n" + memory_note).strip()
        problems = [memory_note] if memory_store.NOT_WRITTEN in memory_note else []
        return _finish(project, store, trace, job, run_id, result.status, result.stop_reason,
                       report, result, redactor, problems)
    except Terminated:
        if raw is not None:
            memory_store.write_after_run(project, job, run_id, memory_file, memory, raw, None,
                                         memory_store.terminated_line(job, run_id), trace)
        return _finish(project, store, trace, job, run_id, "aborted", "terminated",
                       "the run was stopped by SIGTERM", result, redactor)
    except errors.StateError as exc:  # the state disk refused a write mid-run
        return _finish(project, store, trace, job, run_id, "aborted", "state_unwritable",
                       f"jobrunner: {job.name}: run {run_id} ended ABORTED: the state could "
                       f"not be written: {exc}", result, redactor)
    except Exception as exc:  # our own bug: recorded, reported, alerted
        trace.emit("run.internal_error", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())
        return _finish(project, store, trace, job, run_id, "aborted", "internal_error",
                       f"internal error: {type(exc).__name__}: {exc}", result, redactor)
    except BaseException as exc:  # Ctrl-C, SystemExit: record the run before unwinding
        _finish(project, store, trace, job, run_id, "aborted", "interrupted",
                f"the run was interrupted ({type(exc).__name__})", result, redactor)
        raise
    finally:
        if isinstance(agent_lock, RunLock):
            agent_lock.release()
        if job.spec.heartbeat_url:
            row = store.get_run(run_id)
            pinger.finish(row is not None and row.status in ("completed", "needs_approval"),
                          (row.report or row.summary or "") if row else "")
        trace.close()


def build_report(job: Job, run_id: str, result, redactor: Redactor) -> str:
    """The stop-and-report summary: what ended the run, where, and what was (not) done."""
    state = result.state
    lines = [
        f"jobrunner: {job.name}: run {run_id} ended {result.status.upper()} "
        f"({result.stop_reason})",
        f"  why: {result.detail}",
    ]
    if result.failed_step:
        lines.append(f"  at step: {result.failed_step}")
    if state.actions:
        lines.append("  tool calls:")
        for action in state.actions:
            import json

            # Redacted before it is cut short: a cut secret would escape the mask.
            args = json.dumps(redactor.data(action.args), default=str)
            if len(args) > 160:
                args = args[:157] + "..."
            detail = f" - {action.detail}" if action.detail else ""
            lines.append(f"    step {action.step}: {action.tool}({args}): {action.outcome}{detail}")
    if state.finish is not None:
        lines.append(f"  agent's summary: {state.finish.summary}")
        for label in ("established", "assumed", "unknown"):
            items = getattr(state.finish, label)
            if items:
                lines.append(f"  {label}: " + "; ".join(items))
    elif state.last_text:
        # The partial output: what the model last said before the run was stopped.
        text = " ".join(state.last_text.split())
        lines.append(f"  model's last words: {text[:400]}{'...' if len(text) > 400 else ''}")
    lines.append(
        f"  spent: {state.steps} steps, {state.tool_calls} tool calls, "
        f"{state.usage.prompt_tokens} input / {state.usage.output_tokens} output tokens, "
        f"${state.cost_usd:.4f}"
    )
    lines.append(f"  trace: jobrunner show {run_id}")
    return "\n".join(lines)


def _finish(project, store, trace, job, run_id, status, stop_reason, report, result,
            redactor, problems: list[str] | None = None) -> RunOutcome:
    """Trace the end of a run, record it, alert on it. A state disk that refuses the
    trace or the record is reported, never raised: the lock's release record then
    carries the end for the next run to record."""
    from jobrunner.alerts import outbox as alerts

    problems = list(problems or [])
    report = redactor.text(report)
    state = result.state if result else None
    fields: dict[str, Any] = {
        "status": status, "ended_at": iso(utcnow()), "stop_reason": stop_reason,
        "report": report or None, "exit_code": EXIT_BY_STATUS.get(status, 1),
    }
    if state is not None:
        fields.update(
            steps=state.steps, tool_calls=state.tool_calls,
            input_tokens=state.usage.prompt_tokens, output_tokens=state.usage.output_tokens,
            cache_read_tokens=state.usage.cache_read_input_tokens,
            cache_write_tokens=state.usage.cache_creation_input_tokens,
            cost_usd=round(state.cost_usd, 6),
            summary=state.finish.summary if state.finish else (state.last_text or None),
        )
        if stop_reason == "max_cost_usd_per_day" and state.steps == 0:
            fields["exit_code"] = errors.EXIT_TEMPFAIL  # the day's budget was spent already
    # The trace first: should the database refuse the record, the trace still has it.
    trace.emit("run.end", status=status, stop_reason=stop_reason, report=report or None,
               exit_code=fields["exit_code"])
    trace.sync()
    if trace.incomplete:
        problems.append(trace.incomplete)
    unsaid = [p for p in problems if p not in report]  # a memory note is in it already
    if unsaid:
        fields["report"] = report = "\n".join([report, *unsaid]).strip()
    recorded = True
    try:
        store.update_run(run_id, **fields)
    except errors.StateError as exc:
        recorded = False
        problems.append(f"the end of run {run_id} ({status}) could not be recorded: {exc}; "
                        "the next run records it")
        report = "\n".join([report, problems[-1]]).strip()
    event = ALERT_BY_STATUS.get(status)
    if event:
        first = report.splitlines()[0] if report else f"{job.name}: {status} ({stop_reason})"
        alerts.emit(project, event, job.name, run_id, first,
                    {"status": status, "stop_reason": stop_reason, "report": report},
                    cause=stop_reason, job_events=list(job.spec.alerts.events))
    return RunOutcome(run_id, job.name, status, fields["exit_code"], stop_reason, report,
                      problems, recorded)

