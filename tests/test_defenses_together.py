"""The gate, compensation, summaries and streaming all on in one run that ends at its cost
limit: the limit holds over every model's calls, nothing runs after the stop but the
declared undos, and the run's cost is the sum of what each call cost. Installed command,
real SDK, the fake API answering each model by what it is asked."""

from __future__ import annotations

from tests.fake_api import text_turn, tool_turn
from tests.session_helpers import calls

TOOLS = '''
import json
from jobrunner import tool

def _log(tool, **args):
    with open("calls.log", "a") as f:
        f.write(json.dumps({"tool": tool, **args}) + "\\n")

@tool(risk="medium", compensate="delete_record")
def create_record(n: int) -> dict:
    """Create record n."""
    _log("create_record", n=n)
    return {"id": n}

@tool(risk="low", side_effect=True)
def delete_record(args: dict, result: dict) -> str:
    """Delete a record (the undo of create_record)."""
    _log("delete_record", id=result["id"])
    return "deleted"

@tool(risk="low", side_effect=False)
def report(n: int) -> str:
    """Page n of the report."""
    return f"Page {n}. " + "figures " * 300
'''
MAX_COST = 0.05


def respond(body: dict) -> dict:
    if not body.get("tools"):
        return text_turn("The pages list figures.")
    if body.get("tool_choice", {}).get("name") == "verdict":
        return tool_turn([("verdict", {"verdict": "PASS", "reason": "It serves the job."})])
    step = sum(1 for m in body["messages"] if m["role"] == "assistant") + 1
    return tool_turn([("report", {"n": step}), ("create_record", {"n": step})])


def test_every_defense_on_and_the_cost_limit_still_holds(project, fake_api):
    project.tool_file("crm", TOOLS)
    project.job("job", f"""
        [limits]
        max_steps = 50
        max_tool_calls = 100
        max_cost_usd = {MAX_COST}
        context_tokens = 3000
        model_idle_timeout = "10s"
        summarize_with = "claude-haiku-4-5"

        [gate]
        model = "claude-haiku-4-5"
        """, tools=["report", "create_record"])
    fake_api.responder = respond
    ran = project.run("run", "job", timeout=300)
    assert ran.code == 3 and "ended LIMIT (max_cost_usd)" in ran.stderr, ran.stderr
    [record] = project.runs()
    assert record["cost_usd"] <= MAX_COST
    events = project.trace(record["id"])
    responses = [e for e in events if e["event"].endswith(".response")]
    assert {e["event"] for e in responses} == {"model.response", "gate.response",
                                               "summary.response"}
    assert abs(record["cost_usd"] - sum(e["cost_usd"] for e in responses)) < 1e-5
    assert all(r.body.get("stream") is True for r in fake_api.message_requests)
    made = [c["n"] for c in calls(project) if c["tool"] == "create_record"]
    undone = [c["id"] for c in calls(project) if c["tool"] == "delete_record"]
    assert made and undone == list(reversed(made))  # every record undone, newest first
    # Every record was checked by the gate before it was made.
    verdicts = [e for e in events if e["event"] == "gate.verdict"]
    assert len(verdicts) >= len(made) and {e["verdict"] for e in verdicts} == {"PASS"}
    # Nothing but the undos ran after the run was stopped.
    stop = max(e["seq"] for e in events if e["event"] in ("tool.result", "gate.verdict",
                                                            "model.response"))
    after = [e for e in events if e["seq"] > stop and e["event"].startswith("tool.")]
    assert after == []
    assert "undone (newest first)" in record["report"]
    assert "of which the semantic gate:" in record["report"] and "context summaries:" \
        in record["report"]
    print(record["report"])
