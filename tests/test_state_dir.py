"""One project, one state, whoever launches it: a shell with `$XDG_STATE_HOME` set and
cron's bare environment (`env -i`) must share one ledger and one set of locks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, jobrunner_executable, reaped, wait_for

SLOW_TOOL = '''
import time
from pathlib import Path
from jobrunner import tool
@tool(risk="low")
def wait_for_go() -> str:
    """Wait until the test says go."""
    with open("entered.log", "a") as f:
        f.write("in\\n")
    while not Path("go").exists():
        time.sleep(0.05)
    return "went"
'''

SLOW_REPLAY = {"turns": [
    {"content": [{"type": "tool_use", "id": "t1", "name": "wait_for_go", "input": {}}],
     "stop_reason": "tool_use"},
    {"content": [
        {"type": "tool_use", "id": "t2", "name": "update_memory",
         "input": {"current_objective": "Wait.", "key_decisions": [], "what_not_to_do": [],
                   "open_items": []}},
        {"type": "tool_use", "id": "t3", "name": "finish",
         "input": {"status": "completed", "summary": "Waited.", "established": [],
                   "assumed": [], "unknown": []}}],
     "stop_reason": "tool_use"},
]}


@pytest.fixture
def default_state_project(tmp_path: Path):
    """The example project with no `state_dir`: the default state folder applies. It is
    under the account's real home, so it is removed after the test."""
    root = tmp_path / "state-default-example"
    for part in ("jobs", "memory", "data"):
        shutil.copytree(REPO / part, root / part,
                        ignore=shutil.ignore_patterns("__pycache__", "history"))
    (root / "jobrunner.toml").write_text('email_outbox = "outbox"\n', encoding="utf-8")
    root.joinpath("jobs/tools/slow.py").write_text(SLOW_TOOL, encoding="utf-8")
    root.joinpath("jobs/slow.replay.json").write_text(json.dumps(SLOW_REPLAY), encoding="utf-8")
    root.joinpath("jobs/slow.toml").write_text(
        'schedule = "0 8 * * *"\ntimezone = "UTC"\nmodel = "replay:jobs/slow.replay.json"\n'
        'tools = ["wait_for_go"]\nprompt = "Wait for go."\n', encoding="utf-8")
    yield root
    from jobrunner.config.project import _default_state_dir

    shutil.rmtree(_default_state_dir(root.resolve()), ignore_errors=True)


def shell_env(tmp_path: Path) -> dict[str, str]:
    """A login shell's environment, with `$XDG_STATE_HOME` pointing somewhere of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "JOBRUNNER_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "shell-xdg-state")
    return env


def shell(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([jobrunner_executable(), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def cron(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """As cron runs a line: a bare environment, `/` as working directory."""
    return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", jobrunner_executable(),
                           "--home", str(root), *args], cwd="/", capture_output=True,
                          text=True, timeout=timeout)


def test_shell_and_cron_share_one_ledger(default_state_project, tmp_path):
    root = default_state_project
    env = shell_env(tmp_path)
    first = shell(root, env, "run", "daily-email")
    assert first.returncode == 0, first.stderr
    assert len(list((root / "outbox").glob("*.eml"))) == 1

    again = cron(root, "run", "daily-email")
    assert again.returncode == 0, again.stderr
    assert len(list((root / "outbox").glob("*.eml"))) == 1  # the ledger kept it to one

    from_shell = json.loads(shell(root, env, "ledger", "--json").stdout)
    from_cron = json.loads(cron(root, "ledger", "--json").stdout)
    assert len(from_shell) == 1 and from_shell == from_cron
    runs = json.loads(cron(root, "runs", "--json").stdout)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert not (tmp_path / "shell-xdg-state").exists()  # the variable is not a second home


def test_shell_and_cron_share_one_lock(default_state_project, tmp_path):
    root = default_state_project
    env = shell_env(tmp_path)
    proc = subprocess.Popen([jobrunner_executable(), "run", "slow"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        wait_for(lambda: (root / "entered.log").exists(), what="the shell's run in its tool")
        # With a lock of its own it would start a session and wait in the tool too.
        second = cron(root, "run", "slow", timeout=30)
        assert second.returncode == 0, second.stderr
        (root / "go").write_text("")
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert (root / "entered.log").read_text().count("in") == 1
    runs = json.loads(shell(root, env, "runs", "slow", "--json").stdout)
    assert sorted(r["status"] for r in runs) == ["completed", "skipped"]
    skipped = next(r for r in runs if r["status"] == "skipped")
    assert skipped["stop_reason"] == "lock_held" and "lock held by run" in skipped["report"]


def test_validate_points_at_state_left_under_xdg(default_state_project, tmp_path):
    root = default_state_project.resolve()
    from jobrunner.config.project import _default_state_dir

    env = shell_env(tmp_path)
    old = Path(env["XDG_STATE_HOME"]) / "jobrunner" / _default_state_dir(root).name
    old.mkdir(parents=True)
    result = shell(root, env, "validate")
    assert result.returncode == 0, result.stderr
    assert str(old) in result.stderr and "XDG_STATE_HOME" in result.stderr
