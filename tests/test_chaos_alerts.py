"""Alert channels dead and revived, under concurrency: six jobs fail at once while the
webhook and the command channel are down. Nothing is lost while they are down, and once
they are back, three `check`s racing each other deliver every alert exactly once."""

from __future__ import annotations

import json
from pathlib import Path

from tests.alert_servers import HttpRecorder, free_port
from tests.fake_api import tool_turn
from tests.test_alerts import FAILING_TOOL

JOBS = [f"report{i}" for i in range(6)]


def test_dead_channels_revived_deliver_every_alert_exactly_once(project, fake_api, tmp_path):
    port = free_port()  # the webhook: nothing listens here until it is revived
    up = tmp_path / "command-up"
    sink = tmp_path / "command-alerts.jsonl"
    command = ["sh", "-c", f"test -e '{up}' || exit 7; cat >> '{sink}'"]
    project.write("jobrunner.toml", f'state_dir = "{project.state}"\n'
                  f'[[alerts.channels]]\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/h"\n'
                  f'timeout = "2s"\n\n[[alerts.channels]]\ntype = "command"\n'
                  f"command = {json.dumps(command)}\n")
    project.tool_file("fetch", FAILING_TOOL)
    for name in JOBS:
        project.job(name, tools=["fetch"])
    fake_api.responder = lambda body: tool_turn([("fetch", {"day": "2026-11-20"})])

    failing = [project.popen("run", name) for name in JOBS]
    for proc in failing:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
    runs = {r["job"]: r["id"] for r in project.runs()}
    assert sorted(runs) == JOBS and all(r["status"] == "aborted" for r in project.runs())
    waiting = project.run("alerts", "-n", "50", "--json").json()
    assert sorted(a["run_id"] for a in waiting) == sorted(runs.values())
    assert all(d["status"] == "pending" for a in waiting for d in a["deliveries"])
    assert not sink.exists()

    up.write_text("")
    with HttpRecorder(port=port) as hook:
        checks = [project.popen("check") for _ in range(3)]
        for proc in checks:
            proc.communicate(timeout=120)
        assert project.run("check").code == 0  # nothing left in the outbox
    by_hook = sorted(b["run_id"] for b in hook.json_bodies())
    by_command = sorted(json.loads(line)["run_id"] for line in sink.read_text().splitlines())
    assert by_hook == sorted(runs.values()), by_hook  # each once: no loss, no duplicate
    assert by_command == sorted(runs.values()), by_command
    delivered = project.run("alerts", "-n", "50", "--json").json()
    assert all(d["status"] == "delivered" for a in delivered for d in a["deliveries"])


def test_a_channel_that_hangs_does_not_hold_a_run_past_its_timeout(project, fake_api, tmp_path):
    """A command channel that never answers is cut at its timeout; the run's own record is
    written first and the alert waits in the outbox."""
    project.write("jobrunner.toml", f'state_dir = "{project.state}"\n'
                  '[[alerts.channels]]\ntype = "command"\ncommand = ["sleep", "600"]\n'
                  'timeout = "1s"\n')
    project.tool_file("fetch", FAILING_TOOL)
    project.job("report", tools=["fetch"])
    fake_api.responder = lambda body: tool_turn([("fetch", {"day": "2026-11-20"})])
    proc = project.popen("run", "report")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [record] = project.runs()
    assert record["status"] == "aborted"
    [alert] = project.run("alerts", "--json").json()
    [delivery] = alert["deliveries"]
    assert delivery["status"] == "pending" and "did not finish within 1s" in delivery["error"]
    assert not _running(b"sleep\x00600\x00"), "the hung channel command was left running"


def _running(cmdline: bytes) -> list[str]:
    """Pids of processes whose command line is exactly `cmdline` (NUL-separated)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == cmdline:
                found.append(entry.name)
        except OSError:
            continue
    return found
