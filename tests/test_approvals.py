"""High-risk calls wait for a person: queued with their reason, executed once on
approval, never after expiry or rejection."""

from __future__ import annotations

import getpass
import json

from tests.fake_api import tool_turn
from tests.turns import finish, update_memory

REFUND_TOOL = '''
    from pathlib import Path
    from jobrunner import tool
    from jobrunner.tools.api import current_context

    @tool
    def refund(customer: str, amount: float) -> dict:
        """Refund a customer."""
        book = Path(current_context().project_root) / "refunds.log"
        with open(book, "a") as handle:
            handle.write(f"{customer} {amount}\\n")
        return {"refunded": amount}

    @tool(risk="low", side_effect=False)
    def note(text: str) -> str:
        """Write a note."""
        raise AssertionError("never called after a queued call in a stopping run")
'''


def queue_refund(project, fake_api, **keys) -> dict:
    project.tool_file("billing", REFUND_TOOL)
    project.job("refunds", tools=["refund", "note"], **keys)
    fake_api.enqueue(
        tool_turn([("refund", {"customer": "c-42", "amount": 50000}),
                   ("note", {"text": "refunded"})],
                  text="Customer c-42 complained about a double charge; refunding it."),
        tool_turn([update_memory(), finish()]),
    )
    ran = project.run("run", "refunds")
    assert ran.code == 4, ran.stderr
    [approval] = project.run("approvals", "--all", "--json").json()
    return approval


def test_high_risk_call_is_queued_not_executed(project, fake_api):
    approval = queue_refund(project, fake_api)
    assert not (project.root / "refunds.log").exists()
    assert approval["status"] == "pending" and approval["tool"] == "refund"
    assert approval["args"] == {"customer": "c-42", "amount": 50000.0}
    assert "double charge" in approval["reason"]

    [record] = project.runs()
    assert record["status"] == "needs_approval"
    assert "refund" in record["report"] and "queued" in record["report"]
    told = json.dumps(fake_api.message_requests[1].body["messages"][-1])
    assert "Queued for human approval" in told and approval["id"] in told
    assert "Not executed" in told  # the note after it in the same turn did not run

    [alert] = [a for a in project.alerts() if a["event"] == "approval.pending"]
    assert alert["details"]["approval_id"] == approval["id"]
    assert "double charge" in alert["details"]["reason"]
    listing = project.run("approvals")
    assert approval["id"] in listing.stdout and "double charge" in listing.stdout


def test_approve_executes_once(project, fake_api):
    approval = queue_refund(project, fake_api)
    first = project.run("approve", approval["id"])
    assert first.code == 0, first.stderr
    assert "executed: ok" in first.stdout
    second = project.run("approve", approval["id"])
    assert second.code == 1
    assert "already approved" in second.stderr
    assert (project.root / "refunds.log").read_text() == "c-42 50000.0\n"

    [decided] = project.run("approvals", "--all", "--json").json()
    assert decided["status"] == "approved" and decided["outcome"] == "ok"
    assert decided["decided_by"] == getpass.getuser() and decided["decided_at"]
    [entry] = project.run("ledger", "--json").json()
    assert entry["state"] == "done" and entry["approval_id"] == approval["id"]
    # The run that queued the call tells, in its trace, who approved it and how it went.
    shown = project.run("show", approval["run_id"])
    assert (f"approval {approval['id']} (refund) approved by {getpass.getuser()}: ok"
            in shown.stdout), shown.stdout
    trace = project.run("show", approval["run_id"], "--json").json()["trace"]
    [event] = [e for e in trace if e["event"] == "approval.approved"]
    assert event["seq"] == max(e["seq"] for e in trace)
    assert event["args"] == {"customer": "c-42", "amount": 50000.0}

    # The agent proposing the same refund again gets the recorded result, not a new queue.
    fake_api.enqueue(
        tool_turn([("refund", {"customer": "c-42", "amount": 50000})], text="Refund c-42."),
        tool_turn([update_memory(), finish()]),
    )
    again = project.run("run", "refunds")
    assert again.code == 0, again.stderr
    assert (project.root / "refunds.log").read_text() == "c-42 50000.0\n"
    assert project.run("approvals", "--json").json() == []


def test_expired_approval_cannot_be_approved(project, fake_api):
    approval = queue_refund(project, fake_api, approval_ttl=0)
    approved = project.run("approve", approval["id"])
    assert approved.code == 1
    assert "expired" in approved.stderr and "denied" in approved.stderr
    assert not (project.root / "refunds.log").exists()
    [decided] = project.run("approvals", "--all", "--json").json()
    assert decided["status"] == "expired"
    shown = project.run("show", approval["run_id"])
    assert f"approval {approval['id']} (refund) expired (nobody decided)" in shown.stdout


def test_rejected_call_is_never_executed(project, fake_api):
    approval = queue_refund(project, fake_api)
    rejected = project.run("reject", approval["id"], "--reason", "not a double charge")
    assert rejected.code == 0, rejected.stderr
    assert project.run("approve", approval["id"]).code == 1
    assert not (project.root / "refunds.log").exists()
    [decided] = project.run("approvals", "--all", "--json").json()
    assert decided["status"] == "rejected" and decided["note"] == "not a double charge"
    shown = project.run("show", approval["run_id"])
    assert (f"approval {approval['id']} (refund) rejected by {getpass.getuser()}: "
            "not a double charge") in shown.stdout, shown.stdout


def test_job_cannot_loosen_a_tools_declared_policy(project):
    project.tool_file("billing", REFUND_TOOL)
    path = project.job("loose", tools=["refund", "read_file"], body='''
        [tool.refund]
        risk = "low"
        retries = 2
    ''')
    checked = project.run("validate", "loose")
    assert checked.code == 2
    lines = path.read_text().splitlines()
    risk_line = lines.index('risk = "low"') + 1
    assert f"jobs/loose.toml:{risk_line}: tool.refund.risk: cannot lower" in checked.stderr
    assert "tool.refund.retries: cannot raise" in checked.stderr
    assert "tool.read_file.paths: read_file needs the folders" in checked.stderr
    assert project.run("run", "loose").code == 2
    assert project.runs() == []
