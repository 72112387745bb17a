"""A run on a held lock: cheap when nothing changed, validated in full when anything did.

After a run has validated a job, the next run of the unchanged job takes its lock on the
brief that validation recorded (config/checked.py) and builds no model; every input a
full validation reads (the job file, jobrunner.toml, the tool files, the replay script)
and the environment (the key, env_file) still decides, exactly as before."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import contextmanager

from jobrunner.cli.launch import RunArgs, parse
from tests.schedule_helpers import replay_job

HOLDER = """
import sys
from pathlib import Path
from jobrunner.locks.file import RunLock, Acquired
lock = RunLock(Path(sys.argv[1]), "job-" + sys.argv[2])
assert isinstance(lock.try_acquire(), Acquired)
lock.mark_held("run-elsewhere", sys.argv[2], trigger="manual")
print("held", flush=True)
sys.stdin.read()
lock.release()
"""

TOOL = '''
from jobrunner import tool
@tool(risk="low", side_effect=False)
def tally(n: int) -> int:
    """Count."""
    return n
'''


@contextmanager
def held(project, name: str):
    """The job's lock, held by a live process as a running run holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project.state / "locks"), name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


def imported(stderr: str) -> set[str]:
    """The modules a process imported, from its `-X importtime` lines."""
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)$", stderr, re.M)}


def skipped(project, name: str) -> list[dict]:
    return [r for r in project.runs(name) if r["status"] == "skipped"]


def test_an_unchanged_job_skips_on_a_held_lock_without_building_a_model(project):
    project.tool_file("count", TOOL)
    replay_job(project, "tick", "* * * * *", tools=["tally"])
    assert project.run("run", "tick").code == 0  # validated in full, and remembered
    with held(project, "tick"):
        ran = project.run("run", "tick", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert ran.code == 0 and ran.stdout == ""
    modules = imported(ran.stderr)
    assert "jobrunner.run.runner" in modules  # the same run_job, the same lock
    assert not {"pydantic", "typer", "jobrunner.config.jobfile", "anthropic"} & modules
    [skip] = skipped(project, "tick")
    assert skip["stop_reason"] == "lock_held" and "run-elsewhere" in skip["report"]
    assert skip["model"] == "replay:jobs/tick.replay.json" and skip["trigger"] == "manual"


def test_a_changed_input_is_validated_in_full_before_the_lock(project):
    project.tool_file("count", TOOL)
    replay_job(project, "tick", "* * * * *", tools=["tally"])
    assert project.run("run", "tick").code == 0
    job_file = project.root / "jobs" / "tick.toml"
    good_job = job_file.read_text()
    settings = project.root / "jobrunner.toml"
    good_settings = settings.read_text()
    tool_file = project.root / "jobs" / "tools" / "count.py"
    with held(project, "tick"):
        # The job file: an unknown key.
        job_file.write_text(good_job + "colour = 'blue'\n")
        ran = project.run("run", "tick")
        assert ran.code == 2 and "tick.toml:" in ran.stderr and "colour: unknown key" in ran.stderr
        job_file.write_text(good_job)
        # jobrunner.toml: a [defaults] value of the wrong type.
        settings.write_text(good_settings + "[defaults]\nmisfire_grace = true\n")
        ran = project.run("run", "tick")
        assert ran.code == 2 and "jobrunner.toml:" in ran.stderr, ran.stderr
        settings.write_text(good_settings)
        # A tool file that no longer defines the job's tool.
        tool_file.write_text(TOOL.replace("def tally", "def tallied"))
        ran = project.run("run", "tick")
        assert ran.code == 2 and "unknown tool 'tally'" in ran.stderr
        tool_file.write_text(TOOL)
        # A new tool file that defines the same tool again: ambiguous.
        project.tool_file("again", TOOL)
        ran = project.run("run", "tick")
        assert ran.code == 2 and "defined twice" in ran.stderr
        (project.root / "jobs" / "tools" / "again.py").unlink()
        # The replay script the job names is gone.
        script = project.root / "jobs" / "tick.replay.json"
        kept = script.read_text()
        script.unlink()
        ran = project.run("run", "tick")
        assert ran.code == 2 and "replay script" in ran.stderr
        script.write_text(kept)
        # Everything as validated again: a plain skip.
        ran = project.run("run", "tick")
        assert ran.code == 0 and ran.stderr == ""
    assert len(skipped(project, "tick")) == 1  # the refused runs wrote nothing


def test_the_environment_and_the_pause_are_checked_on_every_run(project):
    project.job("keyed")  # an Anthropic model: needs a key
    env_file = project.root / "secrets.env"
    env_file.write_text("SOME_TOKEN=abcdef123\n")
    env_file.chmod(0o600)
    settings = project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + 'env_file = "secrets.env"\n')
    replay_job(project, "flaky", "* * * * *", status="failed", pause_after=1)
    assert project.run("run", "flaky").code == 1  # failed once: paused
    with held(project, "keyed"), held(project, "flaky"):
        assert project.run("run", "keyed").code == 0  # validated in full, remembered
        ran = project.run("run", "keyed", env={"ANTHROPIC_API_KEY": ""})
        assert ran.code == 2 and "set ANTHROPIC_API_KEY" in ran.stderr
        env_file.chmod(0o644)
        ran = project.run("run", "keyed")
        assert ran.code == 2 and "env_file: readable by group or others" in ran.stderr
        env_file.chmod(0o600)
        assert project.run("run", "keyed").code == 0
        ran = project.run("run", "flaky")  # remembered by its failed run
        assert ran.code == 75 and "paused since" in ran.stderr
    assert len(skipped(project, "keyed")) == 2
    assert [r["status"] for r in project.runs("flaky")] == ["paused", "failed"]


def test_run_command_lines_the_fast_parser_takes_and_those_it_leaves():
    assert parse(["run", "tick"]) == RunArgs(name="tick")
    assert parse(["--home", "/p", "run", "--trigger", "daemon", "tick",
                  "--slot=2026-11-23T07:00:00Z"]) == RunArgs(
        home="/p", name="tick", trigger="daemon", slot="2026-11-23T07:00:00Z")
    assert parse(["--home=/p", "run", "--due"]) == RunArgs(home="/p", due=True)
    for argv in (["--help"], ["run", "--help"], ["run", "-h"], ["run", "a", "b"],
                 ["run", "tick", "--slot"], ["run", "--bogus", "tick"], ["runs"],
                 ["run", "--due", "--due"], ["--home"], ["run", "--", "tick"], []):
        assert parse(argv) is None, argv


def test_the_typer_application_still_reports_run_usage(project):
    usage = project.run("run", "--bogus")
    assert usage.code == 2 and "No such option" in usage.stderr
    helped = project.run("run", "--help")
    assert helped.code == 0 and "One session now" in helped.stdout
    bare = project.run("run")
    assert bare.code == 2 and "give a job NAME" in bare.stderr
    missing = project.run("run", "nosuch")
    assert missing.code == 2 and "no such job" in missing.stderr
    data = json.loads(project.run("runs", "--json").stdout)
    assert data == []
