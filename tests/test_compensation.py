"""Compensation (`@tool(compensate=...)`): a run that ends aborted, failed or at a limit
undoes its compensable side effects, newest first, each once, through the ledger; the
rest are reported "not undone". Through the installed command and the fake API."""

from __future__ import annotations

import pytest

from tests.fake_api import tool_turn
from tests.session_helpers import calls, limits
from tests.turns import MEMORY, finish

TOOLS = '''
import json
from jobrunner import ToolResult, tool

def _log(tool, **args):
    with open("calls.log", "a") as f:
        f.write(json.dumps({"tool": tool, **args}) + "\\n")

@tool(risk="medium", compensate="delete_record")
def create_record(name: str) -> dict:
    """Create a CRM record."""
    _log("create_record", name=name)
    return {"id": "rec-" + name}

@tool(risk="low", side_effect=True)
def delete_record(args: dict, result: dict) -> str:
    """Delete a CRM record (the undo of create_record)."""
    _log("delete_record", args=args, result=result)
    return "deleted"

@tool(risk="medium", compensate="recall_note")
def send_note(to: str) -> str:
    """Send a note."""
    _log("send_note", to=to)
    return "sent"

@tool(risk="low", side_effect=True)
def recall_note(args: dict, result: str) -> ToolResult:
    """Recall a note (it cannot be, once read)."""
    _log("recall_note", args=args)
    return ToolResult(ok=False, error="the note was already read")

@tool(risk="medium")
def send_email(to: str) -> str:
    """Send an email (cannot be undone)."""
    _log("send_email", to=to)
    return "sent"

@tool(risk="low", side_effect=False)
def broken(query: str) -> str:
    """A search whose backend is down."""
    _log("broken", query=query)
    raise ConnectionError("search is down")
'''
ALL = ["create_record", "send_note", "send_email", "broken"]


def setup(project, body: str = "", tools=ALL) -> None:
    project.tool_file("crm", TOOLS)
    project.job("job", body, tools=tools)


def test_an_aborted_run_undoes_its_effects_newest_first_and_lists_the_rest(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("create_record", {"name": "ada"})]),
                     tool_turn([("create_record", {"name": "bob"})]),
                     tool_turn([("send_email", {"to": "team@example.com"})]),
                     tool_turn([("broken", {"query": "x"}), ("create_record", {"name": "cy"})]))
    ran = project.run("run", "job")
    assert ran.code == 1 and "ended ABORTED (tool_failed)" in ran.stderr
    assert [(c["tool"], c.get("name") or c.get("result")) for c in calls(project)] == [
        ("create_record", "ada"), ("create_record", "bob"), ("send_email", None),
        ("broken", None),
        ("delete_record", {"id": "rec-bob"}), ("delete_record", {"id": "rec-ada"})]
    assert calls(project)[-1]["args"] == {"name": "ada"}  # the original arguments
    assert "step 2: create_record undone by delete_record: ok" in ran.stderr
    assert "step 1: create_record undone by delete_record: ok" in ran.stderr
    assert "not undone (no compensation declared): step 3: send_email" in ran.stderr
    [record] = project.runs()
    assert "undone by delete_record" in record["report"]
    assert "not undone" in record["report"]
    events = project.trace(record["id"])
    results = [e for e in events if e["event"] == "compensation.result"]
    assert [(e["step"], e["ok"]) for e in results] == [(2, True), (1, True)]
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]
    entries = {e["tool"]: e for e in project.run("ledger", "--json").json()
               if e["tool"] == "delete_record"}
    assert entries["delete_record"]["status"] == "done"
    originals = [e for e in project.run("ledger", "--json").json()
                 if e["tool"] == "create_record"]
    assert {e["status"] for e in originals} == {"not_done"}  # a later run may redo them

    # ...and one does: the record is created again, not "already done".
    fake_api.enqueue(tool_turn([("create_record", {"name": "ada"})]),
                     tool_turn([("update_memory", MEMORY)]), tool_turn([finish()]))
    again = project.run("run", "job")
    assert again.code == 0, again.stderr
    assert [c["tool"] for c in calls(project)][-1] == "create_record"


def test_a_failed_undo_is_alerted_and_the_rest_still_run(project, fake_api):
    setup(project)
    fake_api.enqueue(tool_turn([("create_record", {"name": "ada"})]),
                     tool_turn([("send_note", {"to": "bob"})]),
                     tool_turn([("broken", {"query": "x"})]))
    ran = project.run("run", "job")
    assert ran.code == 1
    assert [c["tool"] for c in calls(project)][-2:] == ["recall_note", "delete_record"]
    assert ("step 2: send_note undone by recall_note: FAILED: the note was already read - "
            "manual intervention required") in ran.stderr
    assert "step 1: create_record undone by delete_record: ok" in ran.stderr
    events = [a["event"] for a in project.alerts()]
    assert events == ["run.aborted", "run.compensation_failed"]
    failed = project.alerts()[1]
    assert "manual intervention required" in failed["message"]
    assert failed["details"]["tool"] == "send_note" and failed["details"]["step"] == 2


@pytest.mark.parametrize("how,status,undone", [
    ("finish_failed", "failed", True),
    ("max_steps", "limit", True),
    ("completed", "completed", False),
])
def test_which_endings_undo(project, fake_api, how, status, undone):
    setup(project, limits(max_steps=2) if how == "max_steps" else "")
    end = {"finish_failed": [tool_turn([("update_memory", MEMORY)]),
                             tool_turn([finish("failed", "Could not finish.")])],
           "max_steps": [tool_turn([("send_email", {"to": "a@example.com"})])],
           "completed": [tool_turn([("update_memory", MEMORY)]), tool_turn([finish()])]}
    fake_api.enqueue(tool_turn([("create_record", {"name": "ada"})]), *end[how])
    project.run("run", "job")
    assert project.runs()[0]["status"] == status
    assert ("delete_record" in [c["tool"] for c in calls(project)]) is undone


def test_compensation_can_be_turned_off(project, fake_api):
    setup(project, "compensate_on_abort = false\n")
    fake_api.enqueue(tool_turn([("create_record", {"name": "ada"})]),
                     tool_turn([("broken", {"query": "x"})]))
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "delete_record" not in [c["tool"] for c in calls(project)]
    assert "not undone (compensate_on_abort = false): step 1: create_record" in ran.stderr


def test_a_compensation_must_exist_and_take_args_and_result(project, fake_api):
    project.tool_file("crm", TOOLS + '''
@tool(risk="medium", compensate="nowhere")
def lost(name: str) -> str:
    """A tool whose undo does not exist."""
    return name

@tool(risk="medium", compensate="send_email")
def odd(name: str) -> str:
    """A tool whose undo takes the wrong arguments."""
    return name
''')
    project.job("job", tools=["lost", "odd"])
    ran = project.run("run", "job")
    assert ran.code == 2
    assert "tools: lost declares compensate='nowhere', which is not a registered tool" \
        in ran.stderr
    assert "send_email, the compensation of odd, must take `args` and `result`" in ran.stderr
    assert project.runs() == [] and fake_api.message_requests == []


def test_compensations_make_no_model_call_and_keep_the_limits(project, fake_api):
    setup(project, limits(max_tool_calls=1))
    fake_api.enqueue(tool_turn([("create_record", {"name": "ada"})]),
                     tool_turn([("create_record", {"name": "bob"})]))
    ran = project.run("run", "job")
    assert ran.code == 3 and "ended LIMIT (max_tool_calls)" in ran.stderr
    assert [c["tool"] for c in calls(project)] == ["create_record", "delete_record"]
    assert len(fake_api.message_requests) == 2
    record = project.runs()[0]
    assert record["tool_calls"] == 1
    assert record["steps"] == 2
