"""Every guard of the session, in this process: the real runner, session, tools and state
with a scripted model. Each test says what a user would see: exit code, report, stop reason,
what the model was sent, which tools ran. One of each family also runs end to end through
the installed command: tests/test_guards.py."""

from __future__ import annotations

import itertools
import json
import time

from tests.fake_api import text_turn, tool_turn
from tests.inprocess import ScriptedClient
from tests.session_helpers import TOOLS, calls, limits, tool_results
from tests.turns import ending, finish


def setup(project, name="job", body="", **keys):
    project.tool_file("ops", TOOLS)
    project.job(name, body, **keys)


def test_tool_result_not_ok_stops_the_run(inproc):
    inproc.tool_file("soft", '''
        from jobrunner import ToolResult, tool

        @tool(risk="low", side_effect=False)
        def fetch(day: str) -> ToolResult:
            """Fetch."""
            return ToolResult(ok=False, error="upstream answered 503")
    ''')
    inproc.job("soft", tools=["fetch"])
    ran = inproc.run_job("soft", ScriptedClient(tool_turn([("fetch", {"day": "today"})])))
    assert ran.code == 1 and "upstream answered 503" in ran.report
    assert inproc.runs()[0]["stop_reason"] == "tool_failed"


def test_tool_is_cut_off_when_the_run_time_runs_out(inproc):
    # The tool may take 300 s; the run has 15 s in all, 13 of them gone before its first
    # call (the session's clock, injected), and what is left bounds the tool too.
    setup(inproc, body=limits(max_seconds="15s"), tools=["slow"])
    model = ScriptedClient(tool_turn([("slow", {"seconds": 120})]))
    ended = inproc.session("job", model, started_monotonic=time.monotonic() - 13)
    assert ended.code == 3
    assert "ended LIMIT (max_seconds)" in ended.report
    assert "ran out during tool slow" in ended.report
    assert [c["tool"] for c in calls(inproc)] == ["slow"]


def test_invalid_call_is_answered_with_the_schema_and_the_model_can_correct(inproc):
    setup(inproc, tools=["search"])
    model = ScriptedClient(
        tool_turn([("search", {"q": "flights"})]),
        tool_turn([("search", {"query": "flights"})]),
        *ending(),
    )
    ran = inproc.run_job("job", model)
    assert ran.code == 0, ran.report
    [answer] = tool_results(model.message_requests[1])
    assert answer["is_error"] is True
    assert "invalid arguments for search" in answer["content"]
    assert '"query":{"type":"string"}' in answer["content"]  # the valid schema, quoted
    assert calls(inproc) == [{"tool": "search", "query": "flights"}]  # only the valid one ran


def test_max_invalid_calls_aborts(inproc):
    setup(inproc, tools=["search"])
    model = ScriptedClient(
        tool_turn([("serach", {"query": "flights"})]),
        tool_turn([("search", {"query": 42})]),
        *ending(),
    )
    ran = inproc.run_job("job", model)
    assert ran.code == 1
    assert "ended ABORTED (max_invalid_calls)" in ran.report
    [answer] = tool_results(model.message_requests[1])
    assert answer["is_error"] and "unknown tool 'serach'" in answer["content"]
    assert "search" in answer["content"].split("the tools are:")[1]
    assert "Did you mean 'search'? Its schema:" in answer["content"]
    assert len(model.message_requests) == 2  # the second invalid call (limit 2) ended it
    assert calls(inproc) == []
    assert inproc.runs()[0]["status"] == "aborted"


def test_ambiguous_tool_with_new_arguments_stops_at_max_tool_calls(inproc):
    # Seed 001 "infinite loop prevention": a tool that never gives a clear answer, asked
    # again and again with different arguments, is called at most a handful of times.
    setup(inproc, body=limits(max_tool_calls=4), tools=["search"])
    counter = itertools.count()
    model = ScriptedClient(responder=lambda body: tool_turn(
        [("search", {"query": f"try {next(counter)}"})]))
    ran = inproc.run_job("job", model)
    assert ran.code == 3 and "ended LIMIT (max_tool_calls)" in ran.report
    assert len(calls(inproc)) == 4
    assert "not_executed" in ran.report  # the fifth was refused, and said so


def test_two_identical_turns_get_one_nudge_then_stop(inproc):
    setup(inproc, tools=["search"])
    same = tool_turn([("search", {"query": "status"})], text="Checking the status.")
    model = ScriptedClient(same, same, same, *ending())
    ran = inproc.run_job("job", model)
    assert ran.code == 1 and "ended ABORTED (stalled)" in ran.report
    nudged = model.message_requests[2].body["messages"][-1]["content"]
    assert any("last two turns were identical" in b.get("text", "") for b in nudged)
    assert len(model.message_requests) == 3
    assert len(calls(inproc)) == 2


def test_no_finish_gets_one_reminder_then_stalled(inproc):
    setup(inproc, tools=["search"])
    model = ScriptedClient(text_turn("I think the numbers look fine."),
                           text_turn("All good, nothing more to do."), *ending())
    ran = inproc.run_job("job", model)
    assert ran.code == 1 and "ended ABORTED (stalled)" in ran.report
    reminder = model.message_requests[1].body["messages"][-1]["content"]
    assert "without calling `finish`" in json.dumps(reminder)
    assert len(model.message_requests) == 2
    [record] = inproc.runs()
    assert record["summary"] == "All good, nothing more to do."


def test_calls_after_finish_in_the_same_turn_do_not_run(inproc):
    setup(inproc, tools=["publish"])
    model = ScriptedClient(tool_turn([("update_memory", {
        "current_objective": "x", "key_decisions": [], "what_not_to_do": [], "open_items": []}),
        finish(), ("publish", {"text": "late"})]))
    ran = inproc.run_job("job", model)
    assert ran.code == 0, ran.report
    assert calls(inproc) == []
