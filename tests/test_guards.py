"""Every guard of the session, seen as a user sees it: status, exit code, stop reason,
report, which tools ran and which did not, the alert. Real SDK, fake Messages API."""

from __future__ import annotations

import itertools
import json

from tests.fake_api import text_turn, tool_turn
from tests.session_helpers import TOOLS, calls, ending, finish, limits, tool_results, trace


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
    events = trace(project, record["id"])
    skipped = [e for e in events if e["event"] == "tool.skipped"]
    assert [e["tool"] for e in skipped] == ["publish"]
    [alert] = project.alerts()
    assert alert["event"] == "run.aborted" and "Search API is down" in alert["details"]["report"]
    assert "Search API is down" in project.memory("job")  # jobrunner's failure-log line


def test_tool_result_not_ok_stops_the_run(project, fake_api):
    project.tool_file("soft", '''
        from jobrunner import ToolResult, tool

        @tool(risk="low", side_effect=False)
        def fetch(day: str) -> ToolResult:
            """Fetch."""
            return ToolResult(ok=False, error="upstream answered 503")
    ''')
    project.job("soft", tools=["fetch"])
    fake_api.enqueue(tool_turn([("fetch", {"day": "today"})]))
    ran = project.run("run", "soft")
    assert ran.code == 1 and "upstream answered 503" in ran.stderr
    assert project.runs()[0]["stop_reason"] == "tool_failed"


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


def test_tool_is_cut_off_when_the_run_time_runs_out(project, fake_api):
    # The tool may take 300 s; the run only has 15 s in all, and that bounds the tool too.
    setup(project, body=limits(max_seconds="15s"), tools=["slow"])
    fake_api.enqueue(tool_turn([("slow", {"seconds": 120})]))
    ran = project.run("run", "job", timeout=60)
    assert ran.code == 3
    assert "ended LIMIT (max_seconds)" in ran.stderr and "ran out during tool slow" in ran.stderr
    assert [c["tool"] for c in calls(project)] == ["slow"]


def test_invalid_call_is_answered_with_the_schema_and_the_model_can_correct(project, fake_api):
    setup(project, tools=["search"])
    fake_api.enqueue(
        tool_turn([("search", {"q": "flights"})]),
        tool_turn([("search", {"query": "flights"})]),
        *ending(),
    )
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [answer] = tool_results(fake_api.message_requests[1])
    assert answer["is_error"] is True
    assert "invalid arguments for search" in answer["content"]
    assert '"query":{"type":"string"}' in answer["content"]  # the valid schema, quoted
    assert calls(project) == [{"tool": "search", "query": "flights"}]  # only the valid one ran


def test_max_invalid_calls_aborts(project, fake_api):
    setup(project, tools=["search"])
    fake_api.enqueue(
        tool_turn([("serach", {"query": "flights"})]),
        tool_turn([("search", {"query": 42})]),
        *ending(),
    )
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "ended ABORTED (max_invalid_calls)" in ran.stderr
    [answer] = tool_results(fake_api.message_requests[1])
    assert answer["is_error"] and "unknown tool 'serach'" in answer["content"]
    assert "search" in answer["content"].split("the tools are:")[1]
    assert "Did you mean 'search'? Its schema:" in answer["content"]
    assert len(fake_api.message_requests) == 2  # the second invalid call (limit 2) ended it
    assert calls(project) == []
    assert project.runs()[0]["status"] == "aborted"


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


def test_ambiguous_tool_with_new_arguments_stops_at_max_tool_calls(project, fake_api):
    # Seed 001 "infinite loop prevention": a tool that never gives a clear answer, asked
    # again and again with different arguments, is called at most a handful of times.
    setup(project, body=limits(max_tool_calls=4), tools=["search"])
    counter = itertools.count()
    fake_api.responder = lambda body: tool_turn([("search", {"query": f"try {next(counter)}"})])
    ran = project.run("run", "job")
    assert ran.code == 3 and "ended LIMIT (max_tool_calls)" in ran.stderr
    assert len(calls(project)) == 4
    assert "not_executed" in ran.stderr  # the fifth was refused, and said so


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


def test_two_identical_turns_get_one_nudge_then_stop(project, fake_api):
    setup(project, tools=["search"])
    same = tool_turn([("search", {"query": "status"})], text="Checking the status.")
    fake_api.enqueue(same, same, same, *ending())
    ran = project.run("run", "job")
    assert ran.code == 1 and "ended ABORTED (stalled)" in ran.stderr
    nudged = fake_api.message_requests[2].body["messages"][-1]["content"]
    assert any("last two turns were identical" in b.get("text", "") for b in nudged)
    assert len(fake_api.message_requests) == 3
    assert len(calls(project)) == 2


def test_no_finish_gets_one_reminder_then_stalled(project, fake_api):
    setup(project, tools=["search"])
    fake_api.enqueue(text_turn("I think the numbers look fine."),
                     text_turn("All good, nothing more to do."), *ending())
    ran = project.run("run", "job")
    assert ran.code == 1 and "ended ABORTED (stalled)" in ran.stderr
    reminder = fake_api.message_requests[1].body["messages"][-1]["content"]
    assert "without calling `finish`" in json.dumps(reminder)
    assert len(fake_api.message_requests) == 2
    [record] = project.runs()
    assert record["summary"] == "All good, nothing more to do."


def test_calls_after_finish_in_the_same_turn_do_not_run(project, fake_api):
    setup(project, tools=["publish"])
    fake_api.enqueue(tool_turn([("update_memory", {
        "current_objective": "x", "key_decisions": [], "what_not_to_do": [], "open_items": []}),
        finish(), ("publish", {"text": "late"})]))
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    assert calls(project) == []
