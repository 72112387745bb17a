"""The part of a run spent holding its agent: the memory loaded, the ledger checked, the
job's tools resolved (its MCP servers started), the session, the memory rewritten. Its
caller, `runner.run_job`, holds the job's lock around it."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner.config.jobs import agent_history
from jobrunner.events import Status, StopReason
from jobrunner.run.ending import Ending
from jobrunner.run.outcome import RunContext, failure_line

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job


class Terminated(BaseException):
    """SIGTERM reached a run (or its lock was lost): unwind, record, release the lock."""

    def __init__(self, reason: str = StopReason.TERMINATED,
                 detail: str = "the run was stopped by SIGTERM") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Set while a SIGTERM may interrupt the run (from taking the lock to the end of the
# session); cleared once the session has ended, so the signal cannot land in the middle
# of writing the memory, the record and the alerts.
TERM_ARMED = threading.Event()
# Why the run's own heartbeat stopped it (its lock was lost), for the SIGTERM it sends.
LOST: list[str] = []


def day_start(job: Job | JobBrief, now: datetime) -> datetime:
    """Midnight of `now`'s day in the job's time zone (the day budget's day)."""
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(job.brief.timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def with_agent(run: RunContext, client: Any, price: Any,
               helpers: dict[str, Any] | None = None) -> Ending:
    """The session, holding the agent's lock, from its memory to its memory's rewrite;
    the MCP servers the job uses run for as long as the session, and not a moment more."""
    from jobrunner.effects import ledger
    from jobrunner.memory import format as mem
    from jobrunner.memory import shared as memory_shared
    from jobrunner.memory import store as memory_store
    from jobrunner.run.report import in_doubt_report
    from jobrunner.tools.api import ToolContext, set_context
    from jobrunner.tools.mcp_tools import McpServers

    project, job, store, trace = run.project, run.job, run.store, run.trace
    assert trace is not None
    held = memory_store.hold_agent(project, job.agent, run.run_id, job.name,
                                   job.limits.max_seconds, trace)
    if isinstance(held, dict):
        return Ending(Status.ABORTED, StopReason.AGENT_BUSY,
                      memory_store.busy_message(job.agent, held) + " for "
                      f"{job.limits.max_seconds:.0f}s; this run did not start")
    try:
        started = time.monotonic()  # waiting for the agent is not the session's time
        path = mem.memory_path(project.memory_dir, job.agent)
        keep = functools.partial(agent_history, project, job.agent)
        shared = store.shares_memory  # several hosts: MEMORY.md is a view of the state's
        pulled = memory_shared.pull(project, store, job.agent, path, keep) if shared else ""
        try:
            memory, raw = mem.load(path)
        except mem.MemoryFileError as exc:
            return Ending(Status.ABORTED, StopReason.MEMORY_UNREADABLE, str(exc))
        doubtful = ledger.in_doubt(store, job.name)
        if doubtful:  # never act again while an earlier side effect is unaccounted for
            trace.emit("ledger.in_doubt", keys=[e.key for e in doubtful])
            return Ending(Status.ABORTED, StopReason.LEDGER_IN_DOUBT,
                          in_doubt_report(job, run.run_id, doubtful))
        set_context(ToolContext(project.root, job.name, run.run_id, job.agent,
                                project.settings, policy=dict(job.spec.tool)))
        with McpServers(project.root, project.settings.mcp, emit=trace.emit) as servers:
            tools = _tools(run, servers, started + job.limits.max_seconds)
            if isinstance(tools, Ending):
                return tools
            ending = _converse(run, _Agent(memory, raw, path, started), tools, client, price,
                               helpers or {})
        pushed = memory_shared.push(project, store, job.agent, path, run.run_id, keep) \
            if shared else ""
        ending.notes.extend(note for note in (pulled, pushed) if note)
        return ending
    finally:
        held.release()


@dataclass
class _Agent:
    """The agent's memory as the session found it, and when the session's time began."""

    memory: Any
    raw: str
    path: Any
    started: float


def _tools(run: RunContext, servers: Any, deadline: float) -> dict[str, Any] | Ending:
    """The job's tools for this run; the MCP servers it uses are started and listed now,
    so one that cannot be used stops the run before the model is asked anything."""
    from jobrunner.run.report import mcp_failure_report
    from jobrunner.tools.mcp_config import McpServerError
    from jobrunner.tools.registry import job_tools

    try:
        return job_tools(run.project, run.job, servers, deadline)
    except (McpServerError, errors.ConfigError) as exc:
        return Ending(Status.ABORTED, StopReason.MCP_SERVER_FAILED,
                      mcp_failure_report(run.job, run.run_id, exc, run.project.settings.mcp))


def _converse(run: RunContext, agent: _Agent, tools: dict[str, Any], client: Any,
              price: Any, helpers: dict[str, Any]) -> Ending:
    """The session itself, then the memory's rewrite."""
    from jobrunner.effects.gate import LedgerGate
    from jobrunner.memory import store as memory_store
    from jobrunner.run import compensation
    from jobrunner.run.session import Session
    from jobrunner.tools.registry import undo_tools

    project, job, store, trace = run.project, run.job, run.store, run.trace
    assert trace is not None
    session = Session(
        job=job, run_id=run.run_id, client=client, tools=tools, memory=agent.memory,
        price=price, trace=trace, redactor=store.redactor, started_monotonic=agent.started,
        now=run.now, slot=run.slot,
        spent_today_usd=store.cost_since(job.name, day_start(job, run.now)),
        gate=(run.gate or LedgerGate)(project, job, store, run.run_id, run.now, run.slot,
                                      trace),
        helpers=helpers)
    try:
        ending = session.run()
    except Terminated as stop:
        ending = Ending(Status.ABORTED, stop.reason,
                        "stopped by SIGTERM before it could finish"
                        if stop.reason == StopReason.TERMINATED else stop.detail,
                        session.tally)
    finally:
        TERM_ARMED.clear()
    # Undone before the memory and the record are written: they say what was undone.
    compensation.settle(job, store, run.run_id, {**tools, **undo_tools(project, job)},
                        ending, trace)
    stopped = ending.reason in (StopReason.TERMINATED, StopReason.LOCK_LOST)
    update = None if stopped else session.tally.memory_update
    note = memory_store.write_after_run(
        project, job, run.run_id, agent.path, agent.memory, agent.raw, update,
        failure_line(job, run.run_id, ending), trace,
        keep=functools.partial(agent_history, project, job.agent))
    if note:
        (ending.problems if memory_store.NOT_WRITTEN in note else ending.notes).append(note)
    return ending
