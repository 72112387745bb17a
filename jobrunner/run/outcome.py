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
from jobrunner.events import AlertEvent, Status
from jobrunner.run.ending import Ending
from jobrunner.state.records import RunRecord

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job
    from jobrunner.config.project import Project
    from jobrunner.effects.gate import GateFactory
    from jobrunner.run.heartbeat import Pinger
    from jobrunner.run.tally import Undo
    from jobrunner.state import State
    from jobrunner.state.traces import Trace

# A partial run (the agent's own verdict: some of it was not done) exits 1 like a failure,
# and is alerted as one.
ALERT_BY_STATUS = {Status.ABORTED: AlertEvent.RUN_ABORTED, Status.FAILED: AlertEvent.RUN_FAILED,
                   Status.PARTIAL: AlertEvent.RUN_FAILED, Status.LIMIT: AlertEvent.RUN_LIMIT}

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
    gate: GateFactory | None = None  # builds the session's call gate (runner's default)
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
    _alert(run, ending, report, recorded)
    if run.started and (refused := _after_run(run, ending)):
        problems.append(refused)
        report = "\n".join([report, refused]).strip()
    if run.pinger is not None:
        run.pinger.finish(ending.status in (Status.COMPLETED, Status.NEEDS_APPROVAL),
                          report or fields.get("summary") or "")
    return RunOutcome(run.run_id, job.name, str(ending.status), fields["exit_code"],
                      ending.reason, report, problems, recorded)


def _alert(run: RunContext, ending: Ending, report: str, recorded: bool) -> None:
    """The run's alerts: its status's, a cost spike's, each failed compensation's."""
    job = run.job
    event = ALERT_BY_STATUS.get(ending.status)
    if event is None and job is None:
        return  # a skip on a held lock: nothing to tell, and nothing imported to say it
    from jobrunner.alerts import outbox as alerts

    if event:
        first = report.splitlines()[0] if report else \
            f"{run.brief.name}: {ending.status} ({ending.reason})"
        # A refusal before the lock may have only the brief: the alert names the job.
        alerts.emit(run.project, event, job or run.brief.name, run.run_id, first,
                    {"status": ending.status, "stop_reason": ending.reason, "report": report},
                    cause=ending.reason)
    if job is None:
        return  # no session ran: no cost, no compensation
    if ending.tally is not None and recorded:
        _cost_spike(run, ending.tally.cost_usd)
    for undo in (u for u in ending.undone if not u.ok):
        alerts.emit(run.project, AlertEvent.RUN_COMPENSATION_FAILED, job, run.run_id,
                    f"{job.name}: run {run.run_id}: undoing {undo.effect.tool} (step "
                    f"{undo.effect.step}) with {undo.tool} failed: {undo.error}; manual "
                    "intervention required", _undo_details(undo), cause=undo.key)


SPIKE_BASELINE_RUNS = 10  # the median of this many completed runs is the job's usual cost
SPIKE_MIN_RUNS = 3  # ...once it has at least this many


def _cost_spike(run: RunContext, cost: float) -> None:
    """`run.cost_spike`, once, for a run that cost more than `alerts.cost_spike_factor`
    times the median of the job's last completed runs."""
    import statistics

    from jobrunner.alerts import outbox as alerts

    factor = alerts.alert_settings(run.project).cost_spike_factor
    if not factor:
        return
    try:
        costs = run.store.recent_costs(run.job.name, Status.COMPLETED, SPIKE_BASELINE_RUNS,
                                       run.run_id)
    except errors.StateError:
        return  # no history to compare with; the run's own end is recorded or reported
    if len(costs) < SPIKE_MIN_RUNS:
        return
    median = statistics.median(costs)
    if median <= 0 or cost <= factor * median:
        return
    job = run.job
    alerts.emit(run.project, AlertEvent.RUN_COST_SPIKE, job, run.run_id,
                f"{job.name}: run {run.run_id} cost ${cost:.4f}, {cost / median:.1f}x the "
                f"median ${median:.4f} of the job's last {len(costs)} completed runs "
                f"(alerts.cost_spike_factor = {factor:g})",
                {"cost_usd": round(cost, 6), "median_cost_usd": round(median, 6),
                 "baseline_runs": len(costs), "factor": factor},
                cause=run.run_id, once=True)


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


def _undo_details(undo: Undo) -> dict[str, Any]:
    """A failed compensation's alert details."""
    return {"tool": undo.effect.tool, "step": undo.effect.step, "args": undo.effect.args,
            "compensate": undo.tool, "key": undo.key, "error": undo.error}
