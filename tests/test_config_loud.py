"""A configuration problem is loud, and is not the agent's lesson: a missing API key stops
before anything is run or recorded; an invalid job file is alerted, whoever finds it."""

from __future__ import annotations

import os
import signal

from tests.conftest import Lines, reaped, wait_for
from tests.fake_api import fault, tool_turn
from tests.schedule_helpers import replay_job


def test_missing_key_is_a_configuration_error_that_touches_nothing(project, fake_api):
    added = project.run("add", "report", "--timezone", "UTC")
    assert added.code == 0, added.stderr
    memory_before = project.memory("report")
    for _ in range(4):  # more than pause_after: a missing key must not pause the job
        ran = project.run("run", "report", env={"ANTHROPIC_API_KEY": ""})
        assert ran.code == 2
        assert ran.stderr.count("set ANTHROPIC_API_KEY") == 1  # reported once
        assert ran.stderr.startswith("jobs/report.toml:")  # located at the job's `model`
        assert "Traceback" not in ran.stderr
    assert fake_api.message_requests == []
    assert project.memory("report") == memory_before
    assert project.runs() == []
    checked = project.run("validate", "report", env={"ANTHROPIC_API_KEY": ""})
    assert checked.code == 2 and "set ANTHROPIC_API_KEY" in checked.stderr
    with_key = project.run("run", "report")  # the key arrives: it runs, never paused
    assert with_key.code != 75, with_key.stderr


def test_a_refused_key_is_alerted_and_recorded_but_not_in_the_agent_memory(project, fake_api):
    project.job("job")
    project.write("memory/job/MEMORY.md", "# Memory: job\n\n## Current objective\n\nWork.\n")
    before = project.memory("job")
    for status in (401, 403):
        fake_api.enqueue(fault(status=status))
        ran = project.run("run", "job")
        assert ran.code == 1 and f"HTTP {status}" in ran.stderr
    assert project.memory("job") == before  # the operator's problem, no lesson to learn
    records = project.runs()
    assert [r["stop_reason"] for r in records] == ["model_api_error:permission",
                                                   "model_api_error:auth"]
    assert [a["event"] for a in project.alerts()].count("run.aborted") == 2


def test_a_tool_failure_still_goes_into_the_failure_log(project, fake_api):
    # The line above is about operators' errors only: an agent's failure stays a lesson.
    project.job("job", tools=["http_get"])
    fake_api.enqueue(tool_turn([("http_get", {"url": "http://127.0.0.1:9/x"})]))
    ran = project.run("run", "job")
    assert ran.code == 1, ran.stderr
    assert "aborted (tool_failed)" in project.memory("job")


def test_validate_checks_the_env_file_as_run_does(project):
    project.job("job")
    env_file = project.root / ".env"
    env_file.write_text("CRM_TOKEN=abcdefgh\n")
    os.chmod(env_file, 0o644)
    project.write("jobrunner.toml", f'state_dir = "{project.state}"\nenv_file = ".env"\n')
    checked = project.run("validate")
    assert checked.code == 2
    assert ".env:1: env_file: readable by group or others" in checked.stderr
    assert "ok  job" not in checked.stdout
    ran = project.run("run", "job")
    assert ran.code == 2 and ".env:1: env_file" in ran.stderr


def broken(project) -> None:
    replay_job(project, "good", "* * * * *")
    project.job("bad", schedule="0 25 * * *")


def invalid_alerts(project) -> list[dict]:
    return [a for a in project.alerts() if a["event"] == "job.invalid"]


def test_check_and_run_due_alert_an_invalid_job_once_per_problem(project):
    broken(project)
    for command in (("check",), ("run", "--due"), ("check",)):
        result = project.run(*command)
        assert result.code in (1, 2), result.stderr
    [alert] = invalid_alerts(project)
    assert alert["job"] == "bad"
    assert "jobs/bad.toml:" in alert["message"] and "hour" in alert["message"]
    project.job("bad", schedule="0 26 * * *")  # a new problem: a new alert
    assert project.run("check").code == 1
    assert len(invalid_alerts(project)) == 2


def test_check_alerts_a_missing_key(project):
    project.job("job")
    result = project.run("check", env={"ANTHROPIC_API_KEY": ""})
    assert result.code == 1 and "set ANTHROPIC_API_KEY" in result.stdout
    [alert] = invalid_alerts(project)
    assert alert["job"] == "job"


def test_daemon_alerts_a_job_file_that_becomes_invalid(project):
    replay_job(project, "good", "0 3 * * *")
    with reaped(project.popen("daemon")) as daemon:
        lines = Lines(daemon.stderr)
        lines.until("scheduled good", timeout=60)
        project.job("good", schedule="0 3 * * * *")  # six fields: no longer valid
        lines.until("not scheduled", timeout=60)
        wait_for(lambda: invalid_alerts(project), timeout=30, what="a job.invalid alert")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    [alert] = invalid_alerts(project)
    assert alert["job"] == "good" and "expected 5 fields" in alert["message"]
