"""The embedded backend: SQLite in the state folder (WAL, busy timeout, short write
transactions, named append-only migrations), file locks beside it, JSONL traces.

A migration, once released, is never edited: a new one is appended.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobrunner.clock import iso, utcnow
from jobrunner.errors import StateError
from jobrunner.redact import Redactor
from jobrunner.state.interface import State

# (pid, thread, database) -> its open connection: opening one and setting its pragmas per
# query cost more than the rest of a session step. A forked child never uses its parent's.
_CONNECTIONS: dict[tuple[int, int, str], sqlite3.Connection] = {}
_MIGRATED: set[tuple[int, str]] = set()

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_runs",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            job TEXT NOT NULL,
            agent TEXT NOT NULL,
            status TEXT NOT NULL,
            trigger TEXT NOT NULL,
            slot TEXT,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            pid INTEGER,
            host TEXT,
            model TEXT,
            steps INTEGER NOT NULL DEFAULT 0,
            tool_calls INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            stop_reason TEXT,
            report TEXT,
            summary TEXT,
            exit_code INTEGER
        );
        CREATE INDEX runs_job_started ON runs (job, started_at);
        CREATE INDEX runs_status ON runs (status);
        """,
    ),
    (
        "010_alerts",
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event TEXT NOT NULL,
            job TEXT,
            run_id TEXT,
            cause TEXT NOT NULL DEFAULT '',
            message TEXT NOT NULL,
            at TEXT NOT NULL,
            body TEXT NOT NULL,
            repeats INTEGER NOT NULL DEFAULT 0,
            last_repeat_at TEXT
        );
        CREATE INDEX alerts_key ON alerts (event, job, cause, at);
        CREATE TABLE alert_deliveries (
            alert_id INTEGER NOT NULL REFERENCES alerts (id),
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            updated_at TEXT NOT NULL,
            delivered_at TEXT,
            PRIMARY KEY (alert_id, channel)
        );
        CREATE INDEX alert_deliveries_status ON alert_deliveries (status);
        """,
    ),
    (
        "011_pauses",
        """
        CREATE TABLE pauses (
            job TEXT PRIMARY KEY,
            paused INTEGER NOT NULL,
            paused_at TEXT,
            reason TEXT,
            run_id TEXT,
            resumed_at TEXT
        );
        """,
    ),
    (
        "030_ledger",
        """
        CREATE TABLE ledger (
            key TEXT PRIMARY KEY,
            job TEXT NOT NULL,
            tool TEXT NOT NULL,
            args TEXT NOT NULL,
            status TEXT NOT NULL,
            run_id TEXT,
            approval_id TEXT,
            pid INTEGER,
            host TEXT,
            attempts INTEGER NOT NULL DEFAULT 1,
            intent_at TEXT NOT NULL,
            outcome_at TEXT,
            result TEXT,
            error TEXT,
            resolved_by TEXT,
            resolved_at TEXT
        );
        CREATE INDEX ledger_job_status ON ledger (job, status);
        """,
    ),
    (
        "031_approvals",
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            job TEXT NOT NULL,
            run_id TEXT NOT NULL,
            tool TEXT NOT NULL,
            args TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            ledger_key TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            decided_at TEXT,
            decided_by TEXT,
            note TEXT,
            outcome TEXT,
            result TEXT,
            error TEXT
        );
        CREATE INDEX approvals_status ON approvals (status, created_at);
        """,
    ),
    (
        "040_runs_job_slot",
        "CREATE INDEX IF NOT EXISTS runs_job_slot ON runs (job, slot)",
    ),
    (
        "050_channel_backoff",
        """
        CREATE TABLE channel_backoff (
            channel TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            retry_at TEXT NOT NULL,
            last_error TEXT
        );
        """,
    ),
    (
        "060_slots",
        """
        CREATE TABLE slots (
            job TEXT NOT NULL,
            slot TEXT NOT NULL,
            run_id TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (job, slot)
        );
        """,
    ),
    (
        "070_memory_versions",
        """
        CREATE TABLE memory_versions (
            agent TEXT NOT NULL,
            version INTEGER NOT NULL,
            content TEXT NOT NULL,
            source TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (agent, version)
        );
        """,
    ),
]


class _Rows:
    """A sqlite3 connection as the domain SQL uses it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        # fetchall: a RETURNING statement must be finished before its transaction commits.
        rows = self.conn.execute(sql, tuple(params)).fetchall()
        return dict(rows[0]) if rows else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, tuple(params)).fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, tuple(params)).rowcount


def _use_wal(conn: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put the database in WAL mode (kept in the file: later connections find it so).
    Switching takes an exclusive lock, and SQLite answers "database is locked" at once,
    without its busy timeout, when another connection holds the file meanwhile (several
    firings opening a new state at the same instant): wait for it as the timeout would."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SQLiteState(State):
    """The state of one project on this host, in `STATE_DIR/jobrunner.sqlite3`."""

    kind = "sqlite"

    def __init__(self, state_dir: Path, redactor: Redactor) -> None:
        super().__init__(redactor)
        self.dir = state_dir
        self.path = state_dir / "jobrunner.sqlite3"
        # Each check is a write transaction, and a run or the daemon opens the state often.
        if (os.getpid(), str(self.path)) not in _MIGRATED:
            self.migrate()
            _MIGRATED.add((os.getpid(), str(self.path)))

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def lock(self, key: str) -> Any:
        """A file lock in `STATE_DIR/locks` (`jobrunner.locks.file.RunLock`): it dies with its
        process, and holds between processes of this host only."""
        from jobrunner.locks.file import RunLock

        return RunLock(self.dir / "locks", key)

    def _trace_path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.dir / "traces" / f"{run_id}.jsonl"

    def trace_write(self, run_id: str, line: str) -> None:
        """Append to `STATE_DIR/traces/RUN_ID.jsonl`: one os.write per line on an
        O_APPEND descriptor, so a line is never split, even when another process (an
        approval decided mid-run) appends to the same trace at the same moment."""
        if "\n" in line:
            raise ValueError("a trace event is one line")
        path = self._trace_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (self.redactor.text(line) + "\n").encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)

    def trace_flush(self, run_id: str) -> None:
        path = self._trace_path(run_id)
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def trace_read(self, run_id: str) -> list[dict[str, Any]]:
        """The trace's events; a torn last line (a crash mid-write) is skipped."""
        path = self._trace_path(run_id)
        if not path.is_file():
            return []
        events = []
        # A kill mid-write can tear a multibyte character too: never fail on the bytes.
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def _connection(self) -> sqlite3.Connection:
        key = (os.getpid(), threading.get_ident(), str(self.path))
        conn = _CONNECTIONS.get(key)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            _use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open the state database: {exc}") from exc
        _CONNECTIONS[key] = conn
        return conn

    @contextmanager
    def _reading(self) -> Iterator[_Rows]:
        try:
            yield _Rows(self._connection())
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[_Rows]:
        """BEGIN IMMEDIATE: writers queue behind each other and never deadlock. A full or
        read-only disk, or a database locked past the busy timeout, is one StateError the
        CLI reports, not a traceback."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Rows(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state database: {exc}") from exc

    def close(self) -> None:
        conn = _CONNECTIONS.pop((os.getpid(), threading.get_ident(), str(self.path)), None)
        if conn is not None:
            conn.close()

    def migrate(self) -> list[str]:
        """Apply every migration not yet recorded; returns the names applied."""
        applied: list[str] = []
        with self._writing() as db:
            db.run("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                   "applied_at TEXT)")
            done = {r["name"] for r in db.all("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        db.run(statement)
                db.run("INSERT INTO migrations VALUES (?, ?)", (name, iso(utcnow())))
                applied.append(name)
        return applied
