"""How a run ended, decided once, and everything that follows from it in one place: the
run's record, its trace's last event, its exit code, its alert, the agent's failure-log
line, auto-pause, the heartbeat ping.

A run ends by a refusal before any session (paused, a held or stale lock, a slot already
run, the day's budget), by the session (the agent's `finish`, a guard, a failed tool, the
model API), or by what interrupted it (SIGTERM, a full state disk, a bug). Each is one
`Ending`; `conclude` maps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner.clock import iso, utcnow
from jobrunner.events import AlertEvent, Status, StopReason
from jobrunner.state.records import RunRecord

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job
    from jobrunner.config.project import Project
    from jobrunner.run.heartbeat import Pinger
    from jobrunner.run.tally import Tally
    from jobrunner.state import State
    from jobrunner.state.traces import Trace

EXIT_BY_STATUS = {
    Status.COMPLETED: errors.EXIT_OK,
    Status.SKIPPED: errors.EXIT_OK,
    Status.FAILED: errors.EXIT_FAILED,
    Status.PARTIAL: errors.EXIT_FAILED,
    Status.ABORTED: errors.EXIT_FAILED,
    Status.CRASHED: errors.EXIT_FAILED,
    Status.LIMIT: errors.EXIT_LIMIT,
    Status.NEEDS_APPROVAL: errors.EXIT_APPROVAL,
    Status.PAUSED: errors.EXIT_TEMPFAIL,
}
# Skips that mean "could not run now" (exit 75), not "another run has it" (exit 0).
NOT_NOW = {StopReason.LOCK_STALE, StopReason.CRASH_HOLD, StopReason.LOCK_ORPHANED,
           StopReason.MAX_COST_USD_PER_DAY}
# A partial run (the agent's own verdict: some of it was not done) exits 1 like a failure,
# and is alerted as one.
ALERT_BY_STATUS = {Status.ABORTED: AlertEvent.RUN_ABORTED, Status.FAILED: AlertEvent.RUN_FAILED,
                   Status.PARTIAL: AlertEvent.RUN_FAILED, Status.LIMIT: AlertEvent.RUN_LIMIT}
# Endings that are a lesson for the agent's memory (jobrunner writes the line itself).
LESSONS = {Status.ABORTED, Status.LIMIT, Status.CRASHED}
# Stops that are the operator's to fix (the key, its permissions, the model's name): they
# are recorded and alerted, but they are no lesson for the agent.
OPERATOR_STOPS = {"model_api_error:auth", "model_api_error:permission",
                  "model_api_error:not_found", StopReason.LOCK_LOST,
                  StopReason.STATE_UNWRITABLE}


@dataclass
class Ending:
    """How a run ended: its status, why (`reason` is a StopReason or
    `model_api_error:KIND`), a readable paragraph, and the session's tally if one ran."""

    status: Status
    reason: str
    detail: str
    tally: Tally | None = None
    failed_step: int | None = None
    # Said in the report: what happened around the run (a person edited the memory).
    notes: list[str] = field(default_factory=list)
    # Also said on stderr, even when the run completed: what went wrong keeping the run's
    # record (a memory or trace the disk refused).
    problems: list[str] = field(default_factory=list)

    def exit_code(self) -> int:
        if self.status == Status.SKIPPED and self.reason in NOT_NOW:
            return errors.EXIT_TEMPFAIL
        return EXIT_BY_STATUS.get(self.status, errors.EXIT_FAILED)

    def lesson(self) -> bool:
        """Whether the agent's failure log gets a line for it."""
        return self.status in LESSONS and self.reason not in OPERATOR_STOPS

    def not_done(self) -> list[str]:
        """The tools the session asked for and did not get run."""
        return [a.tool for a in self.tally.actions if a.outcome == "not_executed"] \
            if self.tally else []


@dataclass
class RunOutcome:
    """What `run_job` returns: enough for the CLI's output and exit code."""

    run_id: str
    job: str
    status: str
    exit_code: int
    stop_reason: str = ""
    report: str = ""
    problems: list[str] = field(default_factory=list)
    recorded: bool = True  # whether the state has the run's end (a full disk: not)

    def last_run(self) -> dict[str, Any]:
        """The run's end as the lock's release record carries it, for the next holder to
        record should the state have refused it."""
        record: dict[str, Any] = {"run_id": self.run_id, "status": self.status,
                                  "stop_reason": self.stop_reason,
                                  "exit_code": self.exit_code, "ended_at": iso(utcnow()),
                                  "recorded": self.recorded}
        if not self.recorded:
            record["report"] = self.report[:2000]
        return record


@dataclass
class RunContext:
    """One run as the runner carries it from step to step."""

    project: Project
    job: Job | None  # None until validated in full (a run recalled by its fingerprint)
    store: State
    run_id: str
    trigger: str
    slot: datetime | None
    now: datetime
    trace: Trace | None = None  # once the run is recorded `running`
    pinger: Pinger | None = None
    brief: JobBrief = None  # type: ignore[assignment] - the job's own unless given

    def __post_init__(self) -> None:
        if self.brief is None:
            if self.job is None:
                raise ValueError("a run needs its job or the job's brief")
            self.brief = self.job.brief

    @property
    def started(self) -> bool:
        """Whether the run got as far as its `running` record (a refusal did not)."""
        return self.trace is not None


def failure_line(job: Job, run_id: str, ending: Ending) -> str | None:
    """The line jobrunner itself adds to the agent's failure log for this ending, if it
    is a lesson: dated, what failed, at which step, what was not done."""
    if not ending.lesson():
        return None
    from jobrunner.memory.format import failure_line as line

    day = utcnow().astimezone(job.schedule().zone).date().isoformat()
    return line(day, run_id, f"{ending.status} ({ending.reason})", ending.failed_step,
                ending.detail, ending.not_done())


def conclude(run: RunContext, ending: Ending) -> RunOutcome:
    """Record, trace, alert and ping the end of a run, once. A state disk that refuses
    the trace or the record is reported, never raised: the lock's release record then
    carries the end for the next run to record."""
    from jobrunner.run.report import report_for

    # A refusal before the lock may have only the brief (all a refusal's record needs).
    job, store = run.job or run.brief, run.store
    problems = list(ending.problems)
    report = store.redactor.text(report_for(job, run.run_id, ending, store.redactor))
    notes = [*ending.notes, *problems]
    fields: dict[str, Any] = {"status": str(ending.status), "ended_at": iso(utcnow()),
                              "stop_reason": ending.reason, "exit_code": ending.exit_code()}
    tally = ending.tally
    if tally is not None:
        fields.update(
            steps=tally.steps, tool_calls=tally.tool_calls,
            input_tokens=tally.usage.prompt_tokens, output_tokens=tally.usage.output_tokens,
            cache_read_tokens=tally.usage.cache_read_input_tokens,
            cache_write_tokens=tally.usage.cache_creation_input_tokens,
            cost_usd=round(tally.cost_usd, 6),
            summary=tally.finish.summary if tally.finish else (tally.last_text or None))
    if run.trace is not None:  # first: should the state refuse the record, the trace has it
        run.trace.emit("run.end", status=ending.status, stop_reason=ending.reason,
                       report=report or None, exit_code=fields["exit_code"])
        run.trace.sync()
        if run.trace.incomplete:
            problems.append(run.trace.incomplete)
            notes.append(run.trace.incomplete)
    unsaid = [n for n in notes if n not in report]
    if unsaid:
        report = "\n".join([report, *unsaid]).strip()
    fields["report"] = report or None
    recorded = _record(run, fields)
    if not recorded:
        problems.append(f"the end of run {run.run_id} ({ending.status}) could not be "
                        "recorded; the next run records it")
        report = "\n".join([report, problems[-1]]).strip()
    event = ALERT_BY_STATUS.get(ending.status)
    if event:
        from jobrunner.alerts import outbox as alerts

        first = report.splitlines()[0] if report else \
            f"{job.name}: {ending.status} ({ending.reason})"
        alerts.emit(run.project, event, run.job or job.name, run.run_id, first,
                    {"status": ending.status, "stop_reason": ending.reason, "report": report},
                    cause=ending.reason)
    if run.started and (refused := _after_run(run, ending)):
        problems.append(refused)
        report = "\n".join([report, refused]).strip()
    if run.pinger is not None:
        run.pinger.finish(ending.status in (Status.COMPLETED, Status.NEEDS_APPROVAL),
                          report or fields.get("summary") or "")
    return RunOutcome(run.run_id, job.name, str(ending.status), fields["exit_code"],
                      ending.reason, report, problems, recorded)


def _record(run: RunContext, fields: dict[str, Any]) -> bool:
    """Update the run's `running` record, or write the whole record of a refusal."""
    import os

    from jobrunner.hosts import this_host

    try:
        if run.started:
            run.store.update_run(run.run_id, **fields)
        else:
            run.store.insert_run(RunRecord(
                id=run.run_id, job=run.brief.name, agent=run.brief.agent, trigger=run.trigger,
                slot=iso(run.slot), started_at=fields["ended_at"], pid=os.getpid(),
                host=this_host(), model=run.brief.model, **fields))
    except errors.StateError:
        if not run.started:
            raise  # a refusal the state cannot take: nothing else happened to tell
        return False
    return True


def _after_run(run: RunContext, ending: Ending) -> str | None:
    """Auto-pause and recovery alerts; what went wrong if the state refused them."""
    from jobrunner.run import recovery

    try:
        recovery.after_run(run.project, run.store, run.job, run.run_id, ending.status)
    except errors.StateError as exc:
        return f"the pause state could not be updated: {exc}"
    return None
