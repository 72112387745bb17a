"""Output that fits where it goes: tables within the terminal's width (the whole value in
--json), status words coloured on a terminal only, and a word on a terminal when `run`
skips because a live run has the lock (cron still gets nothing)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios

from tests.conftest import jobrunner_executable, reaped, wait_for
from tests.fake_api import tool_turn
from tests.session_helpers import WAIT_FOR_GO

ESCAPE = "\x1b["
MEMORY = {"current_objective": "Keep going.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}
LONG = "a-stop-reason-" * 12


def in_terminal(project, *args: str, columns: int = 80, env: dict | None = None):
    """`jobrunner ARGS` with a pseudo-terminal of `columns` columns as its stdin, stdout
    and stderr; returns (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environment = {k: v for k, v in {**project.env, **(env or {})}.items()
                   if k not in ("COLUMNS", "NO_COLOR") or k in (env or {})}
    proc = subprocess.Popen([jobrunner_executable(), *args], cwd=project.root,
                            env=environment, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    with reaped(proc):
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
        proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, output.decode("utf-8", "replace").replace("\r\n", "\n")


def _runs(project, fake_api, count: int = 2) -> None:
    project.job("a-job-with-a-rather-long-name-for-its-table", tools=[])
    for _ in range(count):
        fake_api.enqueue(tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
        assert project.run("run", "a-job-with-a-rather-long-name-for-its-table").code == 0


def test_tables_fit_the_width_and_json_keeps_whole_values(project, fake_api):
    _runs(project, fake_api)
    name = "a-job-with-a-rather-long-name-for-its-table"
    narrow = project.run("runs", env={"COLUMNS": "70"})
    assert narrow.code == 0
    lines = narrow.stdout.splitlines()
    assert len(lines) == 3 and all(len(line) <= 70 for line in lines), narrow.stdout
    ids = [r["id"] for r in project.runs()]
    assert all(run_id in narrow.stdout for run_id in ids)  # short columns stay whole
    assert "completed" in narrow.stdout
    assert name not in narrow.stdout  # the long one was cut...
    assert [r["job"] for r in project.runs()] == [name, name]  # ...and --json has it whole
    # Not a terminal, no COLUMNS (a pipe, a cron mail): no 300-character lines either.
    piped = project.run("runs")
    assert all(len(line) <= 100 for line in piped.stdout.splitlines())
    assert ESCAPE not in piped.stdout


def test_status_words_are_coloured_on_a_terminal_only(project, fake_api):
    _runs(project, fake_api, count=1)
    code, shown = in_terminal(project, "runs", columns=90)
    assert code == 0
    assert re.search(r"\x1b\[32mcompleted\x1b\[0m", shown), shown
    assert all(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) <= 90 for line in shown.splitlines())
    code, plain = in_terminal(project, "runs", columns=90, env={"NO_COLOR": "1"})
    assert code == 0 and ESCAPE not in plain and "completed" in plain
    assert ESCAPE not in project.run("runs").stdout


def test_a_skip_for_a_live_run_says_one_line_on_a_terminal(project, fake_api):
    project.tool_file("slow", WAIT_FOR_GO)
    project.job("slow", tools=["wait_for_go"])
    fake_api.enqueue(tool_turn([("wait_for_go", {})]),
                     tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    with reaped(project.popen("run", "slow")) as first:
        wait_for(lambda: (project.root / "started").exists(), what="the first run's tool")
        code, said = in_terminal(project, "run", "slow")
        assert code == 0
        [line] = said.strip().splitlines()
        assert line.startswith("jobrunner: slow: not run: lock held by run ")
        quiet = project.run("run", "slow")  # cron's view: no terminal, no output
        assert quiet.code == 0 and quiet.stdout == "" and quiet.stderr == ""
        (project.root / "go").touch()
        first.wait(timeout=60)
    assert first.returncode == 0
    assert sorted(r["status"] for r in project.runs()) == ["completed", "skipped", "skipped"]
