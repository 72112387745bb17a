"""The daemon as a real process on the real clock.

Schedules have minute granularity, so one daemon serves the whole story (about two
minute boundaries): it fires jobs, survives a job whose process is killed, picks up an
edited job file, and on SIGTERM passes the signal to a run in flight and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime

from tests.conftest import jobrunner_executable, wait_for
from tests.schedule_helpers import SLEEPY_TOOL, replay_job


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def test_daemon_fires_survives_reloads_and_stops_cleanly(project, tmp_path):
    project.tool_file("sleepy", SLEEPY_TOOL)
    replay_job(project, "steady", "* * * * *")
    replay_job(project, "crasher", "* * * * *", before=[("die", {})], tools=["die"])
    replay_job(project, "slow", "* * * * *", before=[("sleepy", {"seconds": 600})],
               tools=["sleepy"], body="[limits]\nmax_seconds = 900\n")
    replay_job(project, "late", "0 0 1 1 *")

    # Start early enough in a minute that the edit below is loaded before the boundary.
    if datetime.now(UTC).second > 45:
        time.sleep(61 - datetime.now(UTC).second)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log_file:
        daemon = subprocess.Popen(
            [jobrunner_executable(), "daemon", "--poll", "0.5", "--grace", "20",
             "--max-concurrent", "8"],
            cwd=project.root, env=project.env, stdout=log_file, stderr=subprocess.STDOUT)

    def log() -> str:
        return log_path.read_text()

    try:
        wait_for(lambda: "scheduled late: 0 0 1 1 *" in log(), 30, what="the daemon to start")
        assert "scheduled steady: * * * * * (UTC), next " in log()
        # A second daemon on the same project refuses to start.
        second = project.run("daemon")
        assert second.code == 75 and "a daemon already runs this project" in second.stderr

        replay_job(project, "late", "* * * * *")  # edited while the daemon runs
        wait_for(lambda: "scheduled late: * * * * *" in log(), 15,
                 what="the edited job reloaded")

        def story_told():
            runs = project.recorded_runs()
            by_job: dict[str, list[dict]] = {}
            for run in sorted(runs, key=lambda r: r["started_at"]):
                by_job.setdefault(run["job"], []).append(run)
            steady = [r for r in by_job.get("steady", []) if r["status"] == "completed"]
            crashed = [r for r in by_job.get("crasher", []) if r["status"] == "crashed"]
            slow = by_job.get("slow", [])
            late = [r for r in by_job.get("late", []) if r["status"] == "completed"]
            if len(steady) >= 2 and crashed and late and len(slow) >= 2:
                return by_job
            return None

        by_job = wait_for(story_told, 150, what="two minutes of firings", interval=0.5)
        assert daemon.poll() is None, log()

        # Fired by the daemon, once per slot, each slot a minute boundary.
        steady = [r for r in by_job["steady"] if r["status"] == "completed"]
        assert {r["trigger"] for r in steady} == {"daemon"}
        slots = [r["slot"] for r in steady]
        assert len(set(slots)) == len(slots) and all(s.endswith(":00Z") for s in slots)
        # The killed run was recorded as crashed by the next firing; the daemon lived on.
        assert "crasher (pid" in log() and "killed by signal 9" in log()
        assert "fork server started (pid" in log()  # the runs forked from it
        assert any(a["event"] == "run.crashed" and a["job"] == "crasher"
                   for a in project.alerts())
        assert by_job["late"][0]["trigger"] == "daemon"
        # The slow run holds its lock across the next slot: that firing is skipped.
        in_flight, overlapping = by_job["slow"][0], by_job["slow"][1]
        assert in_flight["status"] == "running"
        assert overlapping["status"] == "skipped"
        assert overlapping["stop_reason"] == "lock_held"
        assert f"lock held by run {in_flight['id']}" in overlapping["report"]

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    assert f"passing SIGTERM to slow (pid {in_flight['pid']})" in log()
    assert log().rstrip().endswith("jobrunner daemon: stopped")
    [stopped] = [r for r in project.runs("slow") if r["id"] == in_flight["id"]]
    assert (stopped["status"], stopped["stop_reason"]) == ("aborted", "terminated")
    assert not alive(in_flight["pid"])
