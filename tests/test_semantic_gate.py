"""The semantic gate (`[gate]`): a cheap model asked before consequential tool calls and
before `finish` whether the step matches the job's intent. Seen through the installed
command, the real SDK and the fake Messages API, which serves the agent's turns and the
gate's verdicts in the order they are asked for."""

from __future__ import annotations

import json

from tests.fake_api import fault, text_turn, tool_turn
from tests.session_helpers import calls
from tests.turns import MEMORY, finish

TOOLS = '''
import json
from jobrunner import tool

def _log(tool, **args):
    with open("calls.log", "a") as f:
        f.write(json.dumps({"tool": tool, **args}) + "\\n")

@tool(risk="low", side_effect=False)
def search(query: str) -> str:
    """Search the CRM."""
    _log("search", query=query)
    return "3 customers signed up today"

@tool(risk="medium")
def create_record(name: str) -> dict:
    """Create a CRM record."""
    _log("create_record", name=name)
    return {"id": 7}

@tool(risk="medium")
def broken_record(name: str) -> dict:
    """Create a CRM record (the CRM is down)."""
    _log("broken_record", name=name)
    raise ConnectionError("CRM is down")
'''
GATE = '[gate]\nmodel = "claude-haiku-4-5"\n'
PROMPT = "Count today's signups and report the number. Do not change the CRM."
REFUSAL = "The job only reports signups; creating a record changes the CRM."


def verdict(passed: bool, reason: str = "It serves the job.") -> dict:
    return tool_turn([("verdict", {"verdict": "PASS" if passed else "FAIL", "reason": reason})])


def setup(project, body: str = GATE, **keys) -> None:
    project.tool_file("crm", TOOLS)
    keys.setdefault("tools", ["search", "create_record", "broken_record"])
    project.job("job", body, prompt=PROMPT, **keys)


def gate_requests(fake_api) -> list:
    return [r for r in fake_api.message_requests if r.body["model"] == "claude-haiku-4-5"]


def test_a_fail_stops_the_run_before_the_call_and_says_why_everywhere(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("create_record", {"name": "Ada"}),
                                ("search", {"query": "signups"})]),
                     verdict(False, REFUSAL))
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "ended ABORTED (semantic_gate)" in ran.stderr and REFUSAL in ran.stderr
    assert 'create_record({"name": "Ada"}): not_executed' in ran.stderr
    assert 'search({"query": "signups"}): not_executed' in ran.stderr
    assert calls(project) == []  # neither the refused call nor the one after it ran
    assert project.run("ledger", "--json").json() == []  # no intent was even recorded
    [record] = project.runs()
    assert (record["status"], record["stop_reason"]) == ("aborted", "semantic_gate")
    assert REFUSAL in record["report"]
    [verdict_event] = [e for e in project.trace(record["id"]) if e["event"] == "gate.verdict"]
    assert (verdict_event["verdict"], verdict_event["reason"]) == ("FAIL", REFUSAL)
    assert REFUSAL in project.memory("job")  # the failure log
    [alert] = project.alerts()
    assert alert["event"] == "run.aborted" and REFUSAL in alert["details"]["report"]
    # What the gate was shown: the prompt, the proposed call, a forced verdict.
    [asked] = gate_requests(fake_api)
    assert asked.body["tool_choice"] == {"type": "tool", "name": "verdict"}
    question = json.dumps(asked.body["messages"])
    assert PROMPT in question and "create_record" in question and "Ada" in question


def test_passes_let_the_run_go_on_and_the_gate_is_paid_for(project, fake_api):
    setup(project)
    fake_api.enqueue(
        tool_turn([("search", {"query": "signups"})]),  # low risk: not checked
        tool_turn([("create_record", {"name": "Ada"})]), verdict(True),
        tool_turn([("update_memory", MEMORY)]),
        tool_turn([finish(summary="3 signups today; record created.")]), verdict(True))
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    assert [c["tool"] for c in calls(project)] == ["search", "create_record"]
    [record] = project.runs()
    assert (record["status"], record["steps"]) == ("completed", 4)
    events = project.trace(record["id"])
    assert [(e["subject"], e["verdict"]) for e in events if e["event"] == "gate.verdict"] \
        == [("tool create_record", "PASS"), ("finish", "PASS")]
    # The gate saw what the run had established, and the final report it checked.
    second = json.dumps(gate_requests(fake_api)[1].body["messages"])
    assert "3 customers signed up today" in second and "record created" in second
    # Its tokens and cost are the run's: the record adds up both models' responses.
    responses = [e for e in events if e["event"] in ("model.response", "gate.response")]
    assert len(responses) == 6
    assert abs(record["cost_usd"] - sum(e["cost_usd"] for e in responses)) < 1e-5
    assert record["input_tokens"] == sum(
        e["usage"]["input_tokens"] + e["usage"]["cache_creation_input_tokens"]
        + e["usage"]["cache_read_input_tokens"] for e in responses)


def test_a_fail_before_finish_refuses_the_claimed_success(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("update_memory", MEMORY)]),
                     tool_turn([finish(summary="Reported 3 signups.")]),
                     verdict(False, "Nothing was counted: no search ran."))
    ran = project.run("run", "job")
    assert ran.code == 1 and "ended ABORTED (semantic_gate)" in ran.stderr
    assert "Nothing was counted: no search ran." in ran.stderr
    assert "finish(" in ran.stderr and "not_executed" in ran.stderr
    assert project.runs()[0]["summary"] != "Reported 3 signups."


def test_a_gate_that_errors_fails_closed(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("create_record", {"name": "Ada"})]), fault(status=400))
    ran = project.run("run", "job")
    assert ran.code == 1 and "ended ABORTED (semantic_gate)" in ran.stderr
    assert "could not check tool create_record, so it was not allowed" in ran.stderr
    assert calls(project) == []


def test_a_gate_reply_that_is_no_verdict_fails_closed(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("create_record", {"name": "Ada"})]),
                     text_turn("Looks fine to me."))
    ran = project.run("run", "job")
    assert ran.code == 1 and "holds no verdict call" in ran.stderr
    assert calls(project) == []


def test_the_gate_call_must_fit_the_run_budget(project, fake_api):
    # A gate model so dear that not even its smallest reply fits the run's $0.50: the
    # worst-case check stops the run before the gate is asked, and the call is not made.
    project.write("jobrunner.toml", (project.root / "jobrunner.toml").read_text()
                  + '[pricing."claude-dear-gate"]\ninput = 1000.0\noutput = 1000.0\n')
    setup(project, '[gate]\nmodel = "claude-dear-gate"\n')
    fake_api.enqueue(tool_turn([("create_record", {"name": "Ada"})]))
    ran = project.run("run", "job")
    assert ran.code == 3 and "ended LIMIT (max_cost_usd)" in ran.stderr
    assert "the semantic gate could not check tool create_record" in ran.stderr
    assert len(fake_api.message_requests) == 1  # the agent's turn only
    assert calls(project) == []
    assert project.runs()[0]["cost_usd"] <= 0.50


def test_nothing_runs_after_a_failed_call_with_the_gate_on(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("broken_record", {"name": "Ada"}),
                                ("create_record", {"name": "Bob"})]), verdict(True))
    ran = project.run("run", "job")
    assert ran.code == 1 and "ended ABORTED (tool_failed)" in ran.stderr
    assert [c["tool"] for c in calls(project)] == ["broken_record"]
    assert len(gate_requests(fake_api)) == 1  # the call after the failure was not checked


def test_only_the_listed_risk_tiers_are_checked(project, fake_api):
    setup(project, GATE + 'before = ["high"]\nfinish = false\n')
    fake_api.enqueue(tool_turn([("create_record", {"name": "Ada"})]),
                     tool_turn([("update_memory", MEMORY)]), tool_turn([finish()]))
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    assert gate_requests(fake_api) == []


def test_a_bad_gate_table_is_a_located_error(project, fake_api):
    setup(project, '[gate]\nmodel = "claude-nope"\nbefore = ["medium"]\n')
    ran = project.run("run", "job")
    assert ran.code == 2 and "jobs/job.toml:" in ran.stderr
    assert "gate.model: unknown model 'claude-nope'" in ran.stderr
    setup(project, '[gate]\nmodel = "claude-haiku-4-5"\nbefore = ["extreme"]\n')
    ran = project.run("run", "job")
    assert ran.code == 2 and "gate.before" in ran.stderr
    assert project.runs() == [] and fake_api.message_requests == []
