"""The storage contract, against the embedded SQLite backend; and its migrations."""

from __future__ import annotations

import sqlite3

import pytest

from jobrunner.redact import Redactor
from jobrunner.state.sqlite import MIGRATIONS, SQLiteState
from tests.state_contract import StateContract


class TestSQLiteState(StateContract):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path):
        self.folder = tmp_path

    def make_state(self, redactor: Redactor) -> SQLiteState:
        return SQLiteState(self.folder, redactor)


def test_a_database_of_an_older_version_is_migrated_in_place(tmp_path):
    old = sqlite3.connect(tmp_path / "jobrunner.sqlite3")
    old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    first_name, first_sql = MIGRATIONS[0]
    old.executescript(first_sql)
    old.execute("INSERT INTO migrations VALUES (?, '2026-01-01T00:00:00Z')", (first_name,))
    old.execute("INSERT INTO runs (id, job, agent, status, trigger, started_at) "
                "VALUES ('r0', 'job', 'job', 'completed', 'cron', '2026-01-01T00:00:00Z')")
    old.commit()
    old.close()
    state = SQLiteState(tmp_path, Redactor([]))
    assert state.migrate() == []  # everything applied at open, once
    assert state.get_run("r0").status == "completed"  # what was there is kept
    names = {r[0] for r in sqlite3.connect(tmp_path / "jobrunner.sqlite3").execute(
        "SELECT name FROM migrations")}
    assert names == {name for name, _ in MIGRATIONS}



def test_many_processes_opening_a_new_state_at_once_all_get_it(tmp_path):
    """The daemon's firings at start open the state at the same instant as the runs it
    started: the first switch to WAL mode must not refuse the others ("database is
    locked" at once, without the busy timeout, which lost a firing)."""
    import os
    import time

    for attempt in range(6):
        folder = tmp_path / f"state-{attempt}"
        folder.mkdir()
        go = folder / "go"
        children = []
        for _ in range(10):
            pid = os.fork()
            if pid == 0:  # the child: never returns into pytest
                code = 1
                try:
                    while not go.exists():
                        time.sleep(0.001)
                    SQLiteState(folder, Redactor([])).list_runs(None, 1)
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        time.sleep(0.2)  # every child waiting
        go.touch()
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        assert codes == [0] * len(children), (attempt, codes)
