"""The steps of a run as they happen: `run -v` on stderr, `logs [-f] [RUN_ID|JOB]`, and a
trace that keeps a bounded, redacted excerpt of each tool result for `show`."""

from __future__ import annotations

import json
import threading

from tests.conftest import reaped, wait_for
from tests.fake_api import fault, tool_turn
from tests.session_helpers import WAIT_FOR_GO

MEMORY = {"current_objective": "Keep going.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}
SECRET = "tok-0123456789-very-secret"

TOOLS = '''
import os, time
from pathlib import Path
from jobrunner import tool

@tool(risk="low", side_effect=False)
def lookup(key: str) -> dict:
    """Look a key up."""
    return {"key": key, "value": "forty-two", "token": os.environ["CRM_TOKEN"],
            "padding": "x" * 5000}
'''


def _setup(project):
    project.write("jobrunner.toml", f'state_dir = "{project.state}"\nsecrets = ["CRM_TOKEN"]\n')
    project.env["CRM_TOKEN"] = SECRET
    project.tool_file("ops", TOOLS)
    project.tool_file("waiting", WAIT_FOR_GO)
    project.job("ops", tools=["lookup", "wait_for_go"])


def test_run_verbose_writes_each_step_as_it_happens(project, fake_api):
    _setup(project)
    fake_api.enqueue(
        fault(529, headers={"retry-after": "0"}),
        tool_turn([("lookup", {"key": "answer"})], text="Looking it up."),
        tool_turn([("finish", FINISH)]),  # without update_memory: the guard reminds it
        tool_turn([("update_memory", MEMORY), ("finish", FINISH)]),
    )
    ran = project.run("run", "-v", "ops")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == ""
    lines = ran.stderr.splitlines()
    expected = [
        "run started: job ops, trigger manual",
        "model request (step 1, attempt 1",
        "model error (attempt 1): overloaded 529",
        "retrying the model call in 0",
        "model request (step 1, attempt 2",
        'model response: says "Looking it up."; calls lookup({"key": "answer"})',
        'tool call lookup({"key": "answer"}) [risk low]',
        'tool result lookup: ok (',
        "guard: nudged the model (finish_without_memory)",
        "memory update accepted",
        "run ended completed (finish)",
    ]
    at = 0
    for want in expected:  # each step, in the order it happened
        at = next((i for i in range(at, len(lines)) if want in lines[i]), None)
        assert at is not None, f"{want!r} not found in order in:\n{ran.stderr}"
    [result] = [ln for ln in lines if "tool result lookup" in ln]
    assert '"value": "forty-two"' in result
    assert SECRET not in ran.stderr and "[REDACTED]" in result


def test_show_says_what_a_tool_returned_bounded_and_redacted(project, fake_api):
    _setup(project)
    fake_api.enqueue(tool_turn([("lookup", {"key": "answer"})]),
                     tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    assert project.run("run", "ops").code == 0
    [record] = project.runs()
    shown = project.run("show", record["id"])
    assert 'tool result lookup: ok (' in shown.stdout and "forty-two" in shown.stdout
    [event] = [e for e in project.run("show", record["id"], "--json").json()["trace"]
               if e["event"] == "tool.result"]
    assert len(event["excerpt"]) <= 300 and event["excerpt_cut"] is True
    assert event["data_chars"] > 5000
    assert SECRET not in json.dumps(event) and "[REDACTED]" in event["excerpt"]


def _lines(proc) -> list[str]:
    """Lines a child writes to stdout, collected as they come."""
    got: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            got.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return got


def test_logs_follows_a_running_run_until_it_ends(project, fake_api):
    _setup(project)
    fake_api.enqueue(tool_turn([("wait_for_go", {})]),
                     tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    with reaped(project.popen("run", "ops")) as run:
        wait_for(lambda: (project.root / "started").exists(), what="the run's tool")
        [record] = project.runs()
        assert record["status"] == "running"
        with reaped(project.popen("logs", "-f", record["id"][:17])) as follow:
            got = _lines(follow)
            wait_for(lambda: any("tool call wait_for_go" in ln for ln in got),
                     what="the steps so far")
            assert not any("run ended" in ln for ln in got)
            (project.root / "go").touch()
            assert follow.wait(timeout=60) == 0  # it ends with the run
        assert run.wait(timeout=60) == 0
    wait_for(lambda: any("run ended completed (finish)" in ln for ln in got),
             what="the end of the run")
    assert got[0].startswith(f"run {record['id']}  job ops")
    # Not following: the run's steps once, by run id, by job, or the newest of the project.
    for args in ((record["id"],), ("ops",), ()):
        once = project.run("logs", *args)
        assert once.code == 0 and "tool result wait_for_go: ok" in once.stdout, args
    as_json = project.run("logs", "ops", "--json")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert events[0]["event"] == "run.start" and events[-1]["event"] == "run.end"


def test_logs_follows_each_new_run_of_a_job(project, fake_api):
    _setup(project)
    with reaped(project.popen("logs", "-f", "ops")) as follow:
        got = _lines(follow)
        for _ in range(2):
            fake_api.enqueue(tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
            assert project.run("run", "ops").code == 0
        wait_for(lambda: sum("run ended completed" in ln for ln in got) == 2,
                 what="both runs followed")
        ids = [r["id"] for r in reversed(project.runs())]
        assert [ln.split()[1] for ln in got if ln.startswith("run ")] == ids
        assert any(ln.startswith(f"[{ids[1][-6:]}] ") for ln in got)
    unknown = project.run("logs", "nope-not-a-run")
    assert unknown.code == 2 and "no run 'nope-not-a-run'" in unknown.stderr
