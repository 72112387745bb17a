"""The daily email goes out once a day, whatever happens: a second run, a reworded
email, a kill -9 in the middle of the send. Real SMTP server, real processes."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import TEST_KEY
from tests.fake_api import tool_turn
from tests.servers import SmtpServer
from tests.turns import finish, update_memory


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def daily(example_project, smtp):
    """The example project, its email going to the local SMTP server."""
    settings = example_project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + smtp.settings())
    return example_project


def use_fake_model(project, fake_api) -> None:
    job = project.root / "jobs/daily-email.toml"
    text = job.read_text().replace('model = "replay:jobs/daily-email.replay.json"',
                                   'model = "claude-sonnet-4-6"')
    job.write_text(text)
    project.env.update({"ANTHROPIC_API_KEY": TEST_KEY, "ANTHROPIC_BASE_URL": fake_api.url})


def test_second_run_and_reworded_email_send_nothing_more(daily, smtp, fake_api):
    first = daily.run("run", "daily-email")
    assert first.code == 0, first.stderr
    assert len(smtp.sink.messages) == 1
    assert "Signups for Friday 20 November: 147." in smtp.sink.messages[0]

    again = daily.run("run", "daily-email")  # the same recorded session, the same day
    assert again.code == 0, again.stderr
    assert len(smtp.sink.messages) == 1

    use_fake_model(daily, fake_api)  # a live model that words the email differently
    fake_api.enqueue(
        tool_turn([("send_email", {"to": ["team@example.com"], "subject": "Signups: 147",
                                   "body": "147 signups yesterday. Good day!"})],
                  text="Sending a friendlier summary."),
        tool_turn([update_memory(), finish()]),
    )
    reworded = daily.run("run", "daily-email")
    assert reworded.code == 0, reworded.stderr
    assert len(smtp.sink.messages) == 1
    assert "Good day!" not in smtp.sink.messages[0]
    told = json.dumps(fake_api.message_requests[1].body["messages"][-1])
    assert "Already done" in told  # the model got the recorded result, not a new send

    records = daily.runs()
    assert [r["status"] for r in records] == ["completed"] * 3
    [entry] = daily.run("ledger", "--json").json()
    assert entry["state"] == "done" and entry["tool"] == "send_email"
    assert entry["key"].startswith("daily-email:send_email:20")
    shown = daily.run("show", records[0]["id"], "--json").json()["trace"]
    assert any(e["event"] == "ledger.deduplicated" for e in shown)


def test_kill_mid_send_leaves_it_in_doubt_until_resolved(daily, smtp):
    smtp.sink.hold = True  # the server takes the message and keeps the client waiting
    proc = daily.popen("run", "daily-email")
    try:
        assert smtp.sink.received.wait(60), "the email never reached the SMTP server"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    smtp.sink.release.set()
    assert len(smtp.sink.messages) == 1

    [entry] = daily.run("ledger", "--json").json()
    assert entry["state"] == "in_doubt"
    listing = daily.run("ledger")
    assert "in_doubt" in listing.stdout and "ledger resolve" in listing.stdout

    stopped = daily.run("run", "daily-email")
    assert stopped.code == 1
    assert "ABORTED (ledger_in_doubt)" in stopped.stderr
    assert f"jobrunner ledger resolve '{entry['key']}' --done" in stopped.stderr
    assert len(smtp.sink.messages) == 1  # never retried automatically
    statuses = [r["status"] for r in daily.runs()]
    assert statuses == ["aborted", "crashed"]
    events = [a["event"] for a in daily.alerts()]
    assert "run.crashed" in events and "run.aborted" in events

    refused = daily.run("ledger", "resolve", "no-such-key", "--done")
    assert refused.code == 2
    resolved = daily.run("ledger", "resolve", entry["key"], "--done")
    assert resolved.code == 0, resolved.stderr
    assert "marked done" in resolved.stdout

    after = daily.run("run", "daily-email")
    assert after.code == 0, after.stderr
    assert len(smtp.sink.messages) == 1  # it happened: not sent again
    [entry] = daily.run("ledger", "--json").json()
    assert entry["state"] == "done" and entry["resolved_by"]


def test_dead_smtp_is_a_plain_failure_and_the_next_run_sends_once(example_project):
    """Connection refused: the email certainly did not leave, so the run aborts with a
    report, nothing is left in doubt, and the next run (server back) sends it once."""
    from tests.servers import free_port

    port = free_port()  # nothing listens here yet
    settings = example_project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + f'\n[smtp]\nhost = "127.0.0.1"\nport = {port}\n'
                        "starttls = false\ntimeout = 2\n")
    dead = example_project.run("run", "daily-email")
    assert dead.code == 1
    assert "ended ABORTED (tool_failed)" in dead.stderr
    assert "email not sent: cannot reach SMTP server 127.0.0.1" in dead.stderr
    ledger = example_project.run("ledger", "--json").json()
    assert [e["status"] for e in ledger] == ["failed"]
    assert [a["event"] for a in example_project.alerts()] == ["run.aborted"]

    with SmtpServer(port=port) as server:
        again = example_project.run("run", "daily-email")
        assert again.code == 0, again.stderr
        assert len(server.sink.messages) == 1
        assert "Signups for Friday 20 November: 147." in server.sink.messages[0]
