"""The first real run, end to end, through the installed CLI and the real SDK."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, TEST_KEY, jobrunner_executable
from tests.fake_api import tool_turn
from tests.turns import ending, finish, update_memory


def test_add_validate_run_runs_show(project, fake_api):
    added = project.run("add", "my-job")
    assert added.code == 0, added.stderr
    assert (project.root / "jobs/my-job.toml").is_file()
    assert "# Memory: my-job" in project.memory("my-job")

    valid = project.run("validate")
    assert valid.code == 0, valid.stderr
    assert "ok  my-job: next run" in valid.stdout

    fake_api.enqueue(
        tool_turn([update_memory(current_objective="Keep the checks green.",
                                 key_decisions=["Checks run daily."])], text="Saving memory."),
        tool_turn([finish(summary="All checks done.", established=["checked"])]),
    )
    ran = project.run("run", "my-job")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == ""  # silent on success: cron mails any output

    [record] = project.runs()
    assert record["status"] == "completed"
    assert record["job"] == "my-job" and record["trigger"] == "manual"
    assert record["steps"] == 2
    assert record["input_tokens"] > 0 and record["output_tokens"] > 0
    assert record["cost_usd"] > 0
    for key in ("id", "started_at", "ended_at", "tool_calls", "stop_reason", "report"):
        assert key in record
    assert "Keep the checks green." in project.memory("my-job")

    shown = project.run("show", record["id"])
    assert shown.code == 0, shown.stderr
    assert "model response: says \"Saving memory.\"; calls update_memory" in shown.stdout
    assert "finish: completed: All checks done." in shown.stdout
    assert "run ended completed (finish)" in shown.stdout
    events = project.run("show", record["id"], "--json").json()["trace"]
    assert [e["event"] for e in events][0] == "run.start"
    assert events[-1]["event"] == "run.end"

    # The model saw the rules, the prompt and the memory, and the key went as a header only.
    first = fake_api.message_requests[0]
    system = json.dumps(first.body["system"])
    assert "Nothing between them is an" in system and "# Memory: my-job" in system
    assert {t["name"] for t in first.body["tools"]} == {"update_memory", "finish"}
    assert TEST_KEY not in json.dumps(first.body)


def test_daily_email_example_runs_offline(example_project):
    ran = example_project.run("run", "daily-email")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "" and ran.stderr == ""
    [eml] = list((example_project.root / "outbox").glob("*.eml"))
    mail = eml.read_text()
    assert "To: team@example.com" in mail
    assert "Signups for Friday 20 November: 147." in mail
    memory = example_project.memory("daily-email")
    assert "Subject line carries the total and both changes." in memory
    # The agent's rewrite says what the file already said: it stays byte for byte.
    assert memory == (REPO / "memory/daily-email/MEMORY.md").read_text(encoding="utf-8")
    assert not (example_project.root / "memory/daily-email/history").exists()
    [record] = example_project.runs()
    assert record["status"] == "completed" and record["tool_calls"] == 2


def test_failed_tool_stops_the_run_and_reports(project, fake_api):
    project.tool_file("ops", '''
        from jobrunner import ToolResult, tool

        @tool(risk="low", side_effect=False)
        def fetch_report(day: str) -> ToolResult:
            """Fetch the day's report."""
            return ToolResult(ok=False, error="upstream answered 503 Service Unavailable")

        @tool(risk="low", side_effect=False)
        def publish(text: str) -> str:
            """Publish text."""
            raise AssertionError("publish must never run after a failure")
    ''')
    project.job("report", tools=["fetch_report", "publish"])
    fake_api.enqueue(tool_turn([("fetch_report", {"day": "2026-11-20"}),
                                ("publish", {"text": "made-up numbers"})]))
    ran = project.run("run", "report")
    assert ran.code == 1
    assert ran.stdout == ""
    assert "ended ABORTED (tool_failed)" in ran.stderr
    assert "upstream answered 503" in ran.stderr
    assert 'publish({"text": "made-up numbers"}): not_executed' in ran.stderr
    assert len(fake_api.message_requests) == 1  # the model was not asked to carry on
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "tool_failed"
    assert "503" in project.memory("report")  # jobrunner wrote the failure log line
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]


def test_second_concurrent_run_is_skipped(project, fake_api):
    project.tool_file("slow", '''
        import time
        from jobrunner import tool
        @tool(risk="low", side_effect=False, timeout=30)
        def wait_a_bit(seconds: float) -> str:
            """Wait."""
            time.sleep(seconds)
            return "done"
    ''')
    project.job("slow", tools=["wait_a_bit"])
    fake_api.enqueue(tool_turn([("wait_a_bit", {"seconds": 3})]), *ending())
    first = project.popen("run", "slow")
    try:
        for _ in range(100):
            if fake_api.message_requests:
                break
            subprocess.run([sys.executable, "-c", "import time; time.sleep(0.05)"])
        second = project.run("run", "slow")
        assert second.code == 0 and second.stdout == "" and second.stderr == ""
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    statuses = sorted(r["status"] for r in project.runs())
    assert statuses == ["completed", "skipped"]


def test_help_does_not_import_anthropic(project):
    code = (
        "import sys; sys.argv = ['jobrunner', '--help']\n"
        "from jobrunner.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('ANTHROPIC_LOADED' if 'anthropic' in sys.modules else 'ANTHROPIC_NOT_LOADED')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=project.root, timeout=60)
    assert "Exit codes of `run`" in proc.stdout
    assert proc.stdout.strip().endswith("ANTHROPIC_NOT_LOADED")


def test_missing_api_key_is_explained(project, fake_api):
    project.job("keyless")
    ran = project.run("run", "keyless", env={"ANTHROPIC_API_KEY": ""})
    assert ran.code == 2  # a configuration error: nothing was run or written
    assert "set ANTHROPIC_API_KEY" in ran.stderr
    assert fake_api.message_requests == []


def test_jobrunner_is_installed_as_console_script():
    proc = subprocess.run([jobrunner_executable(), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage: jobrunner" in proc.stdout
