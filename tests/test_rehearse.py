"""`jobrunner test JOB [--replay FILE] [--dry-run]`: a job's session on a replay script
without a second job file; a dry run executes no side effect, takes no lock or slot,
sends no alert and writes no memory (it shows the memory it would write)."""

from __future__ import annotations

import json

from tests.conftest import reaped, wait_for
from tests.fake_api import tool_turn
from tests.session_helpers import WAIT_FOR_GO

MEMORY = {"current_objective": "Refund what is owed.", "key_decisions": ["Refunds need a "
          "reason."], "what_not_to_do": [], "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}

TOOLS = '''
from pathlib import Path
import time
from jobrunner import ToolResult, tool

@tool(risk="low", side_effect=False)
def balance(customer: str) -> dict:
    """A customer's balance."""
    return {"customer": customer, "owed": 12.5}

@tool(risk="medium")
def credit(customer: str, amount: float) -> dict:
    """Credit a customer's account."""
    with open("credits.log", "a") as handle:
        handle.write(f"{customer} {amount}\\n")
    return {"credited": amount}

@tool
def refund(customer: str, amount: float) -> dict:
    """Refund a customer (high risk: approved by a person)."""
    with open("refunds.log", "a") as handle:
        handle.write(f"{customer} {amount}\\n")
    return {"refunded": amount}

@tool(risk="low", side_effect=False)
def broken() -> ToolResult:
    """Always fails."""
    return ToolResult(ok=False, error="the backend said no")
'''


def _use(name, args, ident):
    return {"type": "tool_use", "id": ident, "name": name, "input": args}


def _script(*calls) -> dict:
    """One turn per call, then update_memory and finish."""
    turns = [{"content": [_use(name, args, f"t{n}")], "stop_reason": "tool_use"}
             for n, (name, args) in enumerate(calls)]
    turns.append({"content": [_use("update_memory", MEMORY, "tm"), _use("finish", FINISH, "tf")],
                  "stop_reason": "tool_use"})
    return {"description": "a test", "turns": turns}


def _project(project, channel: bool = True):
    settings = f'state_dir = "{project.state}"\n'
    if channel:  # a channel that would show any alert that got out
        settings += ('[[alerts.channels]]\ntype = "command"\n'
                     'command = ["sh", "-c", "cat >> alerts-sent.jsonl"]\n')
    project.write("jobrunner.toml", settings)
    project.tool_file("billing", TOOLS)
    project.tool_file("waiting", WAIT_FOR_GO)
    project.job("billing", tools=["balance", "credit", "refund", "broken", "wait_for_go"])
    project.write("memory/billing/MEMORY.md", "# Memory: billing\n\n## Current objective\n"
                  "Nothing yet.\n")


def test_dry_run_of_the_example_sends_nothing_and_keeps_nothing(example_project):
    before = example_project.memory("daily-email")
    tested = example_project.run("test", "daily-email", "--dry-run")
    assert tested.code == 0, tested.stderr
    out = tested.stdout
    assert "tool result fetch_signups: ok" in out  # reads are real
    assert 'step 2: send_email({"to": ["team@example.com"]' in out
    assert "answered with a stand-in result" in out
    assert "test daily-email: completed (finish), exit 0" in out
    assert not (example_project.root / "outbox").exists()  # no email went out
    assert example_project.runs() == []  # no record, no ledger entry, no alert
    assert example_project.run("ledger", "--json").json() == []
    assert example_project.alerts() == []
    assert example_project.memory("daily-email") == before
    # The real run afterwards is the first: the dry run claimed nothing.
    assert example_project.run("run", "daily-email").code == 0
    assert len(list((example_project.root / "outbox").glob("*.eml"))) == 1


def test_dry_run_shows_the_memory_it_would_write(project):
    _project(project)
    project.write("jobs/refund.replay.json", json.dumps(_script(
        ("balance", {"customer": "c-1"}), ("credit", {"customer": "c-1", "amount": 12.5}))))
    before = project.memory("billing")
    tested = project.run("test", "billing", "--replay", "jobs/refund.replay.json", "--dry-run")
    assert tested.code == 0, tested.stdout + tested.stderr
    assert "--- memory/billing/MEMORY.md" in tested.stdout
    assert "+Refund what is owed." in tested.stdout and "-Nothing yet." in tested.stdout
    assert 'step 2: credit({"customer": "c-1", "amount": 12.5}): answered with a stand-in' \
        in tested.stdout
    assert project.memory("billing") == before
    assert not (project.root / "memory/billing/history").exists()
    assert not (project.root / "credits.log").exists()
    assert not (project.root / "alerts-sent.jsonl").exists()


def test_exit_codes_are_the_runs_and_no_alert_or_approval_escapes(project):
    _project(project)
    project.write("jobs/fail.replay.json", json.dumps(_script(("broken", {}))))
    failed = project.run("test", "billing", "--replay", "jobs/fail.replay.json", "--dry-run")
    assert failed.code == 1
    assert "ended ABORTED (tool_failed)" in failed.stdout and "the backend said no" in failed.stdout
    project.write("jobs/refund.replay.json", json.dumps(_script(
        ("refund", {"customer": "c-2", "amount": 99}))))
    waiting = project.run("test", "billing", "--replay", "jobs/refund.replay.json", "--dry-run")
    assert waiting.code == 4, waiting.stdout
    assert 'refund({"customer": "c-2", "amount": 99.0}): would wait for approval' \
        in waiting.stdout
    assert "jobrunner approve" not in waiting.stdout  # nothing was queued to approve
    assert project.run("approvals", "--all", "--json").json() == []
    assert project.alerts() == [] and not (project.root / "alerts-sent.jsonl").exists()
    assert not (project.root / "refunds.log").exists() and project.runs() == []
    # The same failure in a real test run is recorded and alerted, through the channel.
    real = project.run("test", "billing", "--replay", "jobs/fail.replay.json")
    assert real.code == 1
    [record] = project.runs()
    assert record["trigger"] == "test" and record["status"] == "aborted"
    assert f"jobrunner show {record['id']}" in real.stdout
    wait_for(lambda: (project.root / "alerts-sent.jsonl").exists(), what="the real alert")


def test_a_replay_runs_a_job_on_a_live_model_without_the_api(project, fake_api):
    _project(project, channel=False)
    project.write("jobs/credit.replay.json", json.dumps(_script(
        ("credit", {"customer": "c-3", "amount": 1}))))
    tested = project.run("test", "billing", "--replay", "jobs/credit.replay.json",
                         env={"ANTHROPIC_API_KEY": ""})
    assert tested.code == 0, tested.stdout + tested.stderr
    assert fake_api.message_requests == []
    assert (project.root / "credits.log").read_text() == "c-3 1.0\n"  # not a dry run
    [record] = project.runs()
    assert record["trigger"] == "test" and record["status"] == "completed"
    assert "Refund what is owed." in project.memory("billing")
    broken = project.write("jobs/broken.replay.json", '{"turns": [{"content": [{}]}]}')
    refused = project.run("test", "billing", "--replay", str(broken))
    assert refused.code == 2 and "broken.replay.json:1: turns.0.content.0.type" in refused.stderr
    assert len(project.runs()) == 1


def test_dry_run_on_the_live_model_takes_no_lock(project, fake_api):
    _project(project, channel=False)
    fake_api.enqueue(tool_turn([("wait_for_go", {})]))
    with reaped(project.popen("run", "billing")) as real:
        wait_for(lambda: (project.root / "started").exists(), what="the real run's tool")
        fake_api.enqueue(tool_turn([("credit", {"customer": "c-4", "amount": 3})]),
                         tool_turn([("update_memory", MEMORY), ("finish", FINISH)]),  # the test
                         tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))  # the run
        tested = project.run("test", "billing", "--dry-run")
        assert tested.code == 0, tested.stdout + tested.stderr  # not skipped: its own lock
        (project.root / "go").touch()
        assert real.wait(timeout=60) == 0
    stand_in = json.dumps(fake_api.message_requests[2].body["messages"][-1])
    assert "dry_run" in stand_in and "not executed" in stand_in  # what the model was told
    assert not (project.root / "credits.log").exists()
    assert [r["status"] for r in project.runs()] == ["completed"]
