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
import logging
import os
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobrunner.clock import iso, utcnow
from jobrunner.errors import JobrunnerError, NotFoundError, StateError
from jobrunner.state import State
from jobrunner.state.records import Approval

if TYPE_CHECKING:
    from jobrunner.config.project import Project

log = logging.getLogger("jobrunner")

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


def queue(store: State, *, job: str, run_id: str, tool: str, args: dict[str, Any],
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
    store.approval_insert(approval)
    return approval


def _trace_decision(store: State, approval: Approval, event: str, **fields: Any) -> None:
    """The decision goes into the trace of the run that queued the call. The approvals
    table is the record; a trace that cannot be written (full disk) is logged and does
    not turn a decision already made into a failed command."""
    from jobrunner.state.traces import append_event

    try:
        append_event(store, approval.run_id, event, approval_id=approval.id,
                     tool=approval.tool, **fields)
    except (OSError, StateError) as exc:
        log.warning("%s %s is recorded, but could not be added to the trace of run %s: %s",
                    event, approval.id, approval.run_id, exc)


def expire_due(store: State, now: datetime | None = None) -> int:
    """Turn pending approvals past their TTL into refusals; returns how many."""
    due = store.approvals_expire(iso(now or utcnow()) or "")
    for approval in due:
        _trace_decision(store, approval, "approval.expired", by="ttl",
                        expires_at=approval.expires_at)
    return len(due)


def pending_for_key(store: State, ledger_key: str) -> Approval | None:
    """A live pending approval of the same call, so a run does not queue it twice."""
    expire_due(store)
    return store.approval_pending_for(ledger_key)


def get(store: State, approval_id: str) -> Approval:
    """One approval by id (a unique prefix is enough)."""
    found = store.approvals_matching(approval_id)
    if len(found) != 1:
        raise NotFoundError(f"no approval {approval_id!r} (see `jobrunner approvals`)")
    return found[0]


def listing(store: State, everything: bool = False, limit: int = 200) -> list[Approval]:
    """Pending approvals (or all, newest first), after expiring the overdue ones."""
    expire_due(store)
    return store.approvals_list(everything, limit)


def _decided(approval: Approval) -> str:
    who = f" by {approval.decided_by}" if approval.decided_by else ""
    when = f" at {approval.decided_at}" if approval.decided_at else ""
    outcome = f" (outcome: {approval.outcome})" if approval.outcome else ""
    return f"approval {approval.id} is already {approval.status}{who}{when}{outcome}"


def _check_pending(store: State, approval: Approval, now: datetime) -> None:
    overdue = approval.status == "pending" and approval.expires_at <= (iso(now) or "")
    if overdue:
        expire_due(store, now)
    if overdue or approval.status == "expired":
        raise ApprovalError(f"approval {approval.id} expired at {approval.expires_at} and "
                            "is recorded as denied; it cannot be approved or rejected")
    if approval.status != "pending":
        raise ApprovalError(_decided(approval) + "; nothing done")


def reject(store: State, approval_id: str, user: str, reason: str = "",
           now: datetime | None = None) -> Approval:
    """Record a person's refusal of a pending call (and trace it in the run that asked)."""
    moment = now or utcnow()
    approval = get(store, approval_id)
    _check_pending(store, approval, moment)
    if not store.approval_decide(approval.id, "pending", "rejected", decided_at=iso(moment),
                                 decided_by=user, note=reason or None):
        raise ApprovalError(_decided(get(store, approval.id)) + "; nothing done")
    _trace_decision(store, approval, "approval.rejected", by=user, reason=reason or None)
    return get(store, approval.id)


def approve(project: Project, approval_id: str, user: str,
            now: datetime | None = None) -> Approval:
    """Execute an approved call exactly once, through the ledger, and record it. A call
    of an MCP tool starts its server for the call, and closes it after."""
    from jobrunner.config.jobs import load_job
    from jobrunner.state.traces import append_event
    from jobrunner.tools.mcp_config import McpServerError
    from jobrunner.tools.mcp_tools import McpServers, server_of
    from jobrunner.tools.registry import job_tools

    moment = now or utcnow()
    project.load_env()
    store = project.store()
    approval = get(store, approval_id)
    _check_pending(store, approval, moment)
    job = load_job(project, approval.job)
    python_tool = approval.tool in job.spec.tools
    server = None if python_tool else server_of(job, approval.tool)

    def emit(event: str, **fields: Any) -> None:
        try:
            append_event(store, approval.run_id, event, approval_id=approval.id, **fields)
        except (OSError, StateError) as exc:
            log.warning("%s of approval %s not traced: %s", event, approval.id, exc)

    with McpServers(project.root, project.settings.mcp, emit=emit,
                    only=[server] if server else []) as servers:
        try:
            tools = job_tools(project, job, servers)
        except McpServerError as exc:
            raise ApprovalError(f"{exc}; approval left pending") from exc
        spec = tools.get(approval.tool)
        if spec is None:
            raise ApprovalError(f"job {job.name} no longer lists tool {approval.tool!r}; "
                                "approval left pending")
        return _execute(project, store, approval, job, spec, user, moment)


def _execute(project: Project, store: State, approval: Approval, job: Any, spec: Any,
             user: str, moment: datetime) -> Approval:
    """The approved call, once, through the ledger; the approval records how it went."""
    from jobrunner.effects import ledger
    from jobrunner.tools import dispatch
    from jobrunner.tools.api import ToolContext, set_context

    # The recorded arguments are what runs, and the store redacted them when the call was
    # queued: a secret in them runs as [REDACTED]. That is the safe choice: the model never
    # saw a secret (tool output to it is redacted), so a call carrying one carries a leak.
    args, problem = dispatch.validate_args(spec, approval.arguments)
    if problem or args is None:
        raise ApprovalError(f"the recorded arguments no longer fit {spec.name}: {problem}")
    if not store.approval_decide(approval.id, "pending", "approving", decided_at=iso(moment),
                                 decided_by=user):
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
        store.approval_decide(approval.id, "approving", "pending", decided_at=None,
                              decided_by=None)
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
    store.approval_decide(approval.id, "approving", "approved", **fields)
    _trace_decision(store, approval, "approval.approved", by=user, args=args, **fields)
    return get(store, approval.id)
