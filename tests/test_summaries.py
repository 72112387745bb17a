"""Summaries instead of bare elision (`limits.summarize_with`): when old tool results are
elided, a cheap model's summary of them takes the place of the last note, marked as a
summary, fenced as data, paid for by the run. Through the installed command; the fake
API answers the agent by its step and the summary model (a request with no tools) with
a summary."""

from __future__ import annotations

import json

from tests.fake_api import fault, text_turn, tool_turn
from tests.session_helpers import limits
from tests.turns import MEMORY, finish

TOOLS = '''
from jobrunner import tool

@tool(risk="low", side_effect=False)
def report(day: int) -> str:
    """The day's report."""
    return f"Day {day}: {100 + day} signups. " + "detail " * 340
'''
SUMMARY = "Day 1 had 101 signups and day 2 had 102."
DAYS = 5


def responder(summary=None):
    """The agent reads five reports, then saves its memory and finishes; a request
    without tools is the summary model's."""
    def respond(body):
        if not body.get("tools"):
            return summary or text_turn(SUMMARY)
        step = sum(1 for m in body["messages"] if m["role"] == "assistant") + 1
        if step <= DAYS:
            return tool_turn([("report", {"day": step})])
        if step == DAYS + 1:
            return tool_turn([("update_memory", MEMORY)])
        return tool_turn([finish()])
    return respond


def setup(project, model="claude-haiku-4-5", **more) -> None:
    project.tool_file("reports", TOOLS)
    project.job("job", limits(context_tokens=3000, summarize_with=model, **more),
                tools=["report"])


def agent_requests(fake_api) -> list:
    return [r for r in fake_api.message_requests if r.body.get("tools")]


def test_elided_results_are_replaced_by_a_marked_summary_paid_for_by_the_run(project,
                                                                            fake_api):
    setup(project, summary_tokens=120)
    fake_api.responder = responder()
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    events = project.trace(record["id"])
    batches = [e for e in events if e["event"] == "context.elided"]
    summaries = [e for e in events if e["event"] == "context.summary"]
    asked = [r for r in fake_api.message_requests if not r.body.get("tools")]
    assert batches and len(summaries) == len(batches) == len(asked)  # one per batch
    assert all(r.body["model"] == "claude-haiku-4-5" and r.body["max_tokens"] <= 120
               for r in asked)
    assert "Day 1: 101 signups" in json.dumps(asked[0].body["messages"])
    # The agent's next request carries the summary, marked and fenced, where the notes were.
    after = [r for r in agent_requests(fake_api) if SUMMARY in json.dumps(r.body)]
    assert after
    blocks = [b for m in after[0].body["messages"] if isinstance(m["content"], list)
              for b in m["content"] if b.get("type") == "tool_result"]
    [marked] = [b for b in blocks if SUMMARY in json.dumps(b)]
    text = marked["content"] if isinstance(marked["content"], str) else \
        marked["content"][0]["text"]
    assert text.startswith("[summary of the ") and "not the tools' output" in text
    assert "<<<tool-output " in text and "<<<end-tool-output " in text
    # The rules, prompt and memory (the system prompt) are never touched.
    assert len({json.dumps(r.body["system"]) for r in agent_requests(fake_api)}) == 1
    # The summaries' tokens and cost are the run's.
    responses = [e for e in events if e["event"] in ("model.response", "summary.response")]
    assert len([e for e in responses if e["event"] == "summary.response"]) == len(asked)
    assert abs(record["cost_usd"] - sum(e["cost_usd"] for e in responses)) < 1e-5


def test_a_summary_the_run_cannot_afford_leaves_the_plain_elision(project, fake_api):
    project.write("jobrunner.toml", (project.root / "jobrunner.toml").read_text()
                  + '[pricing."claude-dear-summary"]\ninput = 1000.0\noutput = 1000.0\n')
    setup(project, model="claude-dear-summary")
    fake_api.responder = responder()
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    assert all(r.body.get("tools") for r in fake_api.message_requests)  # never asked
    [record] = project.runs()
    skipped = [e for e in project.trace(record["id"])
               if e["event"] == "context.summary_skipped"]
    assert skipped and skipped[0]["reason"].startswith("max_cost_usd")
    assert record["cost_usd"] <= 0.50


def test_a_summary_call_that_fails_leaves_the_plain_elision(project, fake_api):
    setup(project)
    fake_api.responder = responder(summary=fault(status=400))
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    events = project.trace(record["id"])
    assert [e for e in events if e["event"] == "context.summary_skipped"]
    assert not [e for e in events if e["event"] == "context.summary"]
    assert "[elided to save context" in json.dumps(agent_requests(fake_api)[-1].body)


def test_an_unknown_summary_model_is_a_located_error(project, fake_api):
    setup(project, model="claude-nope")
    ran = project.run("run", "job")
    assert ran.code == 2
    assert "limits.summarize_with: unknown model 'claude-nope'" in ran.stderr
    assert fake_api.message_requests == []
