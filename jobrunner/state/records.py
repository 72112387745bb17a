"""What the state holds, as typed records: runs, pauses, ledger entries, approvals."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from jobrunner.hosts import owner_alive

RUN_FIELDS = (
    "id", "job", "agent", "status", "trigger", "slot", "started_at", "ended_at", "pid", "host",
    "model", "steps", "tool_calls", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd", "stop_reason", "report", "summary", "exit_code",
)


@dataclass
class RunRecord:
    """One run, as `jobrunner runs` lists it."""

    id: str
    job: str
    agent: str
    status: str
    trigger: str
    started_at: str
    slot: str | None = None
    ended_at: str | None = None
    pid: int | None = None
    host: str | None = None
    model: str | None = None
    steps: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    stop_reason: str | None = None
    report: str | None = None
    summary: str | None = None
    exit_code: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as `runs --json` prints it."""
        out = {name: getattr(self, name) for name in RUN_FIELDS}
        out["cost_usd"] = round(float(self.cost_usd or 0), 6)
        return out


RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))


@dataclass
class Pause:
    """A job paused after repeated failures (until `jobrunner resume`)."""

    job: str
    paused: bool
    paused_at: str | None = None
    reason: str | None = None
    run_id: str | None = None
    resumed_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


LEDGER_FIELDS = (
    "key", "job", "tool", "args", "status", "run_id", "approval_id", "pid", "host",
    "attempts", "intent_at", "outcome_at", "result", "error", "resolved_by", "resolved_at",
)


@dataclass
class Entry:
    """One ledger row: a side-effecting call, keyed by its idempotency key.

    Statuses: intent (the call started), done, failed (the tool said nothing happened),
    in_doubt (it timed out or raised: it may have acted), not_done (an operator said it
    did not happen)."""

    key: str
    job: str
    tool: str
    args: str
    status: str
    run_id: str | None = None
    approval_id: str | None = None
    pid: int | None = None
    host: str | None = None
    attempts: int = 1
    intent_at: str = ""
    outcome_at: str | None = None
    result: str | None = None
    error: str | None = None
    resolved_by: str | None = None
    resolved_at: str | None = None
    run_status: str | None = None  # the status of the run that recorded the intent

    @property
    def state(self) -> str:
        """The status as an operator needs it: an `intent` whose run has ended, or whose
        process is gone, is `in_doubt` (a process on another host cannot be asked, but
        its run's record can: recorded crashed, it is in doubt); otherwise `running`."""
        if self.status == "intent":
            if self.run_status not in (None, "running"):
                return "in_doubt"
            return "running" if owner_alive(self.pid, self.host) else "in_doubt"
        return self.status

    def result_data(self) -> Any:
        return json.loads(self.result) if self.result else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in LEDGER_FIELDS}
        out["state"] = self.state
        out["args"] = json.loads(self.args) if self.args else {}
        out["result"] = self.result_data()
        return out

    def describe(self) -> str:
        """One line for a report."""
        why = self.error or "the process died between recording the intent and the outcome"
        return (f"{self.tool} key {self.key!r}: outcome unknown (run {self.run_id}, "
                f"started {self.intent_at}): {why}")


APPROVAL_FIELDS = (
    "id", "job", "run_id", "tool", "args", "reason", "ledger_key", "status", "created_at",
    "expires_at", "decided_at", "decided_by", "note", "outcome", "result", "error",
)


@dataclass
class Approval:
    """A high-risk call an agent proposed, waiting for a person.

    pending -> approving -> approved (outcome: ok, failed, in_doubt, already_done)
            -> rejected | expired"""

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

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in APPROVAL_FIELDS}
        out["args"] = self.arguments
        out["result"] = json.loads(self.result) if self.result else None
        return out


@dataclass
class Claimed:
    """The intent is recorded: the caller may call the tool now."""

    entry: Entry


@dataclass
class AlreadyDone:
    """The key is done: return its recorded result, do not call the tool."""

    entry: Entry


@dataclass
class Blocked:
    """The key's outcome is unknown (or another process is calling it right now)."""

    entry: Entry


@dataclass
class Delivery:
    """One (alert, channel) row of the outbox."""

    alert_id: int
    channel: str
    status: str  # pending, sending, delivered, abandoned
    attempts: int = 0
    last_error: str | None = None
    updated_at: str = ""
    delivered_at: str | None = None
    body: str = ""  # the alert's JSON, joined in for sending


@dataclass
class AlertRow:
    """One alert as the state keeps it (the JSON body is what channels receive)."""

    id: int
    event: str
    job: str | None
    run_id: str | None
    cause: str
    message: str
    at: str
    body: str
    repeats: int = 0
    last_repeat_at: str | None = None
