"""The call gate: what stands between the session and a tool with effects.

For each validated call the session asks the gate first. The gate applies the tool's
policy as the job tightened it:
  - `high` risk, or `after_untrusted = "approve"` once untrusted content entered the
    session: queued for approval with its arguments and the agent's stated reason,
    `approval.pending` alerted, the model told; never executed by the agent;
  - a side effect: through the ledger (intent before, outcome after); a key already done
    returns its recorded result, a key in doubt stops the run;
  - `medium` risk: runs, marked in the trace;
  - anything else: the session calls the tool itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobrunner.effects import ledger
from jobrunner.tools import dispatch
from jobrunner.tools.api import ToolSpec

IN_DOUBT_HINT = ("It is never retried automatically. Say what happened: jobrunner ledger "
                 "resolve '{key}' --done (it happened) or --not-done (it did not)")


@dataclass
class GateOutcome(dispatch.CallOutcome):
    """A CallOutcome with what the gate decided instead of (or besides) calling."""

    queued: bool = False
    approval_id: str | None = None
    deduplicated: bool = False
    stop_reason: str | None = None  # set when a failure has a more precise reason
    refused: str | None = None  # not executed, not a failure: the model is told why


def in_doubt_report(job: Any, run_id: str, entries: list[ledger.Entry]) -> str:
    """The stop-and-report text of a run that found side effects in doubt."""
    lines = [f"jobrunner: {job.name}: run {run_id} ended ABORTED (ledger_in_doubt)",
             "  why: an earlier side effect may or may not have happened; the job will not "
             "run until an operator says which"]
    for entry in entries:
        lines.append(f"  in doubt: {entry.describe()}")
        lines.append(f"    resolve: jobrunner ledger resolve '{entry.key}' --done   "
                     "(it happened) or --not-done (it did not)")
    lines.append(f"  trace: jobrunner show {run_id}")
    return "\n".join(lines)


def _turn_text(session: Any) -> str:
    """The text of the model turn that made the call: the agent's stated reason."""
    last = session.messages[-1] if session.messages else {}
    content = last.get("content") if last.get("role") == "assistant" else None
    texts = [b.get("text", "") for b in content or [] if b.get("type") == "text"]
    return "\n".join(t for t in texts if t.strip()).strip()


@dataclass
class CallGate:
    """The `Session.call_gate` of one run."""

    project: Any
    job: Any
    store: Any
    run_id: str
    now: datetime
    slot: datetime | None
    trace: Any
    redactor: Any

    def __post_init__(self) -> None:
        if self.slot is None:
            self.slot = ledger.manual_slot(self.job.schedule(), self.now)

    def key(self, spec: ToolSpec, args: dict[str, Any]) -> str:
        return ledger.render_key(
            spec.key_template, job=self.job.name, tool=spec.name, args=args,
            run_id=self.run_id, now=self.now, slot=self.slot, zone=self.job.schedule().zone)

    def __call__(self, spec: ToolSpec, args: dict[str, Any], tool_use_id: str | None,
                 session: Any) -> dispatch.CallOutcome | None:
        state = session.state
        if getattr(state, "needs_approval", False) and \
                not self.job.spec.continue_after_approval:
            return GateOutcome(ok=False, refused=(
                "the run is waiting for approval of an earlier call; only update_memory "
                "and finish remain"))
        tainted = spec.after_untrusted == "approve" and state.untrusted
        needs_approval = spec.risk == "high" or tainted
        if spec.risk == "medium":
            self.trace.emit("tool.medium_risk", step=state.steps, tool=spec.name, input=args)
        if not (spec.side_effect or needs_approval):
            return None
        key = self.key(spec, args)
        entry = ledger.get(self.store, key)
        if entry is not None and entry.status == "done":
            return self._already_done(spec, entry)
        if entry is not None and entry.status in ("intent", "in_doubt"):
            return self._in_doubt(spec, entry)
        if needs_approval:
            return self._queue(spec, args, key, session,
                               "untrusted content entered the session" if tainted
                               and spec.risk != "high" else f"{spec.name} is high risk")
        deadline = time.monotonic() + max(0.0, session.remaining_seconds())
        claim, outcome = ledger.call(
            self.store, key, job=self.job.name, tool=spec.name, args=args, run_id=self.run_id,
            execute=lambda: dispatch.execute(
                spec, args, spec.timeout, spec.retries, deadline,
                on_retry=lambda n, o, d: self.trace.emit(
                    "tool.retry", tool=spec.name, attempt=n, error=o.error,
                    delay_s=round(d, 2))),
        )
        if isinstance(claim, ledger.AlreadyDone):
            return self._already_done(spec, claim.entry)
        if isinstance(claim, ledger.Blocked):
            return self._in_doubt(spec, claim.entry)
        self.trace.emit("ledger.outcome", tool=spec.name, key=key, status=claim.entry.status,
                        attempt=claim.entry.attempts)
        if not outcome.ok and claim.entry.status == "in_doubt":
            outcome.error = (f"{outcome.error}; the outcome is in doubt (it may have acted), "
                             + IN_DOUBT_HINT.format(key=key))
        return outcome

    def _already_done(self, spec: ToolSpec, entry: ledger.Entry) -> GateOutcome:
        self.trace.emit("ledger.deduplicated", tool=spec.name, key=entry.key,
                        done_by_run=entry.run_id)
        note = (f"Already done: this call (key {entry.key}) was made by run {entry.run_id} "
                f"at {entry.outcome_at or entry.intent_at}; it was not repeated. "
                "Recorded result follows.")
        return GateOutcome(ok=True, deduplicated=True,
                           data={"already_done": True, "note": note,
                                 "result": entry.result_data()})

    def _in_doubt(self, spec: ToolSpec, entry: ledger.Entry) -> GateOutcome:
        self.trace.emit("ledger.in_doubt", tool=spec.name, key=entry.key,
                        state=entry.state, intent_run=entry.run_id)
        if entry.state == "running":
            why = (f"{spec.name} key {entry.key!r} is being called right now by process "
                   f"{entry.pid} on {entry.host} (run {entry.run_id}); not called twice")
        else:
            why = f"{entry.describe()}. " + IN_DOUBT_HINT.format(key=entry.key)
        return GateOutcome(ok=False, error=why, stop_reason="ledger_in_doubt")

    def _queue(self, spec: ToolSpec, args: dict[str, Any], key: str, session: Any,
               why: str) -> GateOutcome:
        from jobrunner.alerts import outbox as alerts
        from jobrunner.effects import approvals
        existing = approvals.pending_for_key(self.store, key)
        if existing is not None:
            return GateOutcome(ok=True, queued=True, approval_id=existing.id,
                               data=f"already queued as approval {existing.id}")
        reason = _turn_text(session) or "(the agent gave no reason)"
        # Recorded redacted (by the store): see approvals.approve on what that means.
        approval = approvals.queue(
            self.store, job=self.job.name, run_id=self.run_id, tool=spec.name, args=args,
            reason=reason, ledger_key=key, ttl_seconds=self.job.spec.approval_ttl)
        self.trace.emit("approval.queued", approval_id=approval.id, tool=spec.name,
                        input=args, reason=reason, why=why, expires_at=approval.expires_at)
        # Redacted before the preview is cut: a cut secret would escape the mask.
        shown = json.dumps(self.redactor.data(args), default=str)
        alerts.emit(
            self.project, "approval.pending", self.job.name, self.run_id,
            f"{self.job.name}: {spec.name}({shown[:120]}) waits for approval {approval.id} "
            f"({why}); run `jobrunner approve {approval.id}` or `jobrunner reject "
            f"{approval.id}` before {approval.expires_at}",
            {"approval_id": approval.id, "tool": spec.name, "args": args, "reason": reason,
             "why": why, "expires_at": approval.expires_at, "ledger_key": key})
        return GateOutcome(ok=True, queued=True, approval_id=approval.id,
                           data=f"approval {approval.id}: {why}")
