"""The state's one interface: what every backend provides, and the one redaction point.

Domain methods are written once, in SQL that SQLite and PostgreSQL both read (`?`
placeholders, `ON CONFLICT`, `RETURNING`, compare-and-swap updates instead of read-then-
write), in the mixins `runs`, `effects` and `outbox`. A backend supplies connections
(`_reading`, `_writing`), its schema, its locks and its traces.

Every value written passes `Writer.run`, which redacts every text parameter except the
identifiers the SQL marks with `Ident` (keys, ids, names built by jobrunner itself): a
secret can reach a report, an error, arguments or a result, and none of those reach disk
unmasked, whichever module wrote them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, Protocol

from jobrunner.clock import utcnow
from jobrunner.redact import Redactor


class Ident(str):
    """A text parameter that is an identifier (a key, an id, a job or channel name): it
    is matched on later, so it is written as it is, never redacted."""

    __slots__ = ()


class Rows(Protocol):
    """A connection as the domain SQL uses it (rows are plain dicts)."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...


class Writer:
    """A write transaction's connection: every text parameter that is not an `Ident` is
    redacted on its way to disk."""

    def __init__(self, rows: Rows, redactor: Redactor) -> None:
        self._rows = rows
        self._redactor = redactor

    def _clean(self, params: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(p if isinstance(p, Ident) or not isinstance(p, str)
                     else self._redactor.text(p) for p in params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return self._rows.one(sql, self._clean(params))

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._rows.all(sql, self._clean(params))

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._rows.run(sql, self._clean(params))


class Backend:
    """What a backend implements; the domain mixins build on `_read` and `_tx` only."""

    kind = "?"
    # The column that orders rows written in the same second as they were written.
    insertion = "rowid"
    # Whether agents' memories are kept here as versions, for several hosts to share (the
    # embedded state keeps MEMORY.md alone, as it always has).
    shares_memory = False

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def _reading(self) -> AbstractContextManager[Rows]:
        """A connection for reads."""
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[Rows]:
        """One short write transaction: committed on exit, rolled back on error."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Rows]:
        return self._reading()

    @contextmanager
    def _tx(self) -> Iterator[Writer]:
        with self._writing() as rows:
            yield Writer(rows, self.redactor)

    def _now(self, db: Rows) -> datetime:  # noqa: ARG002 - one host: no server to ask
        """The time every writer of this state agrees on, read on `db`: the times the
        mixins write themselves (claims, outcomes, backoffs) and compare later, maybe
        from another process or host, come from here. An embedded state has one host:
        its clock."""
        return utcnow()

    def now(self) -> datetime:
        """This state's clock (see `_now`), for callers comparing the times it wrote
        (heartbeat ages, say)."""
        with self._read() as db:
            return self._now(db)

    def _serialize(self, db: Rows, what: str) -> None:
        """Until `db`'s transaction ends, no other write transaction passes this call
        for the same `what`: a section that reads, then writes what it read (a cooldown,
        a counter) runs once at a time. SQLite's write transactions are exclusive
        already (BEGIN IMMEDIATE)."""

    def lock(self, key: str) -> Any:
        """The lock of one job (`job-NAME`) or one agent's memory (`agent-NAME`), with
        the interface of `jobrunner.locks.file.RunLock`."""
        raise NotImplementedError

    def trace_write(self, run_id: str, line: str) -> None:
        """Append one event (a JSON text, one line) to the run's trace, redacted."""
        raise NotImplementedError

    def trace_flush(self, run_id: str) -> None:
        """Make the run's trace durable (a power cut after this loses none of it)."""

    def trace_read(self, run_id: str) -> list[dict[str, Any]]:
        """The run's trace events, in the order written ([] for an unknown run)."""
        raise NotImplementedError

    def describe(self) -> str:
        """Which backend this is and where, for `validate` and `doctor` (no secret)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close this thread's connection (short-lived threads call it at their end)."""
