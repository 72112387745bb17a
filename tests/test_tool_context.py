"""Tools run in the project folder wherever jobrunner starts, and `current_context()`
says what it is for when called outside a tool call."""

from __future__ import annotations

import json

from tests.fake_api import tool_turn
from tests.turns import finish, update_memory


def test_tools_run_in_the_project_folder_wherever_jobrunner_starts(project, fake_api, tmp_path):
    project.write("data/signups.csv", "day,count\n2026-11-20,147\n")
    project.tool_file("sheet", '''
        from jobrunner import tool

        @tool(risk="low")
        def sheet() -> str:
            """The signup sheet."""
            with open("data/signups.csv") as handle:
                return handle.read()

        @tool
        def archive(name: str) -> str:
            """Archive the sheet under a name."""
            with open(f"data/{name}.archived", "w") as handle:
                handle.write(open("data/signups.csv").read())
            return "archived"
    ''')
    project.job("sheet", tools=["sheet", "archive"])
    fake_api.enqueue(tool_turn([("sheet", {})]),
                     tool_turn([("archive", {"name": "november"})]),
                     tool_turn([update_memory(), finish()]))
    elsewhere = tmp_path / "elsewhere"  # as cron does: `cd /` and --home
    elsewhere.mkdir()
    home = str(project.root)
    ran = project.run("--home", home, "run", "sheet", cwd=elsewhere)
    assert ran.code == 4, ran.stderr  # the high-risk archive waits for approval
    told = json.dumps(fake_api.message_requests[1].body["messages"][-1])
    assert "2026-11-20,147" in told

    [approval] = project.run("--home", home, "approvals", "--json", cwd=elsewhere).json()
    approved = project.run("--home", home, "approve", approval["id"], cwd=elsewhere)
    assert approved.code == 0, approved.stderr
    assert "executed: ok" in approved.stdout
    assert (project.root / "data/november.archived").read_text().startswith("day,count")
    assert not (elsewhere / "data").exists()


def test_current_context_outside_a_run_says_what_it_is_for(project):
    project.tool_file("early", '''
        from jobrunner.tools.api import current_context

        ROOT = current_context().project_root
    ''')
    project.job("any")
    validated = project.run("validate")
    assert validated.code == 2
    assert "jobs/tools/early.py:3: import failed: " in validated.stderr
    assert "current_context() is only available while jobrunner calls a tool" in \
        validated.stderr
