"""Tool files load one by one: a broken one is a located error for itself and for the
jobs that need its tools, never for the others."""

from __future__ import annotations

import json

from tests.fake_api import tool_turn
from tests.turns import ending

GOOD_TOOL = '''
from jobrunner import tool

@tool(risk="low")
def count(day: str) -> str:
    """Count the day's signups."""
    return f"{day}: 147"
'''

# Line 2 fails; `ingest` is what it would have defined.
BROKEN_TOOL = '''
from jobrunner import tool
LIMIT = undefined_name + 1

@tool(risk="low")
def ingest(day: str) -> str:
    """Ingest the day's files."""
    return "ingested"
'''


def good_run_turns():
    return [tool_turn([("count", {"day": "2026-11-20"})]), *ending()]


def two_jobs(project, broken_source: str, broken_name: str = "broken") -> None:
    project.tool_file("counting", GOOD_TOOL)
    project.tool_file(broken_name, broken_source)
    project.job("good", tools=["count"])
    project.job("needy", tools=["count", "ingest"])


def test_a_broken_tool_file_stops_only_the_jobs_that_need_it(project, fake_api):
    two_jobs(project, BROKEN_TOOL)
    assert project.run("validate", "good").code == 0

    fake_api.enqueue(*good_run_turns())
    ran = project.run("run", "good")
    assert ran.code == 0, ran.stderr
    assert [r["status"] for r in project.runs("good")] == ["completed"]

    needy = project.run("run", "needy")
    assert needy.code == 2
    assert ("jobs/needy.toml:4: tools: unknown tool 'ingest' — jobs/tools/broken.py failed "
            "to import: jobs/tools/broken.py:2: NameError: name 'undefined_name' is not "
            "defined") in needy.stderr
    assert project.runs("needy") == []  # nothing written

    everything = project.run("validate")
    assert everything.code == 2
    assert "ok  good: next run" in everything.stdout
    assert ("jobs/tools/broken.py:2: import failed: NameError: name 'undefined_name' is not "
            "defined") in everything.stderr
    assert "jobs/needy.toml:4: tools: unknown tool 'ingest'" in everything.stderr


def test_a_tool_file_that_does_not_parse_names_itself_for_every_unknown_tool(project):
    two_jobs(project, "from jobrunner import tool\ndef ingest(:\n")
    assert project.run("validate", "good").code == 0
    needy = project.run("validate", "needy")
    assert needy.code == 2
    assert ("jobs/needy.toml:4: tools: unknown tool 'ingest' (jobs/tools/broken.py failed to "
            "import and may define it: jobs/tools/broken.py:2: SyntaxError"
            ) in needy.stderr


def test_a_tool_file_that_exits_at_import_is_a_located_error(project, fake_api):
    two_jobs(project, '''
        import sys
        sys.exit(0)

        from jobrunner import tool

        @tool(risk="low")
        def ingest(day: str) -> str:
            """Ingest."""
            return "ingested"
    ''', broken_name="quits")
    for command in (["validate"], ["list"], ["run", "--due"]):
        result = project.run(*command)
        assert result.code == 2, (command, result.stdout, result.stderr)
        assert "jobs/tools/quits.py:2: import failed: SystemExit: 0" in result.stderr, command
    needy = project.run("run", "needy")
    assert needy.code == 2
    assert "unknown tool 'ingest' — jobs/tools/quits.py failed to import" in needy.stderr
    checked = project.run("check", "--json")
    assert checked.code == 1
    assert any("quits.py:2: import failed: SystemExit" in f["message"]
               for f in checked.json()["findings"])
    assert project.runs() == []


def test_a_tool_file_that_hangs_at_import_does_not_hang_the_run(project, fake_api):
    settings = (project.root / "jobrunner.toml").read_text()
    (project.root / "jobrunner.toml").write_text(settings + 'tool_import_timeout = "1s"\n')
    two_jobs(project, '''
        import time
        time.sleep(3600)
    ''', broken_name="sleepy")
    fake_api.enqueue(*good_run_turns())
    ran = project.run("run", "good", timeout=60)
    assert ran.code == 0, ran.stderr
    validated = project.run("validate", timeout=60)
    assert validated.code == 2
    assert ("jobs/tools/sleepy.py:2: import failed: did not finish within 1s "
            "(tool_import_timeout)") in validated.stderr


def test_output_of_a_tool_file_at_import_does_not_break_json(project):
    project.tool_file("counting", 'print("loading the counting tools")\n' + GOOD_TOOL)
    project.job("good", tools=["count"])
    listed = project.run("list", "--json")
    assert listed.code == 0, listed.stderr
    assert [j["name"] for j in listed.json()["jobs"]] == ["good"]
    assert "loading the counting tools" in listed.stderr
    validated = project.run("validate", "--json")
    assert validated.code == 0 and json.loads(validated.stdout)["problems"] == []
