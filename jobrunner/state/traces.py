"""Per-run traces: one JSON event per line, written as it happens, secrets redacted, kept
by the state's backend (files beside the embedded database; a table on PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from jobrunner.errors import StateError

if TYPE_CHECKING:
    from jobrunner.state.interface import State


class TraceEvent(BaseModel):
    """One line of a trace; event-specific fields ride along as extras."""

    model_config = ConfigDict(extra="allow")
    seq: int
    at: str
    event: str
    run_id: str


def event_time() -> str:
    """An event's `at`: UTC to the millisecond, so the steps of one second keep their order
    and length when the trace is read as spans (record times keep whole seconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Trace:
    """Appends a run's events to its trace; each reaches the backend before `emit` returns.
    Every event passes the state's Redactor (its fields before encoding, the line after),
    so no caller has to remember it.

    A disk that refuses a write (full, read-only) stops the trace there instead of the
    run: `incomplete` then says why, for the run's report, and nothing more is written
    (a trace with a hole in the middle would tell a wrong story).
    """

    def __init__(self, store: State, run_id: str, seq: int = 0) -> None:
        self.store = store
        self.run_id = run_id
        self.seq = seq
        self.incomplete: str | None = None
        self._closed = False

    def emit(self, event: str, **fields: Any) -> None:
        if self._closed:
            raise ValueError(f"the trace of run {self.run_id} is closed")
        self.seq += 1
        if self.incomplete:
            return  # stopped by the disk: see `incomplete`
        redactor = self.store.redactor
        record = TraceEvent(seq=self.seq, at=event_time(), event=event, run_id=self.run_id,
                            **redactor.data(fields))
        # Values that were not strings (turned into text by `default=str`) get a last pass.
        line = redactor.text(json.dumps(record.model_dump(), default=str))
        try:
            self.store.trace_write(self.run_id, line)
        except (OSError, StateError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.incomplete = f"the trace of run {self.run_id} is incomplete: {detail}"

    def sync(self) -> None:
        """Flush what was written to disk, so it survives a power cut too."""
        if not self.incomplete:
            try:
                self.store.trace_flush(self.run_id)
            except (OSError, StateError) as exc:
                self.incomplete = f"the trace of run {self.run_id} is incomplete: {exc}"

    def close(self) -> None:
        """The end of the run's trace (flushed)."""
        if not self._closed:
            self.sync()
        self._closed = True


def append_event(store: State, run_id: str, event: str, **fields: Any) -> None:
    """Add one event to a run's trace after the fact (a person's decision about a call the
    run queued), numbered after its last event, so `show` tells the whole story. If the
    run is still writing, the two may share a number; the order written is the truth.
    Raises OSError when the disk refused it."""
    last = max((e.get("seq", 0) for e in store.trace_read(run_id)), default=0)
    trace = Trace(store, run_id, seq=last)
    trace.emit(event, **fields)
    trace.close()
    if trace.incomplete:
        raise OSError(trace.incomplete)
