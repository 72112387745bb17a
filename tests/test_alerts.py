"""Alerts through real channels (local HTTP and SMTP servers, a command), the outbox,
auto-pause and recovery, heartbeat pings, and missed schedules found by `check`."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

from tests.alert_servers import HttpRecorder, SmtpRecorder, free_port
from tests.fake_api import tool_turn
from tests.turns import ending

FAILING_TOOL = '''
from jobrunner import ToolResult, tool

@tool(risk="low", side_effect=False)
def fetch(day: str) -> ToolResult:
    """Fetch the day's numbers."""
    return ToolResult(ok=False, error="upstream answered 503")
'''


def settings(project, body: str) -> None:
    project.write("jobrunner.toml", f'state_dir = "{project.state}"\n' + body)


def failing_job(project, name: str = "report", **keys) -> None:
    project.tool_file("fetch", FAILING_TOOL)
    project.job(name, tools=["fetch"], **keys)


def fail_turn():
    return tool_turn([("fetch", {"day": "2026-11-20"})])


def good_turns():
    return ending()


def test_webhook_email_and_command_channels_receive_the_alert(project, fake_api, tmp_path):
    sink = tmp_path / "alerts-from-command.jsonl"
    with HttpRecorder() as hook, SmtpRecorder() as smtp:
        settings(project, f'''
            [smtp]
            host = "127.0.0.1"
            port = {smtp.port}
            sender = "jobrunner@example.com"

            [[alerts.channels]]
            type = "webhook"
            url = "{hook.url}/hooks/T000/SECRETPATH"

            [[alerts.channels]]
            type = "email"
            to = ["ops@example.com"]
            events = ["run.aborted"]

            [[alerts.channels]]
            type = "command"
            command = ["sh", "-c", "cat >> {sink}"]

            [[alerts.channels]]
            type = "webhook"
            url = "{hook.url}/only-paused"
            events = ["job.paused"]
        '''.replace("\n            ", "\n"))
        failing_job(project)
        fake_api.enqueue(fail_turn())
        ran = project.run("run", "report")
        assert ran.code == 1

        [(path, body)] = hook.requests  # the job.paused-only channel got nothing
        assert path == "/hooks/T000/SECRETPATH"
        posted = json.loads(body)
        assert posted["text"].startswith("[jobrunner] run.aborted report:")
        assert posted["event"] == "run.aborted" and posted["job"] == "report"
        for key in ("run_id", "message", "at", "details"):
            assert key in posted
        [mail] = smtp.messages
        assert mail["to"] == ["ops@example.com"]
        assert "Subject: [jobrunner] run.aborted report:" in mail["data"]
        [line] = sink.read_text().splitlines()
        assert json.loads(line)["event"] == "run.aborted"

    listed = project.run("alerts", "--json").json()
    assert [a["event"] for a in listed] == ["run.aborted"]
    assert sorted(d["status"] for d in listed[0]["deliveries"]) == ["delivered"] * 3
    human = project.run("alerts").stdout
    assert "run.aborted  report" in human and "SECRETPATH" not in human


def test_same_cause_alerts_once_per_cooldown(project, fake_api):
    failing_job(project, pause_after=10)
    for _ in range(3):
        fake_api.enqueue(fail_turn())
        assert project.run("run", "report").code == 1
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]
    [listed] = project.run("alerts", "--json").json()
    assert listed["repeats"] == 2


def test_dead_channel_keeps_the_alert_and_check_delivers_it_later(project, fake_api):
    port = free_port()  # nothing listens here yet
    settings(project, f'[[alerts.channels]]\ntype = "webhook"\nurl = '
                      f'"http://127.0.0.1:{port}/hook"\ntimeout = "2s"\n')
    failing_job(project)
    fake_api.enqueue(fail_turn())
    assert project.run("run", "report").code == 1
    [alert] = project.run("alerts", "--json").json()
    [delivery] = alert["deliveries"]
    assert delivery["status"] == "pending" and "unreachable" in delivery["error"]
    down = project.run("check")
    assert down.code == 1 and "undelivered:" in down.stdout

    with HttpRecorder(port=port) as hook:
        up = project.run("check")
        assert up.code == 0, up.stdout
        again = project.run("check")
        assert again.code == 0
    assert [b["event"] for b in hook.json_bodies()] == ["run.aborted"]  # once
    [alert] = project.run("alerts", "--json").json()
    assert alert["deliveries"][0]["status"] == "delivered"


def test_a_dead_channel_is_not_retried_by_every_run(project, fake_api):
    """After a failure the end-of-run outbox sweep leaves the channel alone for a while
    (each try could cost its whole timeout on every cron tick); `check` still tries it."""
    port = free_port()
    settings(project, f'[alerts]\nretry_backoff = "10m"\n\n[[alerts.channels]]\n'
                      f'type = "webhook"\nurl = "http://127.0.0.1:{port}/hook"\ntimeout = "2s"\n')
    failing_job(project)
    project.job("other", tools=["fetch"])
    project.job("quiet")
    fake_api.enqueue(fail_turn())
    assert project.run("run", "report").code == 1

    def attempts() -> int:
        [alert] = project.run("alerts", "--json").json()
        return alert["deliveries"][0]["attempts"]

    assert attempts() == 1
    for _ in range(2):  # runs that raise no alert of their own
        fake_api.enqueue(*good_turns())
        assert project.run("run", "quiet").code == 0
    assert attempts() == 1
    listing = project.run("alerts").stdout
    assert "runs retry it after" in listing and "`jobrunner check` at once" in listing

    assert project.run("check").code == 1
    assert attempts() == 2
    with HttpRecorder(port=port) as hook:
        # While the channel backs off, a new alert is still tried at once; once that
        # works, the same run's sweep sends the backlog too.
        fake_api.enqueue(fail_turn())
        assert project.run("run", "other").code == 1
    assert sorted(b["job"] for b in hook.json_bodies()) == ["other", "report"]
    assert all(a["deliveries"][0]["status"] == "delivered"
               for a in project.run("alerts", "--json").json())


def test_alerts_test_says_which_channels_work(project, tmp_path):
    with HttpRecorder() as hook:
        settings(project, f'''
            [[alerts.channels]]
            type = "webhook"
            url = "{hook.url}/hook"

            [[alerts.channels]]
            type = "command"
            command = ["sh", "-c", "exit 3"]
        '''.replace("\n            ", "\n"))
        tested = project.run("alerts", "--test")
        assert tested.code == 1
        lines = tested.stdout.splitlines()
        assert lines[0].startswith("ok    log ")
        assert lines[1].startswith("ok    webhook http://127.0.0.1")
        assert lines[2] == "FAIL  command sh: command exited 3"
        assert hook.json_bodies()[0]["event"] == "alert.test"


def test_pause_after_failures_no_model_call_resume_and_recovered(project, fake_api):
    failing_job(project, pause_after=2)
    for _ in range(2):
        fake_api.enqueue(fail_turn())
        assert project.run("run", "report").code == 1
    assert [a["event"] for a in project.alerts()] == ["run.aborted", "job.paused"]
    asked = len(fake_api.message_requests)

    for _ in range(2):
        paused = project.run("run", "report")
        assert paused.code == 75 and "jobrunner resume report" in paused.stderr
    assert len(fake_api.message_requests) == asked  # no model call while paused
    assert project.run("list", "--json").json()["jobs"][0]["paused"] is True
    checked = project.run("check", "--json")
    assert checked.code == 1 and checked.json()["findings"][0]["kind"] == "paused"

    resumed = project.run("resume", "report")
    assert resumed.code == 0 and "resumed" in resumed.stdout
    fake_api.enqueue(*good_turns())
    assert project.run("run", "report").code == 0
    assert [a["event"] for a in project.alerts()] == ["run.aborted", "job.paused",
                                                      "run.recovered"]
    statuses = [r["status"] for r in project.runs("report")]
    assert statuses == ["completed", "paused", "paused", "aborted", "aborted"]
    assert project.run("list", "--json").json()["jobs"][0]["paused"] is False


def test_heartbeat_url_pinged_on_start_success_and_failure(project, fake_api):
    with HttpRecorder() as monitor:
        failing_job(project, heartbeat_url=f"{monitor.url}/ping/abc")
        fake_api.enqueue(*good_turns())
        assert project.run("run", "report").code == 0
        fake_api.enqueue(fail_turn())
        assert project.run("run", "report").code == 1
        paths = [path for path, _ in monitor.requests]
    assert paths == ["/ping/abc/start", "/ping/abc", "/ping/abc/start", "/ping/abc/fail"]


def test_dead_heartbeat_url_does_not_break_the_run(project, fake_api):
    failing_job(project, heartbeat_url=f"http://127.0.0.1:{free_port()}/ping")
    fake_api.enqueue(*good_turns())
    ran = project.run("run", "report")
    assert ran.code == 0 and ran.stderr == ""
    assert project.runs()[0]["status"] == "completed"


def test_check_alerts_missed_slots_once(project, fake_api):
    project.job("hourly", schedule="0 * * * *", misfire_grace="5m")
    fake_api.enqueue(*good_turns())
    assert project.run("run", "hourly").code == 0
    assert project.run("check").code == 0  # a brand-new job has missed nothing
    # History as it would be had the job last run three hours ago and cron since died.
    three_hours_ago = (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with sqlite3.connect(project.state / "jobrunner.sqlite3") as db:
        db.execute("UPDATE runs SET started_at = ?, ended_at = ?", (three_hours_ago,) * 2)
    first = project.run("check", "--json")
    assert first.code == 1
    [finding] = first.json()["findings"]
    assert finding["kind"] == "missed" and len(finding["details"]["slots"]) in (2, 3)
    assert project.run("check").code == 0  # those slots were alerted already
    assert [a["event"] for a in project.alerts()] == ["job.missed"]


def test_email_channel_uses_starttls_and_the_password_from_the_environment(project, tmp_path):
    """The real path of an SMTP relay: STARTTLS (certificate checked), then a login whose
    password comes from the environment and never from a file."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    password = "relay-pass-7391"
    with SmtpRecorder(tls_context=tls, login=("agent@example.com", password)) as smtp:
        settings(project, f'''
            [smtp]
            host = "127.0.0.1"
            port = {smtp.port}
            starttls = true
            username = "agent@example.com"
            password_env = "RELAY_PASSWORD"
            sender = "agent@example.com"

            [[alerts.channels]]
            type = "email"
            to = ["ops@example.com"]
        '''.replace("\n            ", "\n"))
        env = {"SSL_CERT_FILE": str(cert), "RELAY_PASSWORD": password}
        tested = project.run("alerts", "--test", env=env)
        assert tested.code == 0, tested.stdout + tested.stderr
        assert smtp.logins == ["agent@example.com"]
        [mail] = smtp.messages
        assert mail["to"] == ["ops@example.com"] and "alert.test" in mail["data"]

        wrong = project.run("alerts", "--test", env={**env, "RELAY_PASSWORD": "nope"})
        assert wrong.code == 1
        assert "FAIL  email" in wrong.stdout
        assert "nope" not in wrong.stdout + wrong.stderr
        assert len(smtp.messages) == 1

        untrusted = project.run("alerts", "--test", env={"RELAY_PASSWORD": password})
        assert untrusted.code == 1  # a certificate nobody vouches for is refused
        assert len(smtp.messages) == 1
    assert password not in (project.state / "alerts.jsonl").read_text()
