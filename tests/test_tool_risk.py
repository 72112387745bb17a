"""A `low` tool is a read: it does not go through the ledger unless it says it acts, so a
read that raises or is killed stops one run, never every later run of the job."""

from __future__ import annotations

import signal

from jobrunner.tools.api import tool
from tests.conftest import wait_for
from tests.fake_api import tool_turn
from tests.turns import ending

# Declared by risk only: whether it is a side effect is left to the default.
READ_TOOL = '''
import time
from pathlib import Path
from jobrunner import tool
from jobrunner.tools.api import current_context


@tool(risk="low", timeout=120)
def fetch(day: str) -> str:
    """Fetch the day's numbers."""
    root = Path(current_context().project_root)
    (root / "in-tool").write_text(day)
    if (root / "upstream-down").exists():
        raise ConnectionError("upstream answered 503 Service Unavailable")
    if (root / "upstream-slow").exists():
        time.sleep(60)
    return f"numbers for {day}: 147"
'''


def read_job(project, **keys) -> None:
    project.tool_file("reads", READ_TOOL)
    project.job("report", tools=["fetch"], **keys)


def fetch_turn():
    return tool_turn([("fetch", {"day": "2026-11-20"})])


def good_turns():
    return [fetch_turn(), *ending()]


def test_the_policy_of_each_tier_when_side_effect_is_not_said():
    def probe() -> None:
        """A probe."""

    assert tool(risk="low")(probe).__jobrunner_tool__.side_effect is False
    assert tool(risk="low", side_effect=True)(probe).__jobrunner_tool__.side_effect is True
    assert tool(risk="medium")(probe).__jobrunner_tool__.side_effect is True
    assert tool(risk="high")(probe).__jobrunner_tool__.side_effect is True
    assert tool(probe).__jobrunner_tool__.side_effect is True
    # A read may be retried: nothing it does can happen twice.
    assert tool(risk="low", retries=2)(probe).__jobrunner_tool__.retries == 2


def test_a_low_risk_read_that_raises_stops_one_run_not_the_next(project, fake_api):
    read_job(project)
    (project.root / "upstream-down").write_text("")
    fake_api.enqueue(fetch_turn())
    failed = project.run("run", "report")
    assert failed.code == 1
    assert "ended ABORTED (tool_failed)" in failed.stderr
    assert "upstream answered 503" in failed.stderr
    assert "ledger resolve" not in failed.stderr  # nothing is in doubt after a read
    assert project.run("ledger", "--json").json() == []

    (project.root / "upstream-down").unlink()
    fake_api.enqueue(*good_turns())
    again = project.run("run", "report")
    assert again.code == 0, again.stderr
    statuses = [(r["status"], r["stop_reason"]) for r in project.runs("report")]
    assert statuses == [("completed", "finish"), ("aborted", "tool_failed")]


def test_a_run_killed_during_a_low_risk_read_is_crashed_and_the_next_runs(project, fake_api):
    read_job(project)
    (project.root / "upstream-slow").write_text("")
    fake_api.enqueue(fetch_turn())
    proc = project.popen("run", "report")
    try:
        wait_for(lambda: (project.root / "in-tool").exists() or proc.poll() is not None,
                 what="the run to be inside the read")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    [killed] = project.runs("report")
    assert killed["status"] == "running"

    (project.root / "upstream-slow").unlink()
    fake_api.enqueue(*good_turns())
    after = project.run("run", "report")
    assert after.code == 0, after.stderr
    records = {r["id"]: r for r in project.runs("report")}
    assert records[killed["id"]]["status"] == "crashed"
    [newest] = [r for r in records.values() if r["id"] != killed["id"]]
    assert newest["status"] == "completed"
    assert killed["id"] in {a["run_id"] for a in project.alerts() if a["event"] == "run.crashed"}


def test_resume_after_an_auto_pause_from_failed_reads_runs_the_model(project, fake_api):
    read_job(project, pause_after=2)
    (project.root / "upstream-down").write_text("")
    for _ in range(2):
        fake_api.enqueue(fetch_turn())
        assert project.run("run", "report").code == 1
    assert project.run("run", "report").code == 75  # paused
    assert "job.paused" in [a["event"] for a in project.alerts()]

    (project.root / "upstream-down").unlink()
    assert project.run("resume", "report").code == 0
    asked = len(fake_api.message_requests)
    fake_api.enqueue(*good_turns())
    resumed = project.run("run", "report")
    assert resumed.code == 0, resumed.stderr
    assert len(fake_api.message_requests) == asked + 3  # the model ran the whole session
    newest = project.runs("report")[0]
    assert (newest["status"], newest["stop_reason"]) == ("completed", "finish")
