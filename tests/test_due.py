"""Once per slot, whoever launches it; `run --due` runs what came within its grace."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

from tests.conftest import jobrunner_executable
from tests.schedule_helpers import replay_job


def daily_at(moment: datetime) -> str:
    """A daily crontab expression firing at `moment`'s UTC minute."""
    return f"{moment.minute} {moment.hour} * * *"


def test_a_slot_runs_once_a_manual_run_always_runs(project):
    replay_job(project, "report", "0 8 * * *")
    slot = "2026-11-23T08:00:00Z"
    first = project.run("run", "report", "--trigger", "cron", "--slot", slot)
    assert first.code == 0, first.stderr
    again = project.run("run", "report", "--trigger", "daemon", "--slot", slot)
    assert again.code == 0 and again.stderr == ""
    for _ in range(2):
        assert project.run("run", "report").code == 0

    runs = sorted(project.runs("report"), key=lambda r: r["started_at"])
    by_trigger = {r["trigger"]: [] for r in runs}
    for r in runs:
        by_trigger[r["trigger"]].append(r)
    [cron] = by_trigger["cron"]
    assert cron["status"] == "completed" and cron["slot"] == slot
    [daemon] = by_trigger["daemon"]
    assert daemon["status"] == "skipped"
    assert daemon["stop_reason"] == "slot_taken"
    assert f"slot {slot} already run by run {cron['id']} (cron)" in daemon["report"]
    assert [r["status"] for r in by_trigger["manual"]] == ["completed", "completed"]
    assert all(r["slot"] is None for r in by_trigger["manual"])


def test_concurrent_launches_of_one_slot_make_one_session(project):
    replay_job(project, "report", "0 8 * * *")
    slot = "2026-11-23T08:00:00Z"
    procs = [subprocess.Popen([jobrunner_executable(), "run", "report", "--trigger", trigger,
                               "--slot", slot], cwd=project.root, env=project.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for trigger in ("cron", "cron", "daemon", "due", "cron", "daemon")]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
    statuses = sorted(r["status"] for r in project.runs("report"))
    assert statuses == ["completed"] + ["skipped"] * (len(procs) - 1)


def test_bad_slot_is_a_usage_error(project):
    replay_job(project, "report", "0 8 * * *")
    bad = project.run("run", "report", "--slot", "yesterday")
    assert bad.code == 2
    assert "--slot: 'yesterday' is not an ISO 8601 time" in bad.stderr
    assert project.runs() == []


def test_run_due_runs_each_due_slot_once_and_exits_with_the_worst(project):
    now = datetime.now(UTC)
    recent = daily_at(now - timedelta(minutes=2))  # 2 min late, grace 10 min: due
    replay_job(project, "ok-job", recent, misfire_grace="10m")
    replay_job(project, "failing-job", recent, status="failed", misfire_grace="10m")
    replay_job(project, "missed-job", daily_at(now - timedelta(minutes=20)),
               misfire_grace="10m")  # 20 min late: missed, not run
    replay_job(project, "later-job", daily_at(now + timedelta(minutes=30)))

    due = project.run("run", "--due")
    assert due.code == 1, due.stderr  # worst of completed (0) and failed (1)
    assert "failing-job: run" in due.stderr and "ended FAILED" in due.stderr
    runs = {r["job"]: r for r in project.runs()}
    assert set(runs) == {"ok-job", "failing-job"}
    assert runs["ok-job"]["status"] == "completed" and runs["ok-job"]["trigger"] == "due"
    expected_slot = (now - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:00Z")
    assert runs["ok-job"]["slot"] == expected_slot == runs["failing-job"]["slot"]

    # The next minute's `--due` finds nothing left to do: no run, no record, no output.
    again = project.run("run", "--due")
    assert (again.code, again.stdout, again.stderr) == (0, "", "")
    assert len(project.runs()) == 2


def test_run_due_with_a_name_and_a_broken_job_file(project):
    recent = daily_at(datetime.now(UTC) - timedelta(minutes=1))
    replay_job(project, "ok-job", recent, misfire_grace="10m")
    replay_job(project, "other-job", recent, misfire_grace="10m")
    project.write("jobs/broken.toml", 'schedule = "61 * * * *"\nprompt = "x"\n')

    one = project.run("run", "--due", "ok-job", "--trigger", "cron")
    assert one.code == 0, one.stderr
    [record] = project.runs()
    assert (record["job"], record["trigger"], record["status"]) == ("ok-job", "cron",
                                                                    "completed")

    rest = project.run("run", "--due")
    assert rest.code == 2  # the broken file is reported, and does not stop the others
    assert "jobs/broken.toml:1: schedule: minute: 61 is outside 0-59" in rest.stderr
    assert sorted(r["job"] for r in project.runs()) == ["ok-job", "other-job"]
