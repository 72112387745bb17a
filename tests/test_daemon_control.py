"""Operating the daemon without waiting for a schedule: its systemd unit, and SIGHUP."""

from __future__ import annotations

import signal
import time

from tests.conftest import jobrunner_executable
from tests.schedule_helpers import replay_job


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
    daemon = project.popen("daemon")
    lines: list[str] = []
    try:
        def read_until(text: str, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = daemon.stderr.readline()
                lines.append(line)
                if text in line:
                    return
                assert daemon.poll() is None, "".join(lines)
            raise AssertionError(f"no {text!r} in: {''.join(lines)}")

        read_until("scheduled nightly: 0 3 * * * (UTC)")
        daemon.send_signal(signal.SIGHUP)
        read_until("reading job files (SIGHUP)")
        assert daemon.poll() is None  # a reload is not a stop
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        daemon.stdout.close()
        daemon.stderr.close()
    assert project.runs() == []
