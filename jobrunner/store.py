"""Run records in SQLite (WAL, busy timeout, short transactions, named migrations).

Other modules (ledger, approvals, alerts, pauses) add their tables through MIGRATIONS
here, append-only: a migration, once released, is never edited.

Every write goes through `Store.transaction()`, whose connection passes each text value
it binds through the store's Redactor (the project's): no row of any table (runs, ledger,
approvals, alerts, the outbox, pauses) can hold a secret, whoever wrote the statement.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jobrunner.errors import StateError
from jobrunner.redact import Redactor

# (pid, thread, database) -> its open connection; see Store.connect.
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
]

RUN_FIELDS = (
    "id", "job", "agent", "status", "trigger", "slot", "started_at", "ended_at", "pid", "host",
    "model", "steps", "tool_calls", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd", "stop_reason", "report", "summary", "exit_code",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") \
        if moment else None


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Columns that name things rather than say them: ids, keys, job, tool and channel names,
# statuses. They are looked up by their exact value (`WHERE key = ?`, also outside a
# transaction), so they are bound as given: a key template with literal text such as
# `token:{date}` must not turn two days' keys into one masked key. None of them holds
# text from a tool or the model. Every other bound text value is redacted.
IDENTIFIERS = frozenset({
    "id", "key", "ledger_key", "run_id", "approval_id", "alert_id", "job", "agent", "tool",
    "channel", "event", "cause", "status", "trigger", "name",
})
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+\w+\s*\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)",
                     re.IGNORECASE)
_COMPARED = re.compile(r"(\w+)\s*(?:=|<=|>=|<|>|\bIS\b|\bLIKE\b)\s*$", re.IGNORECASE)


@lru_cache(maxsize=256)
def param_columns(sql: str) -> tuple[str | None, ...]:
    """The column each `?` of a statement binds, where the statement says it (an INSERT's
    column list, `col = ?`, `col IS ?`...); None where it does not (redacted)."""
    columns: list[str | None] = []
    rest = sql
    match = _INSERT.match(sql)
    if match:
        names = [c.strip().lower() for c in match.group(1).split(",")]
        values = [v.strip() for v in match.group(2).split(",")]
        columns += [n if v == "?" else None for n, v in zip(names, values, strict=False)
                    if v == "?"]
        rest = sql[match.end():]
    for found in re.finditer(r"\?", rest):
        compared = _COMPARED.search(rest[: found.start()])
        columns.append(compared.group(1).lower() if compared else None)
    return tuple(columns)


class RedactingConnection:
    """A write transaction's connection: each text value bound to a statement is passed
    through the redactor first, unless it fills an identifier column (IDENTIFIERS)."""

    def __init__(self, conn: sqlite3.Connection, redactor: Redactor) -> None:
        self._conn = conn
        self._redactor = redactor

    def _clean(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
        if isinstance(params, dict):
            raise TypeError("bind parameters by position: named ones bypass redaction")
        columns = param_columns(sql)
        return tuple(
            self._redactor.text(value) if isinstance(value, str) and (
                index >= len(columns) or columns[index] not in IDENTIFIERS) else value
            for index, value in enumerate(params))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, self._clean(sql, params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, [self._clean(sql, row) for row in rows])


@dataclass
class Store:
    """The state database of one project; `redactor` guards every write."""

    path: Path
    redactor: Redactor

    @classmethod
    def open(cls, state_dir: Path, redactor: Redactor) -> Store:
        """The project's store, migrated (once per process: each check is a write
        transaction, and a run or the daemon opens the store many times). Open it
        through `Project.store()`, which passes the project's Redactor."""
        store = cls(state_dir / "jobrunner.sqlite3", redactor)
        if (os.getpid(), str(store.path)) not in _MIGRATED:
            store.migrate()
            _MIGRATED.add((os.getpid(), str(store.path)))
        return store

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the database (autocommit mode; `transaction()`
        opens the write transactions). Kept open for the life of the process: opening one
        and setting its pragmas per query cost more than the rest of a session step."""
        yield self._connection()

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
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open the state database: {exc}") from exc
        # A forked child must never use its parent's connection: the key holds the pid.
        _CONNECTIONS[key] = conn
        return conn

    def close_thread(self) -> None:
        """Close this thread's connection. For short-lived threads (the daemon's launch
        threads): theirs would stay open, with its page cache, after they end."""
        conn = _CONNECTIONS.pop((os.getpid(), threading.get_ident(), str(self.path)), None)
        if conn is not None:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[RedactingConnection]:
        """One short write transaction (BEGIN IMMEDIATE: writers queue, never deadlock),
        every text value it binds redacted."""
        with self.connect() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield RedactingConnection(conn, self.redactor)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                # A full or read-only disk, a database locked past the busy timeout: one
                # error the CLI reports, not a traceback.
                raise StateError(f"{self.path}: cannot write the state database: {exc}") \
                    from exc

    def migrate(self) -> list[str]:
        """Apply every migration not yet recorded; returns the names applied."""
        applied: list[str] = []
        try:
            with self.transaction() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
                )
                done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
                for name, sql in MIGRATIONS:
                    if name in done:
                        continue
                    for statement in sql.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO migrations VALUES (?, ?)", (name, iso(utcnow()))
                    )
                    applied.append(name)
        except sqlite3.OperationalError as exc:
            raise StateError(f"{self.path}: state database unusable: {exc}") from exc
        return applied

    # -- runs ---------------------------------------------------------------------------

    def insert_run(self, **fields: Any) -> None:
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", tuple(fields.values()))

    def update_run(self, run_id: str, *, where_status: str | None = None,
                   **fields: Any) -> bool:
        """Set `fields` of a run (only while its status is `where_status`, if given: two
        processes recording one crash must not both act on it). Returns whether it did."""
        assignments = ", ".join(f"{k} = ?" for k in fields)
        query = f"UPDATE runs SET {assignments} WHERE id = ?"
        params: tuple[Any, ...] = (*fields.values(), run_id)
        if where_status is not None:
            query += " AND status = ?"
            params += (where_status,)
        with self.transaction() as conn:
            return conn.execute(query, params).rowcount > 0

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                # Accept a unique prefix, as people copy short ids.
                rows = conn.execute(
                    "SELECT * FROM runs WHERE id LIKE ? LIMIT 2", (run_id + "%",)
                ).fetchall()
                row = rows[0] if len(rows) == 1 else None
        return dict(row) if row else None

    def list_runs(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs"
        params: tuple[Any, ...] = ()
        if job:
            query += " WHERE job = ?"
            params = (job,)
        query += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        with self.connect() as conn:
            return [dict(r) for r in conn.execute(query, (*params, limit))]

    def last_run(self, job: str, exclude_skipped: bool = True) -> dict[str, Any] | None:
        query = "SELECT * FROM runs WHERE job = ?"
        if exclude_skipped:
            query += " AND status NOT IN ('skipped', 'paused')"
        query += " ORDER BY started_at DESC, rowid DESC LIMIT 1"
        with self.connect() as conn:
            row = conn.execute(query, (job,)).fetchone()
        return dict(row) if row else None

    def running_runs(self, job: str) -> list[dict[str, Any]]:
        """Runs of `job` recorded `running` (under the job's lock: runs that ended
        without their end being recorded)."""
        with self.connect() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT * FROM runs WHERE status = 'running' AND job = ? ORDER BY started_at",
                (job,))]

    def slot_run(self, job: str, slot: datetime) -> dict[str, Any] | None:
        """The run that took `slot` of `job` (any run of it but a skipped or paused one:
        those did not start, so the slot may still run after `resume`), if any."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM runs WHERE job = ? AND slot = ? "
                "AND status NOT IN ('skipped', 'paused') ORDER BY started_at LIMIT 1",
                (job, iso(slot)),
            ).fetchone()
        return dict(row) if row else None

    def cost_since(self, job: str, since: datetime) -> float:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM runs WHERE job = ? AND started_at >= ?",
                (job, iso(since)),
            ).fetchone()
        return float(row[0])


def run_as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A run record as `runs --json` prints it."""
    out = {k: row.get(k) for k in RUN_FIELDS}
    out["cost_usd"] = round(float(out["cost_usd"] or 0), 6)
    return json.loads(json.dumps(out))
