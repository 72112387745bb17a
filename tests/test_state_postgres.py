"""The storage contract against a real PostgreSQL server, and what only a shared database
has to get right: migrations started by several hosts at once, advisory locks held by
real processes (raced, killed), connections, passwords."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jobrunner.errors import ConfigError, StateError
from jobrunner.locks.file import Acquired, Busy
from jobrunner.redact import Redactor
from jobrunner.state.postgres import MIGRATIONS, LockLost, PostgresState
from tests.state_contract import StateContract

# One server (a session fixture) for all of them: in parallel runs, one worker takes them.
pytestmark = pytest.mark.xdist_group("postgres")

REPO = Path(__file__).resolve().parent.parent


class TestPostgresState(StateContract):
    @pytest.fixture(autouse=True)
    def _database(self, pg_url):
        self.url = pg_url
        self.opened: list[PostgresState] = []
        yield
        for state in self.opened:
            state.close()

    def make_state(self, redactor: Redactor) -> PostgresState:
        state = PostgresState(self.url, redactor, project="contract")
        self.opened.append(state)
        return state


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python process running `code` (with `state` opened on argv[1]); its stdout
    lines tell the test what it did, its stdin tells it when to go on."""
    prelude = textwrap.dedent("""
        import os, subprocess, sys, time
        from jobrunner.redact import Redactor
        from jobrunner.state.postgres import PostgresState
        def say(*words):
            print(*words, flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO)


def open_state(url: str) -> PostgresState:
    return PostgresState(url, Redactor([]), project="p")


# -- migrations -----------------------------------------------------------------------------


def test_hosts_starting_at_once_apply_each_migration_once(pg_url):
    starters = [child("""
        say("ready")
        sys.stdin.readline()
        PostgresState(sys.argv[1], Redactor([]), project="p")
        say("open")
    """, pg_url) for _ in range(6)]
    for proc in starters:
        assert proc.stdout.readline().strip() == "ready"
    for proc in starters:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes = [proc.communicate(timeout=120) for proc in starters]
    assert [proc.returncode for proc in starters] == [0] * 6, outcomes
    state = open_state(pg_url)
    with state._read() as db:
        names = [r["name"] for r in db.all("SELECT name FROM migrations ORDER BY name")]
    assert names == sorted(name for name, _ in MIGRATIONS)
    assert state.migrate() == []
    state.close()


def test_a_database_of_an_older_version_is_migrated_in_place(pg_server, pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as old:
        old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        name, sql = MIGRATIONS[0]
        old.execute(sql)
        old.execute("INSERT INTO migrations VALUES (%s, '2026-01-01T00:00:00Z')", (name,))
        old.execute("INSERT INTO runs (id, job, agent, status, trigger, started_at) "
                    "VALUES ('r0', 'job', 'job', 'completed', 'cron', '2026-01-01T00:00:00Z')")
    state = open_state(pg_url)
    assert state.get_run("r0").status == "completed"
    assert state.migrate() == []
    state.close()


# -- locks across processes -----------------------------------------------------------------


def test_of_25_processes_racing_for_one_lock_exactly_one_holds_it(pg_url):
    open_state(pg_url).close()  # migrated once, so the race is for the lock alone
    racers = [child("""
        lock = PostgresState(sys.argv[1], Redactor([]), project="p").lock("job-race")
        say("ready")
        sys.stdin.readline()
        got = lock.try_acquire()
        if type(got).__name__ == "Acquired":
            lock.mark_held(f"run-{os.getpid()}", "race")
        say(type(got).__name__)
        sys.stdin.read()  # the holder keeps the lock until every racer has answered
    """, pg_url) for _ in range(25)]
    for proc in racers:
        assert proc.stdout.readline().strip() == "ready"
    for proc in racers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    answers = [proc.stdout.readline().strip() for proc in racers]
    for proc in racers:
        proc.communicate(timeout=60)
    assert sorted(answers) == ["Acquired"] + ["Busy"] * 24
    winner = racers[answers.index("Acquired")]
    assert open_state(pg_url).lock("job-race").read_meta()["pid"] == winner.pid


def test_a_killed_holder_frees_the_lock_and_is_left_behind(pg_url):
    holder = child("""
        lock = PostgresState(sys.argv[1], Redactor([]), project="p").lock("job-k")
        assert type(lock.try_acquire()).__name__ == "Acquired"
        lock.mark_held("run-killed", "k", trigger="cron")
        tool = subprocess.Popen(["sleep", "300"])  # a tool process that outlives its run
        say(tool.pid)
        time.sleep(300)
    """, pg_url)
    tool_pid = int(holder.stdout.readline())
    state = open_state(pg_url)
    try:
        assert isinstance(state.lock("job-k").try_acquire(), Busy)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        lock = state.lock("job-k")
        got = lock.try_acquire(timeout=30)  # the server frees it once it sees the socket
        assert isinstance(got, Acquired)
        assert got.left_behind["run_id"] == "run-killed"
        assert got.left_behind["pid"] == holder.pid and got.left_behind["trigger"] == "cron"
        os.kill(tool_pid, 0)  # the tool inherited nothing that kept the lock alive
        lock.release()
    finally:
        os.kill(tool_pid, signal.SIGKILL)


def test_a_lock_lives_on_a_connection_of_its_own_for_as_long_as_it_is_held(pg_url):
    state = open_state(pg_url)

    def lock_sessions() -> list[int]:
        with state._read() as db:
            return [r["pid"] for r in db.all(
                "SELECT pid FROM pg_stat_activity WHERE application_name = ? "
                "AND datname = current_database()", ("jobrunner lock job-own",))]

    lock = state.lock("job-own")
    assert lock_sessions() == []
    assert isinstance(lock.try_acquire(), Acquired)
    [session] = lock_sessions()
    with state._read() as db:
        assert db.one("SELECT pg_backend_pid() AS pid")["pid"] != session
    state.close()  # the state's own connection: not the lock's
    assert isinstance(open_state(pg_url).lock("job-own").try_acquire(), Busy)
    lock.release()
    assert lock_sessions() == []


def test_a_waiter_queues_at_the_server_until_the_holder_releases(pg_url):
    state = open_state(pg_url)
    holder = state.lock("job-wait")
    holder.try_acquire()
    holder.mark_held("r1", "wait")
    assert isinstance(state.lock("job-wait").try_acquire(timeout=0.2), Busy)
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(
        state.lock("job-wait").try_acquire(timeout=60)))
    waiter.start()
    with state._read() as db:  # the waiter is in the server's queue
        while not db.one("SELECT 1 AS waiting FROM pg_locks l JOIN pg_database d ON "
                         "d.oid = l.database WHERE l.locktype = 'advisory' AND NOT l.granted "
                         "AND d.datname = current_database()"):
            time.sleep(0.01)
    holder.release()
    waiter.join()
    [got] = results
    assert isinstance(got, Acquired) and got.previous["state"] == "free"
    assert got.previous["last_run_id"] == "r1"


def test_a_lock_whose_connection_is_cut_is_lost_not_held(pg_url):
    state = open_state(pg_url)
    lock = state.lock("job-cut")
    lock.try_acquire()
    lock.mark_held("r1", "cut")
    with state._read() as db:
        db.one("SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
               "WHERE application_name = ?", ("jobrunner lock job-cut",))
    with pytest.raises(LockLost):
        lock.heartbeat()
    assert not lock.held
    got = state.lock("job-cut").try_acquire()
    assert isinstance(got, Acquired) and got.left_behind["run_id"] == "r1"


# -- connections and passwords --------------------------------------------------------------


def test_a_password_comes_from_the_named_variable_and_is_never_shown(pg_server,
                                                                     monkeypatch):
    dbname = pg_server.create_database()
    url = pg_server.tcp_url(dbname)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(StateError) as refused:
        PostgresState(url, Redactor([]), project="p")
    assert "password" in str(refused.value)
    with pytest.raises(ConfigError, match="JR_TEST_PG_PASSWORD is not set"):
        PostgresState(url, Redactor([]), project="p", password_env="JR_TEST_PG_PASSWORD")
    monkeypatch.setenv("JR_TEST_PG_PASSWORD", "jobrunner-test-pw")
    state = PostgresState(url, Redactor([]), project="p", password_env="JR_TEST_PG_PASSWORD")
    assert state.describe() == (f"postgres postgresql://jobrunner@127.0.0.1:"
                                f"{pg_server.port}/{dbname}")
    state.trace_write("r1", json.dumps({"said": "the password is jobrunner-test-pw"}))
    assert "jobrunner-test-pw" not in json.dumps(state.trace_read("r1"))
    lock = state.lock("job-pw")  # a lock's own connection finds the password too
    assert isinstance(lock.try_acquire(), Acquired)
    lock.release()
    state.close()
    monkeypatch.setenv("PGPASSWORD", "jobrunner-test-pw")  # libpq's own source
    PostgresState(url, Redactor([]), project="p").close()


def test_without_psycopg_the_error_names_the_extra(monkeypatch, pg_url):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"pip install 'jobrunner\[postgres\]'"):
        PostgresState(pg_url, Redactor([]), project="p", where="jobrunner.toml:3: state")


def test_a_connection_dropped_by_the_server_is_replaced(pg_server, pg_url):
    state = open_state(pg_url)
    with state._read() as db:
        first = db.one("SELECT pg_backend_pid() AS pid")["pid"]
    pg_server.admin(f"SELECT pg_terminate_backend({first})")
    with pytest.raises(StateError):
        state.get_run("r1")  # the statement in flight fails: it is not retried
    assert state.get_run("r1") is None  # and the next one has a fresh connection
    with state._read() as db:
        assert db.one("SELECT pg_backend_pid() AS pid")["pid"] != first
