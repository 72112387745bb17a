"""Whatever happens, a run ends recorded: no config error writes half a run, and no
interruption leaves a run `running` forever."""

from __future__ import annotations

import signal
import time

from tests.fake_api import tool_turn

NAP_TOOL = '''
import time
from pathlib import Path

from jobrunner import tool
from jobrunner.tools.api import current_context


@tool(risk="low", side_effect=False, timeout=120)
def nap(seconds: int) -> str:
    """Wait a while."""
    (Path(current_context().project_root) / "napping").write_text("zzz")
    time.sleep(seconds)
    return "rested"
'''


def test_a_broken_replay_script_is_refused_before_anything_is_written(project, fake_api):
    project.write("jobs/demo.replay.json", "{ not json")
    project.job("demo", model="replay:jobs/demo.replay.json")
    for _ in range(2):
        ran = project.run("run", "demo")
        assert ran.code == 2
        assert "jobs/demo.replay.json:1: replay script is not JSON" in ran.stderr
    assert project.runs() == []
    assert project.alerts() == []
    assert not (project.state / "traces").exists() or not any((project.state / "traces").iterdir())


def test_ctrl_c_mid_tool_is_recorded_not_left_running(project, fake_api):
    project.tool_file("nap", NAP_TOOL)
    project.job("slow", tools=["nap"])
    fake_api.enqueue(tool_turn([("nap", {"seconds": 30})]))
    proc = project.popen("run", "slow")
    try:
        deadline = time.monotonic() + 30
        while not (project.root / "napping").exists():
            assert time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "no nap"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode != 0
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "interrupted"
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]
    assert "free" in project.run("locks").stdout
