"""`jobrunner status`: the daemon (up or not, since when, where), each job's state, last
outcome and next run, pending approvals, undelivered alerts, and the state in use."""

from __future__ import annotations

import socket
import subprocess

from tests.conftest import jobrunner_executable, reaped, wait_for
from tests.fake_api import tool_turn
from tests.session_helpers import WAIT_FOR_GO

MEMORY = {"current_objective": "Keep going.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}

TOOLS = '''
from pathlib import Path
import time
from jobrunner import ToolResult, tool

@tool(risk="low", side_effect=False)
def broken() -> ToolResult:
    """Always fails."""
    return ToolResult(ok=False, error="no")

@tool(risk="medium")
def charge(amount: float) -> dict:
    """Charge a card (the payment backend hangs up mid-call)."""
    raise ConnectionError("connection reset")

@tool
def refund(amount: float) -> dict:
    """Refund (high risk)."""
    return {"refunded": amount}
'''


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _by_name(data: dict) -> dict:
    return {j["name"]: j for j in data["jobs"]}


def test_status_shows_every_kind_of_job_state(project, fake_api):
    project.write("jobrunner.toml", f'''
        state_dir = "{project.state}"
        [[alerts.channels]]
        type = "webhook"
        url = "http://127.0.0.1:{_dead_port()}/hook"
        timeout = "1s"
    ''')
    project.tool_file("ops", TOOLS)
    project.tool_file("waiting", WAIT_FOR_GO)
    project.job("fine", tools=[])
    project.job("flaky", tools=["broken"], pause_after=1)
    project.job("payer", tools=["charge"])
    project.job("refunds", tools=["refund"])
    project.job("slow", tools=["wait_for_go"])
    project.write("jobs/broken.toml", 'schedule = "0 8 * * *"\n')
    fake_api.enqueue(tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    assert project.run("run", "fine").code == 0
    fake_api.enqueue(tool_turn([("broken", {})]))
    assert project.run("run", "flaky").code == 1  # paused after one failure
    fake_api.enqueue(tool_turn([("charge", {"amount": 5})]))
    assert project.run("run", "payer").code == 1  # in doubt
    fake_api.enqueue(tool_turn([("refund", {"amount": 7})]),
                     tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    assert project.run("run", "refunds").code == 4
    fake_api.enqueue(tool_turn([("wait_for_go", {})]),
                     tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    with reaped(project.popen("run", "slow")) as slow:
        wait_for(lambda: (project.root / "started").exists(), what="the slow run's tool")
        shown = project.run("status", "--json")
        plain = project.run("status")
        (project.root / "go").touch()
        assert slow.wait(timeout=60) == 0
    assert shown.code == 0, shown.stderr
    data = shown.json()
    jobs = _by_name(data)
    assert {n: j["state"] for n, j in jobs.items()} == {
        "fine": "scheduled", "flaky": "paused", "payer": "in doubt", "refunds": "scheduled",
        "slow": "running", "broken": "invalid"}
    assert jobs["fine"]["last_status"] == "completed" and jobs["fine"]["next_run"]
    assert jobs["flaky"]["last_status"] == "aborted" and jobs["flaky"]["paused_since"]
    assert jobs["payer"]["in_doubt"] and jobs["refunds"]["last_status"] == "needs_approval"
    assert jobs["slow"]["running_run"] == [r for r in project.runs("slow")][0]["id"]
    assert "jobs/broken.toml:1: prompt: required key is missing" in jobs["broken"]["problems"]
    [approval] = data["approvals"]
    assert approval["job"] == "refunds" and approval["tool"] == "refund"
    assert data["undelivered_alerts"] >= 3  # the dead webhook has them all
    assert data["state"]["backend"] == "sqlite"
    assert str(project.state) in data["state"]["where"]
    assert data["daemon"]["up"] is False
    # One screen, as a person reads it.
    assert plain.code == 0, plain.stderr
    lines = plain.stdout.splitlines()
    # (A long temporary path may wrap onto its own line: read the words, not the lines.)
    said = " ".join(plain.stdout.split())
    assert f"state: sqlite {project.state / 'jobrunner.sqlite3'} daemon: down (never " \
           "started here)" in said
    row = {ln.split()[0]: ln for ln in lines if ln.split() and ln.split()[0] in jobs}
    assert row["payer"].split()[1:3] == ["in", "doubt"]
    assert row["slow"].split()[1] == "running"
    assert row["broken"].split()[1] == "invalid"
    assert f"approvals: 1 pending; {approval['id']} (refund for refunds)" in plain.stdout
    assert f"alerts: {data['undelivered_alerts']} undelivered" in plain.stdout
    assert all(len(line) <= 100 for line in lines)


def test_status_says_whether_the_daemon_is_up_since_when_and_where(project):
    project.job("later", schedule="0 0 1 1 *")
    daemon = subprocess.Popen([jobrunner_executable(), "daemon", "--poll", "0.5"],
                              cwd=project.root, env=project.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    with reaped(daemon):
        up = wait_for(lambda: (d := project.run("status", "--json").json()["daemon"])["up"]
                      and d, what="the daemon up in status")
        assert up["pid"] == daemon.pid and up["host"] == socket.gethostname() and up["since"]
        shown = project.run("status")
        assert f"daemon: up since {up['since']} on {socket.gethostname()} (pid {daemon.pid})" \
            in shown.stdout
        for _ in range(5):  # looking does not disturb it
            assert project.run("status", "--json").json()["daemon"]["up"]
        assert daemon.poll() is None
        daemon.terminate()
        assert daemon.wait(timeout=60) == 0
    down = project.run("status", "--json").json()["daemon"]
    assert down["up"] is False and down["since"] and not down["died"]
    assert "daemon: down since " in project.run("status").stdout
