"""Whatever happens, a run ends recorded: no config error writes half a run, and no
interruption leaves a run `running` forever."""

from __future__ import annotations

import signal
import time

from tests.conftest import reaped, wait_for
from tests.fake_api import tool_turn
from tests.turns import ending

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


LEFTOVER_TOOLS = '''
import os
import threading
import time

from jobrunner import tool


@tool(risk="low", side_effect=False, timeout=30)
def background(seconds: int) -> str:
    """Start some work in a thread of its own and return at once."""
    threading.Thread(target=time.sleep, args=(seconds,), daemon=False).start()
    return "started"


@tool(risk="low", side_effect=False, timeout=30)
def bail(code: int) -> str:
    """End the process there and then."""
    os._exit(code)
'''


def test_a_thread_a_tool_leaves_running_does_not_keep_the_command_alive(project, fake_api):
    project.tool_file("leftover", LEFTOVER_TOOLS)
    project.job("bg", tools=["background"])
    fake_api.enqueue(tool_turn([("background", {"seconds": 600})]), *ending())
    proc = project.popen("run", "bg")
    with reaped(proc):
        wait_for(lambda: [r["status"] for r in project.recorded_runs()] == ["completed"], 60,
                 what="the run to be recorded completed")
        out, err = proc.communicate(timeout=30)  # ended with the run, not with the thread
    assert proc.returncode == 0, err
    assert "free" in project.run("locks").stdout


def test_a_tool_calling_os_exit_is_a_failed_call_not_the_end_of_the_process(project,
                                                                            fake_api):
    project.tool_file("leftover", LEFTOVER_TOOLS)
    project.job("quitter", tools=["bail"])
    fake_api.enqueue(tool_turn([("bail", {"code": 0})]))
    ran = project.run("run", "quitter")
    assert ran.code == 1, ran.stderr
    assert "os._exit(0)" in ran.stderr
    [record] = project.runs()
    assert (record["status"], record["stop_reason"]) == ("aborted", "tool_failed")
    assert "free" in project.run("locks").stdout
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]
