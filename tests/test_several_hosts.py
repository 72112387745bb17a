"""Several hosts on one machine, sharing one PostgreSQL state: each "host" is jobrunner
run in a UTS namespace of its own (`unshare --uts`, its own host name), with its own copy
of the project and its own local state folder. Real server, real processes, real kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, jobrunner_executable, reaped, wait_for
from tests.fake_api import tool_turn
from tests.turns import MEMORY, finish
from tests.turns import replay_turn as turn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unshare --uts needs root")

TOOLS = '''
import json, os, time
from pathlib import Path
from jobrunner import tool

SHARED = Path(os.environ["SHARED_DIR"])

def _log(what):
    with open(SHARED / "calls.log", "a") as f:
        f.write(json.dumps({"tool": what, "host": os.uname().nodename}) + "\\n")

@tool(risk="low")
def wait_for_go() -> str:
    """Wait until the test says go."""
    _log("wait_for_go")
    while not (SHARED / "go").exists():
        time.sleep(0.05)
    return "went"

@tool(risk="medium")
def publish(text: str) -> str:
    """Publish text (a side effect)."""
    _log("publish")
    while not (SHARED / "go").exists():
        time.sleep(0.05)
    return "published"

@tool(risk="high")
def wire_money(amount: int) -> str:
    """Send money: a person approves it first."""
    _log("wire_money")
    return f"sent {amount}"
'''


def replay(*calls: tuple[str, dict]) -> str:
    turns = [turn(c) for c in calls] + [turn(("update_memory", MEMORY)), turn(finish())]
    return json.dumps({"turns": turns})


@dataclass
class Host:
    """One host: a name, a copy of the project, a local state folder."""

    name: str
    root: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        # exec keeps the pid: a kill -9 of the process is a kill -9 of the run.
        return ["unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh",
                jobrunner_executable(), "--home", str(self.root), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def json(self, *args: str):
        done = self.run(*args)
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def hosts(tmp_path: Path, pg_url: str, fake_api) -> tuple[Host, Host]:
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "JOBRUNNER_"))}
    env.update({"SHARED_DIR": str(shared), "ANTHROPIC_API_KEY": TEST_KEY,
                "ANTHROPIC_BASE_URL": fake_api.url})
    made = []
    for name in ("host-a", "host-b"):
        root = tmp_path / name / "proj"
        (root / "jobs" / "tools").mkdir(parents=True)
        (root / "jobs" / "tools" / "t.py").write_text(TOOLS)
        (root / "jobrunner.toml").write_text(
            f'state_dir = "{tmp_path / name / "state"}"\nstate_url = "{pg_url}"\n')
        made.append(Host(name, root, env))
    return made[0], made[1]


def both(hosts: tuple[Host, Host], name: str, body: str, model: str | None = None,
         script: str | None = None, **keys) -> None:
    """The same job file on both hosts (a team deploys one project folder to each)."""
    schedule = keys.pop("schedule", "0 8 * * *")
    for host in hosts:
        if script is not None:
            (host.root / "jobs" / f"{name}.replay.json").write_text(script)
        lines = [f'schedule = "{schedule}"', 'timezone = "UTC"',
                 f'model = "{model or f"replay:jobs/{name}.replay.json"}"',
                 'prompt = "Do the task."', body]
        (host.root / "jobs" / f"{name}.toml").write_text("\n".join(lines) + "\n")


def calls(tmp: Path) -> list[dict]:
    log = tmp / "shared" / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_validate_names_the_shared_backend(hosts):
    a, _ = hosts
    both(hosts, "slow", 'tools = ["wait_for_go"]', script=replay(("wait_for_go", {})))
    done = a.run("validate", "--json")
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)["state"]
    assert state["reachable"] and state["backend"].startswith("postgres postgresql://")


def test_fifty_launches_on_two_hosts_make_one_session(hosts, tmp_path):
    a, b = hosts
    both(hosts, "slow", 'tools = ["wait_for_go"]', script=replay(("wait_for_go", {})))
    procs = [host.popen("run", "slow") for _ in range(25) for host in (a, b)]
    try:
        wait_for(lambda: calls(tmp_path), timeout=120, what="a session in its tool")
        # Every other launch ends (skipped) while that session still holds the lock.
        wait_for(lambda: sum(p.poll() is not None for p in procs) == 49, timeout=180,
                 what="the 49 other launches to end")
        (tmp_path / "shared" / "go").write_text("")
        ended = [(p.wait(timeout=180), p.communicate()[1]) for p in procs]
    finally:
        for proc in procs:
            with reaped(proc):
                pass
    assert [code for code, _ in ended].count(0) == 50, [e for e in ended if e[0]]
    assert [c["tool"] for c in calls(tmp_path)] == ["wait_for_go"]
    runs = b.json("runs", "--json", "-n", "100")
    assert sorted(r["status"] for r in runs) == ["completed"] + ["skipped"] * 49
    assert {r["host"] for r in runs} == {"host-a", "host-b"}  # one record, whoever ran


def test_a_run_killed_on_one_host_is_recorded_crashed_by_the_other(hosts, tmp_path):
    a, b = hosts
    both(hosts, "slow", 'tools = ["wait_for_go"]', script=replay(("wait_for_go", {})))
    killed = a.popen("run", "slow")
    with reaped(killed):
        wait_for(lambda: calls(tmp_path), timeout=60, what="host A's run in its tool")
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    (tmp_path / "shared" / "go").write_text("")
    again = b.run("run", "slow")
    assert again.returncode == 0, again.stderr
    runs = b.json("runs", "--json")
    assert [r["status"] for r in runs] == ["completed", "crashed"]
    assert [r["host"] for r in runs] == ["host-b", "host-a"]
    crashed = [x for x in b.json("alerts", "--json", "-n", "50") if x["event"] == "run.crashed"]
    assert len(crashed) == 1 and crashed[0]["run_id"] == runs[1]["id"]
    assert b.run("check").returncode in (0, 1)
    assert len([x for x in a.json("alerts", "--json", "-n", "50")
                if x["event"] == "run.crashed"]) == 1  # alerted once, from any host


def test_a_side_effect_killed_mid_call_on_one_host_is_in_doubt_on_the_other(hosts, tmp_path):
    a, b = hosts
    both(hosts, "pub", 'tools = ["publish"]', script=replay(("publish", {"text": "hi"})))
    killed = a.popen("run", "pub")
    with reaped(killed):
        wait_for(lambda: calls(tmp_path), timeout=60, what="host A's publish call")
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    (tmp_path / "shared" / "go").write_text("")
    stopped = b.run("run", "pub")
    assert stopped.returncode == 1
    assert "ABORTED (ledger_in_doubt)" in stopped.stderr
    assert [c["tool"] for c in calls(tmp_path)] == ["publish"]  # never retried
    [entry] = b.json("ledger", "--json")
    assert entry["state"] == "in_doubt" and entry["host"] == "host-a"


def test_a_call_queued_on_one_host_is_approved_once_on_the_other(hosts, tmp_path):
    a, b = hosts
    both(hosts, "pay", 'tools = ["wire_money"]', script=replay(("wire_money", {"amount": 5})))
    queued = a.run("run", "pay")
    assert queued.returncode == 4, queued.stderr
    [pending] = b.json("approvals", "--json")
    assert pending["tool"] == "wire_money" and calls(tmp_path) == []
    done = b.run("approve", pending["id"])
    assert done.returncode == 0, done.stderr
    twice = a.run("approve", pending["id"])
    assert twice.returncode == 1
    assert [(c["tool"], c["host"]) for c in calls(tmp_path)] == [("wire_money", "host-b")]


def test_memory_moves_between_hosts_and_a_hand_edit_is_taken_up(hosts, fake_api):
    a, b = hosts
    remembered = {**MEMORY, "open_items": ["written on host A"]}
    both(hosts, "mem", 'tools = []', model="claude-sonnet-4-6")
    fake_api.enqueue(tool_turn([("update_memory", remembered), finish()]))
    assert a.run("run", "mem").returncode == 0
    fake_api.enqueue(tool_turn([("update_memory", MEMORY), finish()]))
    assert b.run("run", "mem").returncode == 0
    sent = json.dumps(fake_api.message_requests[1].body["system"])
    assert "written on host A" in sent  # host B's session started from A's memory
    edited = b.root / "memory" / "mem" / "MEMORY.md"
    edited.write_text(edited.read_text() + "\n## Notes\n\nA person wrote this on B.\n")
    fake_api.enqueue(tool_turn([("update_memory", MEMORY), finish()]))
    assert b.run("run", "mem").returncode == 0  # the edit becomes the newest version
    fake_api.enqueue(tool_turn([("update_memory", MEMORY), finish()]))
    assert a.run("run", "mem").returncode == 0
    assert "A person wrote this on B." in json.dumps(fake_api.message_requests[3].body["system"])
    assert "A person wrote this on B." in (a.root / "memory/mem/MEMORY.md").read_text()


def test_the_environment_variable_wins_and_a_missing_driver_is_named(hosts, tmp_path):
    a, _ = hosts
    both(hosts, "slow", 'tools = ["wait_for_go"]', script=replay(("wait_for_go", {})))
    fake = tmp_path / "no-psycopg"
    fake.mkdir()
    (fake / "psycopg.py").write_text("raise ImportError('psycopg is not installed')\n")
    done = subprocess.run(a.argv("validate"), env={**a.env, "PYTHONPATH": str(fake)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "pip install 'jobrunner[postgres]'" in done.stderr and "Traceback" not in done.stderr
    local = subprocess.run(a.argv("validate", "--json"),
                           env={**a.env, "JOBRUNNER_STATE_URL": "postgresql://nobody@/none"
                                "?host=/nonexistent"}, capture_output=True, text=True,
                           timeout=60)
    assert local.returncode == 2  # the variable's URL is the one tried
    assert "cannot connect" in local.stdout + local.stderr


def test_two_daemons_run_every_slot_once_and_one_keeps_going_when_the_other_dies(hosts):
    a, b = hosts
    both(hosts, "tick", 'tools = []\nmisfire_grace = "50s"', script=replay(),
         schedule="* * * * *")
    daemons = [a.popen("daemon"), b.popen("daemon")]
    try:
        def slots() -> dict[str, list[dict]]:
            out: dict[str, list[dict]] = {}
            for r in b.json("runs", "tick", "--json", "-n", "100"):
                if r["slot"]:
                    out.setdefault(r["slot"], []).append(r)
            return out

        first = wait_for(lambda: [s for s, rs in slots().items()
                                  if any(r["status"] == "completed" for r in rs)],
                         timeout=150, what="a slot run by one of the daemons", interval=2)
        os.kill(daemons[0].pid, signal.SIGKILL)  # host A dies mid-minute
        later = wait_for(lambda: [s for s, rs in slots().items() if s > first[0] and
                                  any(r["status"] == "completed" for r in rs)],
                         timeout=150, what="the next slot, run by host B", interval=2)
        daemons[1].send_signal(signal.SIGTERM)
        assert daemons[1].wait(timeout=60) == 0
    finally:
        for proc in daemons:
            with reaped(proc):
                pass
    for slot, runs in slots().items():
        started = [r for r in runs if r["status"] != "skipped"]
        assert len(started) == 1, (slot, runs)  # once per slot, across hosts
    assert {r["host"] for r in slots()[later[0]] if r["status"] != "skipped"} == {"host-b"}
