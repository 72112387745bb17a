"""System cron through the real `crontab` command, and the real cron daemon end to end.

These tests edit the current user's crontab: each saves it first and puts it back.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobrunner.scheduling.crontab import cron_running, system_timezone
from tests.conftest import wait_for
from tests.schedule_helpers import replay_job

# The user's one crontab and the machine's one cron daemon: these tests run one at a time,
# in one worker, when the suite runs in parallel.
pytestmark = pytest.mark.xdist_group("crontab")

needs_crontab = pytest.mark.skipif(shutil.which("crontab") is None,
                                   reason="the `crontab` command (Debian package cron) is absent")

OTHER_LINES = (
    "MAILTO=ops@example.com\n"
    "# a line someone wrote by hand\n"
    "*/5 * * * * /usr/bin/true  # keep me %\n"
)


def crontab_text() -> str:
    done = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def set_crontab(text: str) -> None:
    if text:
        subprocess.run(["crontab", "-"], input=text, text=True, check=True)
    else:
        subprocess.run(["crontab", "-r"], capture_output=True)


@pytest.fixture
def user_crontab():
    saved = crontab_text()
    yield
    set_crontab(saved)


def test_cron_prints_absolute_lines_per_zone(project):
    zone = system_timezone()
    other = "Pacific/Chatham" if zone != "Pacific/Chatham" else "Asia/Kolkata"
    replay_job(project, "local-job", "30 8 * * mon-fri", timezone=zone)
    replay_job(project, "far-job", "0 9 * * *", timezone=other)
    replay_job(project, "weekly-job", "@weekly", timezone=zone)

    printed = project.run("cron")
    assert printed.code == 0, printed.stderr
    lines = [ln for ln in printed.stdout.splitlines() if not ln.startswith("#")]
    command = f"--home {project.root} run --due %s --trigger cron >/dev/null"
    assert lines[0].startswith("* * * * * /") and lines[0].endswith(command % "far-job")
    assert lines[1].startswith("30 8 * * mon-fri /")
    assert lines[1].endswith(command % "local-job")
    assert lines[2].startswith("0 0 * * 0 /")  # aliases spelled out for any cron
    executable = lines[1].split(" ")[5]
    assert Path(executable).is_absolute() and Path(executable).is_file()
    assert printed.stdout.splitlines()[0] == f"# BEGIN jobrunner {project.root}"
    assert f"far-job: 0 9 * * * in {other}; cron runs in {zone}" in printed.stdout

    as_json = project.run("cron", "--json").json()
    assert as_json["system_timezone"] == zone
    assert [ln["job"] for ln in as_json["lines"]] == ["far-job", "local-job", "weekly-job"]


def test_a_newline_in_a_schedule_stays_out_of_the_crontab_block(project):
    zone = system_timezone()
    replay_job(project, "local-job", "30 8 * * *\n", timezone=zone)
    replay_job(project, "far-job", "0 9\t* * *\n", timezone="Pacific/Chatham"
               if zone != "Pacific/Chatham" else "Asia/Kolkata")
    printed = project.run("cron")
    assert printed.code == 0, printed.stderr
    # Every line is a comment or an entry: expression, executable, arguments.
    entries = [ln for ln in printed.stdout.splitlines() if not ln.startswith("#")]
    assert [ln.split(" --home ")[0].rsplit(" ", 1)[0] for ln in entries] == \
        ["* * * * *", "30 8 * * *"]
    assert "# local-job: 30 8 * * * (" in printed.stdout
    assert "# far-job: 0 9 * * * in " in printed.stdout


@needs_crontab
def test_install_is_idempotent_keeps_other_lines_and_uninstall_restores(
        project, user_crontab):
    other_project = "# BEGIN jobrunner /srv/other\n0 1 * * * /x run --due y\n" \
                    "# END jobrunner /srv/other\n"
    set_crontab(OTHER_LINES + other_project)
    replay_job(project, "nightly", "15 3 * * *", timezone=system_timezone())

    first = project.run("cron", "--install")
    assert first.code == 0, first.stderr
    assert "installed: 1 line(s)" in first.stdout
    installed = crontab_text()
    assert installed.startswith(OTHER_LINES + other_project)
    assert installed.count(f"# BEGIN jobrunner {project.root}\n") == 1
    assert f"15 3 * * * {project.run('cron').stdout.splitlines()[3].split(' ', 5)[5]}" \
        in installed

    again = project.run("cron", "--install")
    assert again.code == 0 and "already installed, unchanged" in again.stdout
    assert crontab_text() == installed

    replay_job(project, "nightly", "45 4 * * *", timezone=system_timezone())
    changed = project.run("cron", "--install")
    assert changed.code == 0 and changed.stdout.startswith("installed")
    updated = crontab_text()
    assert "45 4 * * * " in updated and "15 3 * * * " not in updated
    assert updated.count("# BEGIN jobrunner") == 2  # ours, replaced in place, and the other

    # A broken job file: nothing is written.
    project.write("jobs/broken.toml", 'schedule = "* * *"\nprompt = "x"\n')
    refused = project.run("cron", "--install")
    assert refused.code == 2
    assert "jobs/broken.toml:1: schedule: expected 5 fields" in refused.stderr
    assert crontab_text() == updated
    (project.root / "jobs/broken.toml").unlink()

    removed = project.run("cron", "--uninstall")
    assert removed.code == 0 and "removed the jobrunner block" in removed.stdout
    assert crontab_text() == OTHER_LINES + other_project
    twice = project.run("cron", "--uninstall")
    assert twice.code == 0 and "no jobrunner block" in twice.stdout
    assert crontab_text() == OTHER_LINES + other_project


@needs_crontab
@pytest.mark.skipif(not cron_running(), reason="no cron daemon running (.ci/run starts one)")
def test_real_cron_daemon_runs_the_installed_block(project, user_crontab):
    """cron's bare environment, $HOME as working directory: the block must still work."""
    replay_job(project, "every-minute", "* * * * *", timezone=system_timezone())
    installed = project.run("cron", "--install")
    assert installed.code == 0, installed.stderr

    # The next minute boundary, plus cron's own start-up.
    runs = wait_for(lambda: [r for r in project.recorded_runs() if r["status"] != "running"],
                    135, what="cron to launch the job and its run to end", interval=0.5)
    set_crontab("")  # stop further launches before asserting
    run = runs[-1]
    assert (run["job"], run["trigger"], run["status"]) == ("every-minute", "cron", "completed")
    started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    slot = datetime.fromisoformat(run["slot"].replace("Z", "+00:00"))
    assert slot.second == 0 and slot <= started
    assert started.astimezone(UTC).replace(second=0) == slot
