"""How the daemon starts each run: forked by its fork server, or exec'd. A real daemon on
the real clock; the jobs' slot is the minute just begun, caught up at start."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime

from tests.conftest import Lines, reaped, wait_for
from tests.schedule_helpers import SLEEPY_TOOL, replay_job
from tests.test_due import daily_at


def _said(lines: Lines, pattern: str, deadline: float, what: str) -> re.Match:
    """The first line from here on matching `pattern`."""
    while True:
        line = lines.next(deadline - time.monotonic(), what=what)
        found = re.search(pattern, line)
        if found:
            return found


def test_a_run_outlives_its_killed_fork_server_and_the_next_forks_from_a_new_one(project):
    project.tool_file("sleepy", SLEEPY_TOOL)
    schedule = daily_at(datetime.now(UTC))
    for name in ("one", "two"):  # one at a time, in either order
        replay_job(project, name, schedule, before=[("sleepy", {"seconds": 4})],
                   tools=["sleepy"])
    with reaped(project.popen("daemon", "--max-concurrent", "1")) as daemon:
        lines = Lines(daemon.stderr)
        deadline = time.monotonic() + 90
        server = int(_said(lines, r"fork server started \(pid (\d+)\)", deadline,
                           "the fork server")[1])
        started = _said(lines, r"started (\w+) for slot .* \(pid (\d+)\)", deadline,
                        "the first run")
        first, second = started[1], ({"one", "two"} - {started[1]}).pop()
        wait_for(lambda: any(r["status"] == "running" for r in project.recorded_runs(first)),
                 30, what="the first run to be under way")
        os.kill(server, signal.SIGKILL)  # as the OOM killer might
        # Its server gone, the run goes on; the daemon sees it end and starts a new
        # server in the background (in whichever order those come); the next run forks
        # from it, or starts afresh while it is still starting.
        _said(lines, second + r" \(pid \d+\) ended: exit code 0", deadline, "the second run")
        pattern = r"fork server started \(pid (\d+)\)"
        wait_for(lambda: len(re.findall(pattern, "".join(lines.seen))) >= 2, 60,
                 what="a new fork server")
        log = "".join(lines.seen)
        ended = re.search(first + r" \(pid (\d+)\) ended(.*)", log)
        assert ended and ended[1] == started[2], log
        assert "exit status not known (its fork server stopped)" in ended[2]
        servers = [int(pid) for pid in re.findall(pattern, log)]
        assert servers[0] == server and len(servers) == 2 and servers[1] != server, log
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    log = "".join(lines.seen)
    assert "restarting the fork server (it stopped)" in log
    # The run whose server died under it finished on its own and recorded its end.
    by_job = {r["job"]: r for r in project.runs()}
    assert by_job[first]["status"] == "completed", by_job[first]
    assert by_job[second]["status"] == "completed", by_job[second]
    assert {r["trigger"] for r in by_job.values()} == {"daemon"}


def test_launch_exec_starts_each_run_as_a_fresh_process(project):
    replay_job(project, "plain", daily_at(datetime.now(UTC)))
    with reaped(project.popen("daemon", "--launch", "exec")) as daemon:
        lines = Lines(daemon.stderr)
        _said(lines, r"plain \(pid \d+\) ended: exit code 0", time.monotonic() + 60,
              "the run")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "fork server" not in "".join(lines.seen)
    [run] = project.runs("plain")
    assert (run["status"], run["trigger"]) == ("completed", "daemon")


def test_an_unknown_launch_mode_is_a_usage_error(project):
    result = project.run("daemon", "--launch", "spawn")
    assert result.code == 2
    assert "--launch: 'spawn': give fork or exec" in result.stderr
