"""Per-run JSONL traces: one event per line, flushed as it happens, secrets redacted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobrunner.redact import Redactor
from jobrunner.store import utcnow


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
    return utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "traces" / f"{run_id}.jsonl"


class Trace:
    """Appends events to a run's trace file; each write reaches the OS before returning.
    Every event passes the project's Redactor (its fields before encoding, the line
    after), so no caller has to remember it.

    A disk that refuses a write (full, read-only) stops the trace there instead of the
    run: `incomplete` then says why, for the run's report, and nothing more is written
    (a trace with a hole in the middle would tell a wrong story).
    """

    def __init__(self, path: Path, run_id: str, redactor: Redactor) -> None:
        self.path = path
        self.run_id = run_id
        self.redactor = redactor
        self.seq = 0
        self.incomplete: str | None = None
        self._closed = False
        self._fd: int | None = None
        # One os.write per line on an O_APPEND descriptor: a line is never split, even
        # when another process (an approval decided mid-run) appends to the same trace.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self._stop(exc)

    def _stop(self, exc: OSError) -> None:
        self.incomplete = f"the trace {self.path} is incomplete: {exc.strerror or exc}"
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def emit(self, event: str, **fields: Any) -> None:
        if self._closed:
            raise ValueError(f"trace {self.path} is closed")
        self.seq += 1
        if self._fd is None:
            return  # stopped by the disk: see `incomplete`
        record = TraceEvent(
            seq=self.seq, at=event_time(), event=event, run_id=self.run_id,
            **self.redactor.data(fields),
        )
        line = json.dumps(record.model_dump(), default=str)
        # Values that were not strings (turned into text by `default=str`) get a last pass.
        data = (self.redactor.text(line) + "\n").encode("utf-8")
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            self._stop(exc)

    def sync(self) -> None:
        """fsync: called at run end so the trace survives a power cut too."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._stop(exc)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._closed = True


def append_event(store: Any, run_id: str, event: str, **fields: Any) -> None:
    """Add one event to a run's trace after the fact (a person's decision about a call the
    run queued), numbered after its last event, so `show` tells the whole story. If the
    run is still writing, the two may share a number; the file's order is the truth.
    The store's Redactor (the project's) redacts it. Raises OSError when the disk
    refused it."""
    path = trace_path(store.path.parent, run_id)
    last = max((e.get("seq", 0) for e in read_trace(path)), default=0)
    trace = Trace(path, run_id, store.redactor)
    trace.seq = last
    try:
        trace.emit(event, **fields)
    finally:
        trace.close()
    if trace.incomplete:
        raise OSError(trace.incomplete)


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Events of a trace; a torn last line (crash mid-write) is skipped."""
    events = []
    if not path.is_file():
        return events
    # A kill mid-write can tear a multibyte character too: never fail on the bytes.
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
