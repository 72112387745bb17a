"""Approvals: high-risk calls an agent proposed, waiting for a person.

A queued call keeps its exact arguments, the agent's stated reason and the ledger key it
was given in its run. `approve` executes it once, through the ledger, in a fresh process
context (the job, its tools, a ToolContext) and records who approved it, when, and how
it went; approving again executes nothing. `reject` records the refusal. A pending
approval expires after the job's `approval_ttl`: expiry is a refusal (default-deny).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobrunner.errors import JobrunnerError, NotFoundError
from jobrunner.store import Store, iso, utcnow

FIELDS = (
    "id", "job", "run_id", "tool", "args", "reason", "ledger_key", "status", "created_at",
    "expires_at", "decided_at", "decided_by", "note", "outcome", "result", "error",
)
# pending -> approving -> approved (outcome: ok, failed, in_doubt, already_done)
#         -> rejected | expired


class ApprovalError(JobrunnerError):
    """The approval cannot be acted on (already decided, expired, tool failed)."""


def os_user() -> str:
    """Who is at the keyboard, as the OS knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@dataclass
class Approval:
    id: str
    job: str
    run_id: str
    tool: str
    args: str
    reason: str
    ledger_key: str
    status: str
    created_at: str
    expires_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    note: str | None = None
    outcome: str | None = None
    result: str | None = None
    error: str | None = None

    @property
    def arguments(self) -> dict[str, Any]:
        return json.loads(self.args)

    def as_json(self, redactor: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in FIELDS}
        out["args"] = self.arguments
        out["result"] = json.loads(self.result) if self.result else None
        return redactor.data(out) if redactor else out


def _approval(row: Any) -> Approval:
    return Approval(**{k: row[k] for k in FIELDS})


def queue(store: Store, *, job: str, run_id: str, tool: str, args: dict[str, Any],
          reason: str, ledger_key: str, ttl_seconds: float,
          now: datetime | None = None) -> Approval:
    """Record a call for a person to approve; it expires `ttl_seconds` from now."""
    moment = now or utcnow()
    approval = Approval(
        id=secrets.token_hex(4), job=job, run_id=run_id, tool=tool,
        args=json.dumps(store.redactor.data(args), sort_keys=True, default=str),
        reason=store.redactor.text(reason),
        ledger_key=ledger_key, status="pending", created_at=iso(moment) or "",
        expires_at=iso(moment + timedelta(seconds=ttl_seconds)) or "",
    )
    with store.transaction() as conn:
        conn.execute(
            f"INSERT INTO approvals ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
            tuple(getattr(approval, k) for k in FIELDS))
    return approval


def _trace_decision(store: Store, approval: Approval, event: str, **fields: Any) -> None:
    """The decision goes into the trace of the run that queued the call. The approvals
    table is the record; a trace that cannot be written (full disk) is said on stderr and
    does not turn a decision already made into a failed command."""
    from jobrunner.state.traces import append_event

    try:
        append_event(store, approval.run_id, event, approval_id=approval.id,
                     tool=approval.tool, **fields)
    except OSError as exc:
        print(f"jobrunner: {event} {approval.id} is recorded, but could not be added to the "
              f"trace of run {approval.run_id}: {exc}", file=sys.stderr)


def expire_due(store: Store, now: datetime | None = None) -> int:
    """Turn pending approvals past their TTL into refusals; returns how many."""
    moment = iso(now or utcnow())
    with store.transaction() as conn:
        due = [_approval(r) for r in conn.execute(
            "SELECT * FROM approvals WHERE status = 'pending' AND expires_at <= ?",
            (moment,)).fetchall()]
        for approval in due:
            conn.execute(
                "UPDATE approvals SET status = 'expired', decided_at = ?, decided_by = 'ttl', "
                "note = 'expired before anyone approved it: denied' "
                "WHERE id = ? AND status = 'pending'",
                (moment, approval.id))
    for approval in due:
        _trace_decision(store, approval, "approval.expired", by="ttl",
                        expires_at=approval.expires_at)
    return len(due)


def pending_for_key(store: Store, ledger_key: str) -> Approval | None:
    """A live pending approval of the same call, so a run does not queue it twice."""
    expire_due(store)
    with store.connect() as conn:
        row = conn.execute(
            "SELECT * FROM approvals WHERE ledger_key = ? AND status IN ('pending', "
            "'approving') ORDER BY created_at DESC LIMIT 1", (ledger_key,)).fetchone()
    return _approval(row) if row else None


def get(store: Store, approval_id: str) -> Approval:
    """One approval by id (a unique prefix is enough)."""
    with store.connect() as conn:
        rows = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchall()
        if not rows:
            rows = conn.execute("SELECT * FROM approvals WHERE id LIKE ? LIMIT 2",
                                (approval_id + "%",)).fetchall()
    if len(rows) != 1:
        raise NotFoundError(f"no approval {approval_id!r} (see `jobrunner approvals`)")
    return _approval(rows[0])


def listing(store: Store, everything: bool = False, limit: int = 200) -> list[Approval]:
    """Pending approvals (or all, newest first), after expiring the overdue ones."""
    expire_due(store)
    query = "SELECT * FROM approvals"
    if not everything:
        query += " WHERE status IN ('pending', 'approving')"
    with store.connect() as conn:
        rows = conn.execute(query + " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                            (limit,)).fetchall()
    return [_approval(r) for r in rows]


def _decided(approval: Approval) -> str:
    who = f" by {approval.decided_by}" if approval.decided_by else ""
    when = f" at {approval.decided_at}" if approval.decided_at else ""
    outcome = f" (outcome: {approval.outcome})" if approval.outcome else ""
    return f"approval {approval.id} is already {approval.status}{who}{when}{outcome}"


def _check_pending(store: Store, approval: Approval, now: datetime) -> None:
    overdue = approval.status == "pending" and approval.expires_at <= (iso(now) or "")
    if overdue:
        expire_due(store, now)
    if overdue or approval.status == "expired":
        raise ApprovalError(f"approval {approval.id} expired at {approval.expires_at} and "
                            "is recorded as denied; it cannot be approved or rejected")
    if approval.status != "pending":
        raise ApprovalError(_decided(approval) + "; nothing done")


def reject(store: Store, approval_id: str, user: str, reason: str = "",
           now: datetime | None = None) -> Approval:
    """Record a person's refusal of a pending call (and trace it in the run that asked)."""
    moment = now or utcnow()
    approval = get(store, approval_id)
    _check_pending(store, approval, moment)
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE approvals SET status = 'rejected', decided_at = ?, decided_by = ?, "
            "note = ? WHERE id = ? AND status = 'pending'",
            (iso(moment), user, reason or None, approval.id)).rowcount
    if not changed:
        raise ApprovalError(_decided(get(store, approval.id)) + "; nothing done")
    _trace_decision(store, approval, "approval.rejected", by=user, reason=reason or None)
    return get(store, approval.id)


def approve(project: Any, approval_id: str, user: str,
            now: datetime | None = None) -> Approval:
    """Execute an approved call exactly once, through the ledger, and record it."""
    from jobrunner.config.jobs import load_job
    from jobrunner.effects import ledger
    from jobrunner.tools import dispatch
    from jobrunner.tools.api import ToolContext, set_context
    from jobrunner.tools.registry import job_tools

    moment = now or utcnow()
    project.load_env()
    store = project.store()
    approval = get(store, approval_id)
    _check_pending(store, approval, moment)
    job = load_job(project, approval.job)
    tools = job_tools(project, job)
    spec = tools.get(approval.tool)
    if spec is None or approval.tool not in job.spec.tools:
        raise ApprovalError(f"job {job.name} no longer lists tool {approval.tool!r}; "
                            "approval left pending")
    # The recorded arguments are what runs, and the store redacted them when the call was
    # queued: a secret in them runs as [REDACTED]. That is the safe choice: the model never
    # saw a secret (tool output to it is redacted), so a call carrying one carries a leak.
    args, problem = dispatch.validate_args(spec, approval.arguments)
    if problem or args is None:
        raise ApprovalError(f"the recorded arguments no longer fit {spec.name}: {problem}")
    with store.transaction() as conn:
        claimed = conn.execute(
            "UPDATE approvals SET status = 'approving', decided_at = ?, decided_by = ? "
            "WHERE id = ? AND status = 'pending'", (iso(moment), user, approval.id)).rowcount
    if not claimed:
        raise ApprovalError(_decided(get(store, approval.id)) + "; nothing done")
    set_context(ToolContext(project.root, job.name, approval.run_id, job.agent,
                            project.settings, policy=dict(job.spec.tool)))
    redactor = store.redactor
    with contextlib.chdir(project.root):  # the tool's working directory, as in a run
        claim, outcome = ledger.call(
            store, approval.ledger_key, job=job.name, tool=spec.name,
            args=args, run_id=approval.run_id, approval_id=approval.id,
            execute=lambda: dispatch.execute(spec, args, spec.timeout, spec.retries),
        )
    if isinstance(claim, ledger.Blocked):
        with store.transaction() as conn:
            conn.execute("UPDATE approvals SET status = 'pending', decided_at = NULL, "
                         "decided_by = NULL WHERE id = ?", (approval.id,))
        raise ApprovalError(
            f"the call's ledger entry is in doubt ({claim.entry.describe()}); resolve it "
            f"first: jobrunner ledger resolve '{claim.entry.key}' --done|--not-done")
    if isinstance(claim, ledger.AlreadyDone):
        fields = {"outcome": "already_done", "result": claim.entry.result,
                  "note": f"already done under key {claim.entry.key!r} by run "
                          f"{claim.entry.run_id}; not executed again"}
    else:
        fields = {
            "outcome": "ok" if outcome.ok else claim.entry.status,
            "result": ledger.result_text(redactor.data(outcome.data))
            if outcome.ok else None,
            "error": redactor.text(outcome.error) if outcome.error else None,
        }
    assignments = ", ".join(f"{k} = ?" for k in fields)
    with store.transaction() as conn:
        conn.execute(f"UPDATE approvals SET status = 'approved', {assignments} WHERE id = ?",
                     (*fields.values(), approval.id))
    _trace_decision(store, approval, "approval.approved", by=user, args=args, **fields)
    return get(store, approval.id)
