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
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from jobrunner.clock import iso
from jobrunner.errors import JobrunnerError, NotFoundError
from jobrunner.state import State
from jobrunner.state.records import AlreadyDone, Blocked, Claimed, Entry

# A recorded result is for people and for the note a repeated call gets (which is cut to
# max_tool_result_chars anyway): a bounded excerpt, not a 50 MB blob in every state copy.
RESULT_MAX_CHARS = 64_000


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
    from jobrunner.tools.dispatch import canonical_args

    return hashlib.sha256(canonical_args(args).encode()).hexdigest()[:16]


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


def get(store: State, key: str) -> Entry | None:
    return store.ledger_get(key)


def entries(store: State, job: str | None = None, limit: int = 200) -> list[Entry]:
    """Newest first."""
    return store.ledger_entries(job, limit)


def in_doubt(store: State, job: str) -> list[Entry]:
    """Entries of `job` whose outcome nobody knows: they stop its runs until resolved."""
    return [e for e in store.ledger_open(job) if e.state == "in_doubt"]


def begin(store: State, key: str, *, job: str, tool: str, args: dict[str, Any],
          run_id: str, approval_id: str | None = None) -> Claimed | AlreadyDone | Blocked:
    """Record the intent of a call, unless the key is done or its outcome is unknown. The
    row keeps `args` redacted (redacted as a structure, before it is encoded)."""
    args_text = json.dumps(store.redactor.data(args), sort_keys=True, default=str)
    return store.ledger_begin(key, job=job, tool=tool, args=args_text, run_id=run_id,
                              pid=os.getpid(), approval_id=approval_id)


def outcome_status(outcome: Any) -> str:
    """What a call's outcome means for its key. A call that timed out or raised may have
    acted before it failed: `in_doubt`, never `failed`."""
    if outcome.ok:
        return "done"
    if outcome.timed_out or getattr(outcome, "raised", False):
        return "in_doubt"
    return "failed"


def record_outcome(store: State, key: str, outcome: Any) -> str:
    """Record how the call went; returns the status written."""
    status = outcome_status(outcome)
    result = result_text(store.redactor.data(outcome.data)) if outcome.ok else None
    store.ledger_record(key, status, result, outcome.error)
    return status


def call(store: State, key: str, *, job: str, tool: str, args: dict[str, Any], run_id: str,
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


def undone(store: State, key: str, by: str) -> bool:
    """A done call was undone by its compensation: `not_done`, so a later run may make
    it again instead of being told it happened. False if the entry was not done."""
    note = json.dumps({"undone": by})
    return store.ledger_resolve(key, "done", "not_done", by, note)


def resolve(store: State, key: str, done: bool, user: str) -> Entry:
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
    if not store.ledger_resolve(key, entry.status, status, user,
                                json.dumps(note) if done else None):
        raise LedgerError(f"ledger entry {key!r} changed while resolving it; look again")
    resolved = get(store, key)
    assert resolved is not None
    return resolved
