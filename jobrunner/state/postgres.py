"""The shared backend: PostgreSQL through psycopg 3, for projects whose jobs run on several
hosts. The domain SQL is the mixins'; this module adds connections, the PostgreSQL
schema (named, append-only migrations, applied once however many hosts start at once),
the database's clock, advisory locks and traces in a table.

The database (or a schema of it, through `options=-csearch_path=NAME` in the URL)
belongs to one project. `project` is that project's identity, the same on every host:
advisory locks are per database, not per schema, so it is part of every lock key.

Clocks: what the state stamps itself (slot claims, ledger outcomes, delivery claims,
channel backoffs, lock records and heartbeats) is the server's clock, as is
`deliveries_due`'s staleness; the times callers pass in (a run's `started_at`, an
alert's `at` and cooldown, an approval's expiry) are their host's, compared with
times from that same caller's kind: a few seconds of skew against hours of TTL.

psycopg is an optional extra (`pip install 'jobrunner[postgres]'`), imported when a
PostgreSQL state is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

from jobrunner.clock import iso, parse_iso, utcnow
from jobrunner.errors import ConfigError, LockLost, StateError
from jobrunner.redact import Redactor
from jobrunner.state.base import Ident, Rows
from jobrunner.state.interface import State
from jobrunner.state.records import Delivery

EXTRA = "pip install 'jobrunner[postgres]'"

# One connection per (process, thread, database), opened on first use and kept, as the
# SQLite backend does; not a pool. A run is one process with a thread or two, and each
# transaction is a few statements: a kept connection costs one server session per
# thread and no background threads, where a pool adds worker threads, connections
# opened ahead of need and a checkout per statement group, and saves nothing while the
# threads are few. A forked child never uses (nor closes) its parent's connection: the
# key holds the pid, and psycopg closes a connection only in the process that opened it.
_CONNECTIONS: dict[tuple[int, int, str], list[Any]] = {}
_MIGRATED: set[tuple[int, str]] = set()
# A kept connection idle this long is pinged before use: a server restart or a proxy's
# idle timeout leaves it dead, and a fresh one is cheaper than a failed run.
IDLE_CHECK = 30.0

# The server's clock as jobrunner writes times (`iso`): UTC, seconds, `Z`.
NOW_TEXT = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

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
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            cache_read_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
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
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
            alert_id BIGINT NOT NULL REFERENCES alerts (id),
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
        "CREATE INDEX runs_job_slot ON runs (job, slot)",
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
        "070_lock_holders",
        """
        CREATE TABLE lock_holders (
            key TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            run_id TEXT,
            job TEXT,
            pid INTEGER,
            host TEXT,
            started_at TEXT,
            heartbeat_at TEXT,
            extra JSONB NOT NULL DEFAULT '{}'
        );
        """,
    ),
    (
        "080_trace_events",
        """
        CREATE TABLE trace_events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id TEXT NOT NULL,
            line TEXT NOT NULL
        );
        CREATE INDEX trace_events_run ON trace_events (run_id, seq);
        """,
    ),
    (
        "090_insertion_order",
        """
        ALTER TABLE runs ADD COLUMN row_seq BIGINT GENERATED ALWAYS AS IDENTITY;
        ALTER TABLE ledger ADD COLUMN row_seq BIGINT GENERATED ALWAYS AS IDENTITY;
        ALTER TABLE approvals ADD COLUMN row_seq BIGINT GENERATED ALWAYS AS IDENTITY;
        """,
    ),
    (
        "100_memory_versions",
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


def _psycopg(where: str) -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(f"{where}: a PostgreSQL state needs psycopg: {EXTRA}") from exc
    return psycopg


def project_identity(url: str) -> str:
    """What every host of a project calls it: its database and schema, as the URL names
    them. Not the project folder (each host may keep it elsewhere), not the server's host
    name (hosts may reach it by other names): advisory locks are per database, so two
    projects sharing a server must not share a lock key."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    options = " ".join(parse_qs(parts.query).get("options", []))
    return f"{parts.path.lstrip('/')}|{options}"


def _int32(text: str) -> int:
    """A stable signed 32-bit hash (advisory lock keys are two int4)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(),
                          "big", signed=True)


def lock_keys(project: str, key: str) -> tuple[int, int]:
    """The advisory lock of `key` (`job-NAME`, `agent-NAME`) in `project`: (hash of the
    project, hash of the key). Two keys sharing a hash (about one chance in 2^32 per
    pair) exclude each other: a run waits needlessly, two never hold one key."""
    return _int32(f"jobrunner project {project}"), _int32(key)


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The mixins' `?` as psycopg's `%s` (the SQL holds no literal `?` or `%`)."""
    if "%" in sql:
        raise ValueError(f"a literal % in SQL: {sql}")
    return sql.replace("?", "%s")


class _Rows:
    """A psycopg connection (rows as dicts) as the domain SQL uses it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        return self.conn.execute(_placeholders(sql), tuple(params) or None)

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        cur = self._execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        return rows[0] if rows else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._execute(sql, params)
        return cur.fetchall() if cur.description else []

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._execute(sql, params).rowcount)


class PostgresState(State):
    """The state of one project in a PostgreSQL database shared by its hosts.

    `url` is `postgresql://USER@HOST:PORT/DB` (libpq's URL, query options included);
    the password comes from libpq's usual sources (PGPASSWORD, ~/.pgpass) or from the
    environment variable `password_env` names. It is never shown: `describe()` gives
    the URL without it, and it is added to the secrets every write is redacted of.

    Transactions run at READ COMMITTED: every decision in the mixins is one compare-and-
    swap statement (`ON CONFLICT`, `UPDATE ... WHERE status = ...`), which PostgreSQL
    evaluates against the latest committed row, and the few read-then-write sections
    take `_serialize`'s transaction-scoped advisory lock.
    """

    kind = "postgres"
    insertion = "row_seq"
    shares_memory = True  # hosts share agents' memories through memory_versions

    def __init__(self, url: str, redactor: Redactor, project: str,
                 password_env: str | None = None, where: str = "state") -> None:
        self.psycopg = _psycopg(where)
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{where}: url: not a postgresql:// URL")
        if not project:
            raise ValueError("a PostgreSQL state needs the project's identity")
        try:
            params = conninfo_to_dict(url)
        except self.psycopg.Error as exc:
            raise ConfigError(f"{where}: url: {exc}") from exc
        password = params.pop("password", None)
        if password_env:
            password = os.environ.get(password_env)
            if not password:
                raise ConfigError(f"{where}: password_env: the environment variable "
                                  f"{password_env} is not set")
        secrets = [s for s in (password, os.environ.get("PGPASSWORD")) if s]
        super().__init__(Redactor([*redactor.secrets, *secrets]) if secrets else redactor)
        self.project = project
        self.params = params  # no password: safe to show
        self._conninfo = make_conninfo(url, password=password) if password_env else url
        if (os.getpid(), self._conninfo) not in _MIGRATED:
            self.migrate()
            _MIGRATED.add((os.getpid(), self._conninfo))

    # -- connections ----------------------------------------------------------------------

    def describe(self) -> str:
        p = self.params
        host = p.get("host") or "localhost"
        port = f":{p['port']}" if p.get("port") else ""
        user = f"{p['user']}@" if p.get("user") else ""
        return f"postgres postgresql://{user}{host}{port}/{p.get('dbname', '')}"

    def _connect(self, purpose: str) -> Any:
        """A new autocommit connection (transactions are opened explicitly)."""
        from psycopg.rows import dict_row

        try:
            return self.psycopg.connect(
                self._conninfo, autocommit=True, row_factory=dict_row,
                application_name=f"jobrunner {purpose}"[:63], connect_timeout=15,
                # The client notices a server that vanished (power, network) in ~30 s.
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        except self.psycopg.Error as exc:
            raise StateError(f"{self.describe()}: cannot connect: {exc}") from exc

    def _connection(self) -> Any:
        key = (os.getpid(), threading.get_ident(), self._conninfo)
        kept = _CONNECTIONS.get(key)
        if kept is not None:
            conn, last_used = kept
            if not conn.closed and not conn.broken:
                if time.monotonic() - last_used < IDLE_CHECK:
                    kept[1] = time.monotonic()
                    return conn
                try:
                    conn.execute("SELECT 1")
                    kept[1] = time.monotonic()
                    return conn
                except self.psycopg.OperationalError:
                    pass  # dead while idle: replaced below, nothing was in flight
            conn.close()
        conn = self._connect("state")
        _CONNECTIONS[key] = [conn, time.monotonic()]
        return conn

    def _failed(self, exc: Exception) -> StateError:
        """A psycopg error as jobrunner reports it; a broken connection is dropped so the
        next transaction opens a fresh one."""
        key = (os.getpid(), threading.get_ident(), self._conninfo)
        kept = _CONNECTIONS.get(key)
        if kept is not None and kept[0].broken:
            _CONNECTIONS.pop(key)[0].close()
        return StateError(f"{self.describe()}: {exc}")

    @contextmanager
    def _reading(self) -> Iterator[_Rows]:
        conn = self._connection()
        try:
            yield _Rows(conn)
        except self.psycopg.Error as exc:
            raise self._failed(exc) from exc

    @contextmanager
    def _writing(self) -> Iterator[_Rows]:
        """One transaction: committed on exit, rolled back on any error."""
        conn = self._connection()
        try:
            with conn.transaction():
                yield _Rows(conn)
        except self.psycopg.Error as exc:
            raise self._failed(exc) from exc

    def close(self) -> None:
        kept = _CONNECTIONS.pop((os.getpid(), threading.get_ident(), self._conninfo), None)
        if kept is not None:
            kept[0].close()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply every migration not yet recorded; returns the names applied. Hosts
        starting at once queue on an advisory lock of the schema, so each migration runs
        once and none sees a table half made (PostgreSQL's DDL is transactional)."""
        applied: list[str] = []
        with self._writing() as db:
            schema = db.one("SELECT current_schema() AS name")
            db.run("SELECT pg_advisory_xact_lock(?, ?)",
                   (_int32("jobrunner migrations"), _int32(str(schema and schema["name"]))))
            db.run("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                   "applied_at TEXT NOT NULL)")
            done = {r["name"] for r in db.all("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        db.run(statement)
                db.run(f"INSERT INTO migrations (name, applied_at) VALUES (?, {NOW_TEXT})",
                       (name,))
                applied.append(name)
        return applied

    # -- the clock ------------------------------------------------------------------------

    def _now(self, db: Rows) -> datetime:
        """The database server's clock: hosts' clocks drift apart, and claims and
        backoffs written by one host are compared by another."""
        row = db.one("SELECT clock_timestamp() AS now")
        assert row is not None
        return row["now"]

    def _serialize(self, db: Rows, what: str) -> None:
        db.run("SELECT pg_advisory_xact_lock(?, ?)", lock_keys(self.project, f"tx {what}"))

    def deliveries_due(self, alert_ids: list[int] | None, stale_claim: str) -> list[Delivery]:
        """As the mixin's, with `stale_claim` (this host's clock) moved onto the server's
        clock, which wrote the claims it is compared with."""
        shift = self.now() - utcnow()
        moment = parse_iso(stale_claim)
        return super().deliveries_due(alert_ids, iso(moment + shift) or stale_claim
                                      if moment else stale_claim)

    # -- locks and traces -----------------------------------------------------------------

    def lock(self, key: str) -> PostgresLock:
        return PostgresLock(self, key)

    def trace_write(self, run_id: str, line: str) -> None:
        """One row per event, numbered by the database in the order written, so two
        processes appending to one trace (a decision mid-run) never collide."""
        if "\n" in line:
            raise ValueError("a trace event is one line")
        with self._tx() as db:
            # A trace may lose its last instant to a server crash, as a file may to a
            # power cut; the run's own records are committed synchronously.
            db.run("SET LOCAL synchronous_commit = off")
            db.run("INSERT INTO trace_events (run_id, line) VALUES (?, ?)",
                   (Ident(run_id), line))

    def trace_read(self, run_id: str) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.all("SELECT line FROM trace_events WHERE run_id = ? ORDER BY seq",
                          (run_id,))
        events = []
        for row in rows:
            try:
                events.append(json.loads(row["line"]))
            except json.JSONDecodeError:
                continue  # as a file trace's torn line: the rest of the story stands
        return events


# The columns of a holder record; every other field rides in `extra`.
_HOLDER_COLUMNS = ("state", "run_id", "job", "pid", "host", "started_at", "heartbeat_at")


class PostgresLock:
    """A lock across hosts: a session-level advisory lock on a connection of its own.

    The connection is opened by `try_acquire`, kept while the lock is held and closed by
    `release`: the lock dies with it, as a file lock dies with its process (a killed
    holder's socket closes; the server notices a vanished host through TCP keepalives
    in about 25 s). It never comes from a pool: a pooled connection outlives its user,
    and so would the lock. Who holds it is recorded in `lock_holders`, with the times
    from the server's clock. Mirrors `jobrunner.locks.file.RunLock`.
    """

    def __init__(self, state: PostgresState, key: str) -> None:
        self.state = state
        self.key = key
        self.keys = lock_keys(state.project, key)
        self._conn: Any = None
        self._pid = 0
        # Heartbeat and release both use the connection and the record: never interleave.
        self._meta_guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._conn is not None and self._pid == os.getpid()

    def _error(self, exc: Exception) -> StateError:
        return StateError(f"{self.state.describe()}: lock {self.key}: {exc}")

    def _record(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        meta = {k: row[k] for k in _HOLDER_COLUMNS if row[k] is not None}
        meta.update(row["extra"] or {})
        return meta

    def read_meta(self) -> dict[str, Any] | None:
        if self.held:
            try:
                return self._record(self._conn.execute(
                    "SELECT * FROM lock_holders WHERE key = %s", (self.key,)).fetchone())
            except self.state.psycopg.Error as exc:
                raise self._lost(exc) from exc
        with self.state._read() as db:
            return self._record(db.one("SELECT * FROM lock_holders WHERE key = ?",
                                       (self.key,)))

    def try_acquire(self, timeout: float = 0.0) -> Any:
        """Take the lock without waiting (or up to `timeout` seconds, queued at the
        server: no polling). Acquired(left_behind, previous) | Busy(holder)."""
        from jobrunner.locks.file import Acquired, Busy

        if self.held:
            return Busy(self.read_meta())  # as a second file lock in one process
        psycopg = self.state.psycopg
        conn = self.state._connect(f"lock {self.key}")
        # The server drops the session of a host gone silent within ~25 s.
        keepalives = ("set_config('tcp_keepalives_idle', '10', false), "
                      "set_config('tcp_keepalives_interval', '5', false), "
                      "set_config('tcp_keepalives_count', '3', false)")
        try:
            if timeout <= 0:
                got = conn.execute(f"SELECT {keepalives}, pg_try_advisory_lock(%s, %s) AS got",
                                   self.keys).fetchone()["got"]
            else:
                # Waiters queue at the server, in order; lock_timeout ends the wait.
                conn.execute(f"SELECT {keepalives}, set_config('lock_timeout', %s, false)",
                             (f"{max(1, int(timeout * 1000))}ms",))
                try:
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", self.keys)
                    got = True
                except psycopg.errors.LockNotAvailable:
                    got = False
                conn.execute("SELECT set_config('lock_timeout', '0', false)")
            previous = self._record(conn.execute(
                "SELECT * FROM lock_holders WHERE key = %s", (self.key,)).fetchone())
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from exc
        if not got:
            conn.close()
            return Busy(previous)
        self._conn, self._pid = conn, os.getpid()
        left = previous if previous and previous.get("state") == "held" else None
        return Acquired(left, previous)

    def _write(self, meta: dict[str, Any], now_fields: tuple[str, ...]) -> dict[str, Any]:
        """Replace the record with `meta`, the `now_fields` set to the server's clock."""
        if not self.held:
            raise StateError(f"lock {self.key}: not held by this process")
        extra = self.state.redactor.data(
            {k: v for k, v in meta.items() if k not in _HOLDER_COLUMNS})
        now = ", ".join(f"'{field}', {NOW_TEXT}" for field in now_fields
                        if field not in _HOLDER_COLUMNS)
        columns = {k: meta.get(k) for k in _HOLDER_COLUMNS}
        values = ", ".join(NOW_TEXT if k in now_fields else "%s" for k in _HOLDER_COLUMNS)
        params = [columns[k] for k in _HOLDER_COLUMNS if k not in now_fields]
        from psycopg.types.json import Jsonb

        sql = (f"INSERT INTO lock_holders (key, {', '.join(_HOLDER_COLUMNS)}, extra) "
               f"VALUES (%s, {values}, %s::jsonb || jsonb_build_object({now})) "
               "ON CONFLICT (key) DO UPDATE SET "
               + ", ".join(f"{k} = excluded.{k}" for k in (*_HOLDER_COLUMNS, "extra"))
               + " RETURNING *")
        try:
            row = self._conn.execute(sql, (self.key, *params, Jsonb(extra))).fetchone()
        except self.state.psycopg.Error as exc:
            raise self._lost(exc) from exc
        record = self._record(row)
        assert record is not None
        return record

    def _lost(self, exc: Exception) -> StateError:
        """A failure on the lock's connection; a broken one means the lock is gone."""
        if self._conn is not None and self._conn.broken:
            self._conn.close()
            self._conn = None
            return LockLost(f"{self.state.describe()}: lock {self.key} lost with its "
                            f"connection: {exc}")
        return self._error(exc)

    def mark_held(self, run_id: str, job: str, **extra: Any) -> dict[str, Any]:
        """Record who holds the lock (only while holding it)."""
        meta = {"state": "held", "run_id": run_id, "job": job, "pid": os.getpid(),
                "host": socket.gethostname(), **extra}
        with self._meta_guard:
            return self._write(meta, ("started_at", "heartbeat_at"))

    def heartbeat(self) -> None:
        """Refresh `heartbeat_at` (only while this process holds the lock). Raises
        LockLost when the lock's connection is gone: the lock may be another's now."""
        with self._meta_guard:
            if not self.held:
                return
            try:
                self._conn.execute(
                    f"UPDATE lock_holders SET heartbeat_at = {NOW_TEXT} WHERE key = %s "
                    "AND state = 'held' AND pid = %s AND host = %s",
                    (self.key, os.getpid(), socket.gethostname()))
            except self.state.psycopg.Error as exc:
                raise self._lost(exc) from exc

    def mark_crashed(self, holder: dict[str, Any]) -> None:
        """Record (under the lock) that `holder` died holding it: the crash has been
        recorded and alerted, and stays visible until a run or `unlock` clears it."""
        with self._meta_guard:
            self._write({**holder, "state": "crashed"}, ("recorded_at",))

    def release(self, keep_meta: bool = False, last_run: dict[str, Any] | None = None) -> None:
        """Mark the lock free (unless `keep_meta`), then unlock and close its connection.
        The explicit unlock frees it before this returns; closing alone would free it
        when the server has noticed. `last_run` rides on the free record, as on a file
        lock's (the run's end, for the next holder to record should the state have
        refused it)."""
        with self._meta_guard:
            if not self.held:
                return
            conn = self._conn
            try:
                if not keep_meta:
                    conn.execute(
                        "INSERT INTO lock_holders (key, state, extra) VALUES (%s, 'free', "
                        f"jsonb_build_object('last_run_id', NULL, 'released_at', {NOW_TEXT})) "
                        "ON CONFLICT (key) DO UPDATE SET state = 'free', run_id = NULL, "
                        "job = NULL, pid = NULL, host = NULL, started_at = NULL, "
                        "heartbeat_at = NULL, extra = jsonb_build_object('last_run_id', "
                        "COALESCE(lock_holders.run_id, lock_holders.extra->>'last_run_id'), "
                        f"'released_at', {NOW_TEXT}) || %s::jsonb",
                        (self.key, json.dumps({"last_run": last_run} if last_run else {})))
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", self.keys)
            except self.state.psycopg.Error as exc:
                raise self._error(exc) from exc
            finally:
                conn.close()
                self._conn = None
