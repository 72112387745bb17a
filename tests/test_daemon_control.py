"""Operating the daemon without waiting for a schedule: its systemd unit, and SIGHUP."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

from tests.conftest import Lines, jobrunner_executable, reaped
from tests.schedule_helpers import replay_job
from tests.test_due import daily_at


def test_systemd_unit_runs_this_project_with_absolute_paths(project):
    replay_job(project, "nightly", "0 3 * * *")
    result = project.run("daemon", "--systemd-unit", "--max-concurrent", "3", "--grace", "20")
    assert result.code == 0, result.stderr
    unit = result.stdout
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.startswith(f"ExecStart={jobrunner_executable()} --home {project.root} ")
    assert exec_line.endswith("daemon --max-concurrent 3 --grace 20")
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert f"WorkingDirectory={project.root}" in unit
    assert "TimeoutStopSec=35" in unit  # the grace plus room to exit
    assert project.runs() == []  # printing the unit started nothing


def test_sighup_rereads_job_files_and_the_daemon_keeps_going(project):
    replay_job(project, "nightly", "0 3 * * *")
    with reaped(project.popen("daemon")) as daemon:
        lines = Lines(daemon.stderr)
        lines.until("scheduled nightly: 0 3 * * * (UTC)")
        daemon.send_signal(signal.SIGHUP)
        lines.until("reading job files (SIGHUP)")
        assert daemon.poll() is None  # a reload is not a stop
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert project.runs() == []


def test_max_concurrent_runs_firings_one_after_another(project):
    """Three jobs whose slot passed a moment ago: the daemon catches them up at start,
    and with --max-concurrent 1 each run starts only after the previous one ended."""
    from tests.schedule_helpers import SLEEPY_TOOL

    project.tool_file("sleepy", SLEEPY_TOOL)
    # Daily at the minute just begun: only the caught-up slot fires, however slowly the
    # runs go (a `* * * * *` job would fire again if they crossed into the next minute).
    schedule = daily_at(datetime.now(UTC))
    for name in ("one", "two", "three"):
        replay_job(project, name, schedule, before=[("sleepy", {"seconds": 1})],
                   tools=["sleepy"])
    events: list[tuple[str, str]] = []
    with reaped(project.popen("daemon", "--max-concurrent", "1")) as daemon:
        lines = Lines(daemon.stderr)
        deadline = time.monotonic() + 90
        # Until each job has run (a firing that finds its slot already run is dropped).
        while {n for k, n in events if k == "ended"} != {"one", "two", "three"}:
            line = lines.next(deadline - time.monotonic(), what=f"three runs: {events}")
            said = line.partition(" jobrunner daemon: ")[2].split()
            if said[:1] == ["started"] and " for slot " in line:
                events.append(("started", said[1]))
            elif ") ended: " in line:
                events.append(("ended", said[0]))
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    # Never two at once: every start follows the end of the run before it.
    kinds = [kind for kind, _ in events]
    assert kinds == ["started", "ended"] * (len(kinds) // 2), events
    assert {name for kind, name in events if kind == "started"} == {"one", "three", "two"}
    completed = [r for r in project.runs() if r["status"] == "completed"]
    assert sorted(r["job"] for r in completed) == ["one", "three", "two"]
    assert len({r["slot"] for r in completed}) == 1  # the one caught-up slot
    assert {r["trigger"] for r in completed} == {"daemon"}


def test_jitter_spreads_firings_and_each_waits_what_it_drew(project):
    """Six jobs due at once with `jitter = "4s"`: each firing waits its own random delay
    (logged) before its run starts, so they do not all start in the same instant."""
    names = [f"spread{i}" for i in range(6)]
    schedule = daily_at(datetime.now(UTC))  # caught up at start, and only that slot
    for name in names:
        replay_job(project, name, schedule, jitter="4s")
    fired: dict[str, tuple[float, float]] = {}  # name -> (when the line came, jitter drawn)
    waited: dict[str, float] = {}
    with reaped(project.popen("daemon", "--max-concurrent", "8")) as daemon:
        lines = Lines(daemon.stderr)
        deadline = time.monotonic() + 60
        while len(waited) < len(names):
            now, line = lines.next_timed(deadline - time.monotonic(),
                                         what=f"six runs: {fired}, {waited}")
            said = line.partition(" jobrunner daemon: ")[2].split()
            if said[:1] == ["firing"]:
                drawn = float(said[-1].rstrip("s")) if "after a jitter of" in line else 0.0
                fired[said[1]] = (now, drawn)
            elif said[:1] == ["started"] and said[1] in fired:
                waited[said[1]] = now - fired[said[1]][0]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    drawn = {name: fired[name][1] for name in names}
    assert all(0 <= d <= 4 for d in drawn.values()), drawn
    # Spread, not one value (six draws all within 0.5 s: about 1 in 6,000).
    assert max(drawn.values()) - min(drawn.values()) >= 0.5, drawn
    for name in names:  # each run started no earlier than its jitter allowed
        assert waited[name] >= drawn[name] - 0.05, (name, drawn[name], waited[name])
