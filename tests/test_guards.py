"""The guards end to end, one of each family (a failed tool, a limit, a loop), seen as a user
sees it through the installed command: status, exit code, stop reason, report, which tools
ran and which did not, the alert, the memory's failure log. Real SDK, fake Messages API,
real processes. Every other guard is tested in-process: tests/test_session_guards.py."""

from __future__ import annotations

import itertools

from tests.fake_api import tool_turn
from tests.session_helpers import TOOLS, calls, limits
from tests.turns import ending


def setup(project, name="job", body="", **keys):
    project.tool_file("ops", TOOLS)
    project.job(name, body, **keys)


def test_raising_tool_stops_the_run_and_the_rest_of_its_turn(project, fake_api):
    # Seed 001 "a broken tool yields a result, not a crash": the run ends recorded and reported.
    setup(project, tools=["broken_search", "publish"])
    fake_api.enqueue(tool_turn([("broken_search", {"query": "flights"}),
                                ("publish", {"text": "cheapest flight: $12"})]))
    ran = project.run("run", "job")
    assert ran.code == 1 and ran.stdout == ""
    assert "ended ABORTED (tool_failed)" in ran.stderr
    assert "ConnectionError: Search API is down" in ran.stderr
    assert "at step: 1" in ran.stderr
    assert 'broken_search({"query": "flights"}): failed' in ran.stderr
    assert 'publish({"text": "cheapest flight: $12"}): not_executed' in ran.stderr
    assert [c["tool"] for c in calls(project)] == ["broken_search"]
    assert len(fake_api.message_requests) == 1
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "tool_failed"
    assert "Search API is down" in record["report"]
    events = project.trace(record["id"])
    skipped = [e for e in events if e["event"] == "tool.skipped"]
    assert [e["tool"] for e in skipped] == ["publish"]
    [alert] = project.alerts()
    assert alert["event"] == "run.aborted" and "Search API is down" in alert["details"]["report"]
    assert "Search API is down" in project.memory("job")  # jobrunner's failure-log line


def test_timed_out_tool_ends_the_run_and_does_not_keep_the_process(project, fake_api):
    setup(project, tools=["hang", "publish"])
    fake_api.enqueue(tool_turn([("hang", {"seconds": 120}), ("publish", {"text": "x"})]))
    # The tool would sleep 120 s; the process must end long before the subprocess timeout.
    ran = project.run("run", "job", timeout=60)
    assert ran.code == 1
    assert "ended ABORTED (tool_timeout)" in ran.stderr
    assert "timed out after 1s" in ran.stderr
    assert 'publish({"text": "x"}): not_executed' in ran.stderr
    # The abandoned thread died with the process: it never got to finish its work.
    assert [c["tool"] for c in calls(project)] == ["hang"]
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "tool_timeout"
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]
    # The lock died with the process too: the next run starts at once.
    fake_api.enqueue(*ending())
    assert project.run("run", "job").code == 0


def test_max_steps_keeps_the_partial_output(project, fake_api):
    setup(project, body=limits(max_steps=2), tools=["search"])
    counter = itertools.count()
    fake_api.responder = lambda body: tool_turn(
        [("search", {"query": f"q{next(counter)}"})],
        text="Found three candidate flights so far; still comparing.")
    ran = project.run("run", "job")
    assert ran.code == 3
    assert "ended LIMIT (max_steps)" in ran.stderr and "reached max_steps (2)" in ran.stderr
    assert "model's last words: Found three candidate flights" in ran.stderr
    [record] = project.runs()
    assert record["status"] == "limit" and record["steps"] == 2
    assert record["summary"] == "Found three candidate flights so far; still comparing."
    assert [a["event"] for a in project.alerts()] == ["run.limit"]
    assert len(fake_api.message_requests) == 2


def test_same_call_a_third_time_is_a_loop(project, fake_api):
    setup(project, tools=["search", "publish"])
    fake_api.enqueue(
        tool_turn([("search", {"query": "cheapest flight"})]),
        tool_turn([("publish", {"text": "nothing yet"})]),
        tool_turn([("search", {"query": "cheapest flight"})]),
        tool_turn([("search", {"query": "cheapest flight"})]),
        *ending(),
    )
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "ended ABORTED (loop)" in ran.stderr and "a third time" in ran.stderr
    assert [c["tool"] for c in calls(project)] == ["search", "publish", "search"]
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "loop"
    assert "loop" in project.memory("job")  # the next session is told what went wrong
