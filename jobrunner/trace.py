"""Per-run JSONL traces: one event per line, flushed as it happens, secrets redacted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobrunner.redact import Redactor
from jobrunner.store import iso, utcnow


class TraceEvent(BaseModel):
    """One line of a trace; event-specific fields ride along as extras."""

    model_config = ConfigDict(extra="allow")
    seq: int
    at: str
    event: str
    run_id: str


def trace_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "traces" / f"{run_id}.jsonl"


class Trace:
    """Appends events to a run's trace file; each write reaches the OS before returning."""

    def __init__(self, path: Path, run_id: str, redactor: Redactor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.run_id = run_id
        self.redactor = redactor
        self.seq = 0
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def emit(self, event: str, **fields: Any) -> None:
        self.seq += 1
        record = TraceEvent(
            seq=self.seq, at=iso(utcnow()) or "", event=event, run_id=self.run_id,
            **self.redactor.data(fields),
        )
        line = json.dumps(record.model_dump(), default=str)
        # Values that were not strings (turned into text by `default=str`) get a last pass.
        self._file.write(self.redactor.text(line) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """fsync: called at run end so the trace survives a power cut too."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def append_event(state_dir: Path, run_id: str, redactor: Redactor, event: str,
                 **fields: Any) -> None:
    """Add one event to a run's trace after the fact (a person's decision about a call the
    run queued), numbered after its last event, so `show` tells the whole story."""
    path = trace_path(state_dir, run_id)
    last = max((e.get("seq", 0) for e in read_trace(path)), default=0)
    trace = Trace(path, run_id, redactor)
    trace.seq = last
    try:
        trace.emit(event, **fields)
    finally:
        trace.close()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Events of a trace; a torn last line (crash mid-write) is skipped."""
    events = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
