"""The idempotency ledger: every side-effecting call, keyed by its idempotency key.

The intent is recorded (and committed) before the tool is called and the outcome after,
so a process that dies in between leaves an entry whose outcome is unknown. Such an
entry is never retried automatically: runs stop on it until an operator says what
happened (`jobrunner ledger resolve KEY --done|--not-done`). A key already done returns
its recorded result instead of calling the tool again.

Entry statuses:
  intent    the call started; if its process is gone, the outcome is in doubt
  done      the call succeeded (or an operator said it happened)
  failed    the tool said it failed (`ToolResult(ok=False)`): nothing happened, a later
            run may try again
  in_doubt  the call timed out or raised: it may have acted
  not_done  an operator said an in-doubt call did not happen: a later run may try again
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobrunner.errors import JobrunnerError, NotFoundError
from jobrunner.store import Store, iso, utcnow

RETRYABLE = ("failed", "not_done")
# A recorded result is for people and for the note a repeated call gets (which is cut to
# max_tool_result_chars anyway): a bounded excerpt, not a 50 MB blob in every state copy.
RESULT_MAX_CHARS = 64_000
FIELDS = (
    "key", "job", "tool", "args", "status", "run_id", "approval_id", "pid", "host",
    "attempts", "intent_at", "outcome_at", "result", "error", "resolved_by", "resolved_at",
)


class LedgerError(JobrunnerError):
    """An operator asked for something the ledger cannot do (e.g. resolve a done key)."""


def result_text(data: Any) -> str:
    """A tool's result as stored: JSON, or a JSON note with an excerpt when it is large."""
    text = json.dumps(data, default=str)
    if len(text) <= RESULT_MAX_CHARS:
        return text
    return json.dumps({"excerpt": text[:RESULT_MAX_CHARS], "truncated": True,
                       "original_chars": len(text)})


def args_hash(args: dict[str, Any]) -> str:
    """A short stable hash of canonical arguments (the `{args}` placeholder)."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def slot_text(slot: datetime) -> str:
    """A slot as it appears in keys: UTC to the minute, `2026-11-21T07:00Z`."""
    return (iso(slot.replace(second=0, microsecond=0)) or "").replace(":00Z", "Z")


def manual_slot(schedule: Any, now: datetime) -> datetime | None:
    """The slot a run without one stands for: the latest scheduled time at or before
    `now`. A manual run redoes the work of the slot that came last, so it shares that
    slot's keys and cannot repeat a side effect the scheduled run already had."""
    # The calendar repeats every 400 years: a schedule that fires has fired within them.
    for days in (2, 40, 400, 146_097):
        latest = None
        for instant in schedule.iter_after(now - timedelta(days=days)):
            if instant > now:
                break
            latest = instant
        if latest is not None:
            return latest
    return None


def render_key(template: str, *, job: str, tool: str, args: dict[str, Any], run_id: str,
               now: datetime, slot: datetime | None, zone: Any) -> str:
    """Fill an idempotency key template. `{date}` is the run's day in the job's time
    zone; `{slot}` the scheduled fire time (a manual run: see `manual_slot`, else the run)."""
    return template.format(
        job=job, tool=tool, run=run_id, args=args_hash(args),
        date=now.astimezone(zone).date().isoformat(),
        slot=slot_text(slot) if slot else f"run-{run_id}",
    )


@dataclass
class Entry:
    """One ledger row."""

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

    @property
    def state(self) -> str:
        """The status as an operator needs it: an `intent` whose process is gone is
        `in_doubt`; one whose process still runs is `running`."""
        if self.status == "intent":
            return "running" if _owner_alive(self.pid, self.host) else "in_doubt"
        return self.status

    def result_data(self) -> Any:
        return json.loads(self.result) if self.result else None

    def as_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in FIELDS}
        out["state"] = self.state
        out["args"] = json.loads(self.args) if self.args else {}
        out["result"] = self.result_data()
        return out

    def describe(self) -> str:
        """One line for a report."""
        why = self.error or "the process died between recording the intent and the outcome"
        return (f"{self.tool} key {self.key!r}: outcome unknown (run {self.run_id}, "
                f"started {self.intent_at}): {why}")


def _owner_alive(pid: int | None, host: str | None) -> bool:
    if not pid:
        return False
    if host and host != socket.gethostname():
        return True  # cannot tell from here: assume it still runs
    if pid == os.getpid():
        return True
    from jobrunner.locks.file import pid_alive

    return pid_alive(pid)


def _entry(row: Any) -> Entry:
    return Entry(**{k: row[k] for k in FIELDS})


def get(store: Store, key: str) -> Entry | None:
    with store.connect() as conn:
        row = conn.execute("SELECT * FROM ledger WHERE key = ?", (key,)).fetchone()
    return _entry(row) if row else None


def entries(store: Store, job: str | None = None, limit: int = 200) -> list[Entry]:
    """Newest first."""
    query, params = "SELECT * FROM ledger", ()
    if job:
        query, params = query + " WHERE job = ?", (job,)
    with store.connect() as conn:
        rows = conn.execute(query + " ORDER BY intent_at DESC, rowid DESC LIMIT ?",
                            (*params, limit)).fetchall()
    return [_entry(r) for r in rows]


def in_doubt(store: Store, job: str) -> list[Entry]:
    """Entries of `job` whose outcome nobody knows: they stop its runs until resolved."""
    with store.connect() as conn:
        rows = conn.execute(
            "SELECT * FROM ledger WHERE job = ? AND status IN ('intent', 'in_doubt') "
            "ORDER BY intent_at", (job,)).fetchall()
    return [e for e in map(_entry, rows) if e.state == "in_doubt"]


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


def begin(store: Store, key: str, *, job: str, tool: str, args: dict[str, Any],
          run_id: str, approval_id: str | None = None) -> Claimed | AlreadyDone | Blocked:
    """Record the intent of a call in one write transaction, unless the key is done or
    its outcome is unknown. The row keeps `args` redacted (the store's Redactor, applied
    to the structure before it is encoded)."""
    now = iso(utcnow())
    owner = (os.getpid(), socket.gethostname())
    args_text = json.dumps(store.redactor.data(args), sort_keys=True, default=str)
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM ledger WHERE key = ?", (key,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO ledger (key, job, tool, args, status, run_id, approval_id, pid, "
                "host, attempts, intent_at) VALUES (?, ?, ?, ?, 'intent', ?, ?, ?, ?, 1, ?)",
                (key, job, tool, args_text, run_id, approval_id, *owner, now))
        elif row["status"] == "done":
            return AlreadyDone(_entry(row))
        elif row["status"] in RETRYABLE:
            conn.execute(
                "UPDATE ledger SET status = 'intent', args = ?, run_id = ?, approval_id = ?, "
                "pid = ?, host = ?, attempts = attempts + 1, intent_at = ?, outcome_at = NULL, "
                "result = NULL, error = NULL WHERE key = ?",
                (args_text, run_id, approval_id, *owner, now, key))
        else:
            return Blocked(_entry(row))
        row = conn.execute("SELECT * FROM ledger WHERE key = ?", (key,)).fetchone()
    return Claimed(_entry(row))


def record_outcome(store: Store, key: str, outcome: Any) -> str:
    """Record how the call went; returns the status written. A call that timed out or
    raised may have acted before it failed: it is `in_doubt`, never `failed`."""
    if outcome.ok:
        status = "done"
    elif outcome.timed_out or getattr(outcome, "raised", False):
        status = "in_doubt"
    else:
        status = "failed"
    result = result_text(store.redactor.data(outcome.data)) if outcome.ok else None
    with store.transaction() as conn:
        conn.execute(
            "UPDATE ledger SET status = ?, outcome_at = ?, result = ?, error = ? "
            "WHERE key = ?", (status, iso(utcnow()), result, outcome.error, key))
    return status


def call(store: Store, key: str, *, job: str, tool: str, args: dict[str, Any], run_id: str,
         execute: Callable[[], Any], approval_id: str | None = None):
    """Run `execute` at most once per key: `(AlreadyDone | Blocked, None)` without
    calling it, or `(Claimed, outcome)` once it ran and its outcome is recorded."""
    claim = begin(store, key, job=job, tool=tool, args=args, run_id=run_id,
                  approval_id=approval_id)
    if not isinstance(claim, Claimed):
        return claim, None
    outcome = execute()
    claim.entry.status = record_outcome(store, key, outcome)
    return claim, outcome


def resolve(store: Store, key: str, done: bool, user: str) -> Entry:
    """An operator says what became of an in-doubt call: it happened (`done`: later
    calls get a note instead of acting) or it did not (`not_done`: a later run may act)."""
    entry = get(store, key)
    if entry is None:
        raise NotFoundError(f"no ledger entry {key!r} (see `jobrunner ledger`)")
    if entry.state != "in_doubt":
        raise LedgerError(f"ledger entry {key!r} is {entry.state}, not in doubt: "
                          "nothing to resolve")
    status = "done" if done else "not_done"
    note = {"resolved": f"marked {status} by {user}; the tool was not called again"}
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE ledger SET status = ?, resolved_by = ?, resolved_at = ?, result = ?, "
            "outcome_at = COALESCE(outcome_at, ?) WHERE key = ? AND status = ?",
            (status, user, iso(utcnow()), json.dumps(note) if done else None,
             iso(utcnow()), key, entry.status)).rowcount
    if not changed:
        raise LedgerError(f"ledger entry {key!r} changed while resolving it; look again")
    resolved = get(store, key)
    assert resolved is not None
    return resolved
