"""The call gate: what stands between the session and a tool with effects.

For each validated call the session sends the gate a `CallRequest` and acts on the
decision it gets back. The gate applies the tool's policy as the job tightened it:
  - `high` risk, or `after_untrusted = "approve"` once untrusted content entered the
    session: `Queued` for approval with its arguments and the agent's stated reason,
    `approval.pending` alerted, the model told; never executed by the agent;
  - a side effect: `Called` through the ledger (intent before, outcome after); a key
    already done returns its recorded result, a key in doubt stops the run;
  - `medium` risk: runs, marked in the trace;
  - anything else: `Proceed`, the session calls the tool itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from jobrunner.effects import ledger
from jobrunner.events import StopReason
from jobrunner.state.records import Entry
from jobrunner.tools import dispatch
from jobrunner.tools.api import ToolSpec

if TYPE_CHECKING:
    from jobrunner.config.jobfile import Job
    from jobrunner.config.project import Project
    from jobrunner.state import State
    from jobrunner.state.traces import Trace

IN_DOUBT_HINT = ("It is never retried automatically. Say what happened: jobrunner ledger "
                 "resolve '{key}' --done (it happened) or --not-done (it did not)")


@dataclass(frozen=True)
class CallRequest:
    """A validated call, with what the gate needs to know of the run."""

    spec: ToolSpec
    args: dict[str, Any]
    call_id: str | None
    step: int
    untrusted: bool  # content from outside has entered the session
    waiting_for_approval: bool  # an earlier call is queued and the job stops after it
    reason: str  # the agent's words in the turn that made the call
    deadline: float  # time.monotonic() at which the run's time is up


@dataclass(frozen=True)
class Proceed:
    """Not the gate's business: the session calls the tool itself."""


@dataclass(frozen=True)
class Called:
    """The gate made the call (through the ledger), or answered it from the ledger."""

    outcome: dispatch.CallOutcome
    deduplicated: bool = False  # the recorded result of an earlier call, not a new one
    stop_reason: str | None = None  # a failure with a more precise reason (in doubt)
    key: str | None = None  # the ledger key the call was made under


@dataclass(frozen=True)
class Queued:
    """Waiting for a person's approval; not executed."""

    approval_id: str
    note: str


@dataclass(frozen=True)
class Refused:
    """Not executed and not a failure: the model is told why."""

    why: str


GateDecision = Proceed | Called | Queued | Refused


class CallGate(Protocol):
    """What the session asks before it calls a tool."""

    def __call__(self, request: CallRequest) -> GateDecision: ...


# What builds a run's gate: (project, job, state, run id, now, slot, trace) -> CallGate.
GateFactory = Callable[..., CallGate]


@dataclass
class LedgerGate:
    """The call gate of one run: ledger, approvals and risk marks."""

    project: Project
    job: Job
    store: State
    run_id: str
    now: datetime
    slot: datetime | None
    trace: Trace

    def __post_init__(self) -> None:
        if self.slot is None:
            self.slot = ledger.manual_slot(self.job.schedule(), self.now)

    def key(self, spec: ToolSpec, args: dict[str, Any]) -> str:
        return ledger.render_key(
            spec.key_template, job=self.job.name, tool=spec.name, args=args,
            run_id=self.run_id, now=self.now, slot=self.slot, zone=self.job.schedule().zone)

    def __call__(self, request: CallRequest) -> GateDecision:
        spec, args = request.spec, request.args
        if request.waiting_for_approval:
            return Refused("the run is waiting for approval of an earlier call; only "
                           "update_memory and finish remain")
        tainted = spec.after_untrusted == "approve" and request.untrusted
        needs_approval = spec.risk == "high" or tainted
        if spec.risk == "medium":
            self.trace.emit("tool.medium_risk", step=request.step, tool=spec.name, input=args)
        if not (spec.side_effect or needs_approval):
            return Proceed()
        key = self.key(spec, args)
        entry = ledger.get(self.store, key)
        if entry is not None and entry.status == "done":
            return self._already_done(spec, entry)
        if entry is not None and entry.status in ("intent", "in_doubt"):
            return self._in_doubt(spec, entry)
        if needs_approval:
            return self.queue(request, key, "untrusted content entered the session"
                              if tainted and spec.risk != "high" else f"{spec.name} is high risk")
        claim, outcome = ledger.call(
            self.store, key, job=self.job.name, tool=spec.name, args=args, run_id=self.run_id,
            execute=lambda: self.execute(request))
        if isinstance(claim, ledger.AlreadyDone):
            return self._already_done(spec, claim.entry)
        if isinstance(claim, ledger.Blocked):
            return self._in_doubt(spec, claim.entry)
        assert outcome is not None
        self.trace.emit("ledger.outcome", tool=spec.name, key=key, status=claim.entry.status,
                        attempt=claim.entry.attempts)
        if not outcome.ok and claim.entry.status == "in_doubt":
            outcome.error = (f"{outcome.error}; the outcome is in doubt (it may have acted), "
                             + IN_DOUBT_HINT.format(key=key))
        return Called(outcome, key=key)

    def execute(self, request: CallRequest) -> dispatch.CallOutcome:
        """Make the call itself, between the ledger's intent and its outcome (the seam a
        dry run replaces with a stand-in)."""
        spec = request.spec
        return dispatch.execute(
            spec, request.args, spec.timeout, spec.retries, request.deadline,
            on_retry=lambda n, o, d: self.trace.emit(
                "tool.retry", tool=spec.name, attempt=n, error=o.error, delay_s=round(d, 2)))

    def _already_done(self, spec: ToolSpec, entry: Entry) -> Called:
        self.trace.emit("ledger.deduplicated", tool=spec.name, key=entry.key,
                        done_by_run=entry.run_id)
        note = (f"Already done: this call (key {entry.key}) was made by run {entry.run_id} "
                f"at {entry.outcome_at or entry.intent_at}; it was not repeated. "
                "Recorded result follows.")
        return Called(dispatch.CallOutcome(ok=True, data={
            "already_done": True, "note": note, "result": entry.result_data()}),
            deduplicated=True)

    def _in_doubt(self, spec: ToolSpec, entry: Entry) -> Called:
        self.trace.emit("ledger.in_doubt", tool=spec.name, key=entry.key,
                        state=entry.state, intent_run=entry.run_id)
        if entry.state == "running":
            why = (f"{spec.name} key {entry.key!r} is being called right now by process "
                   f"{entry.pid} on {entry.host} (run {entry.run_id}); not called twice")
        else:
            why = f"{entry.describe()}. " + IN_DOUBT_HINT.format(key=entry.key)
        return Called(dispatch.CallOutcome(ok=False, error=why),
                      stop_reason=StopReason.LEDGER_IN_DOUBT)

    def queue(self, request: CallRequest, key: str, why: str) -> Queued:
        """Queue the call for a person's approval, alert, and say so."""
        from jobrunner.alerts import outbox as alerts
        from jobrunner.effects import approvals

        spec, args = request.spec, request.args
        existing = approvals.pending_for_key(self.store, key)
        if existing is not None:
            return Queued(existing.id, f"already queued as approval {existing.id}")
        reason = request.reason or "(the agent gave no reason)"
        approval = approvals.queue(
            self.store, job=self.job.name, run_id=self.run_id, tool=spec.name, args=args,
            reason=reason, ledger_key=key, ttl_seconds=self.job.spec.approval_ttl)
        self.trace.emit("approval.queued", approval_id=approval.id, tool=spec.name,
                        input=args, reason=reason, why=why, expires_at=approval.expires_at)
        # Redacted before it is cut short: a cut secret would escape the mask.
        shown = json.dumps(self.store.redactor.data(args), default=str)
        alerts.emit(
            self.project, "approval.pending", self.job, self.run_id,
            f"{self.job.name}: {spec.name}({shown[:120]}) waits for approval {approval.id} "
            f"({why}); run `jobrunner approve {approval.id}` or `jobrunner reject "
            f"{approval.id}` before {approval.expires_at}",
            {"approval_id": approval.id, "tool": spec.name, "args": args, "reason": reason,
             "why": why, "expires_at": approval.expires_at, "ledger_key": key})
        return Queued(approval.id, f"approval {approval.id}: {why}")
