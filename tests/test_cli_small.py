"""The small things an operator meets every day: the version, a new project, shell
completion, helpful refusals (a mistyped model, an ambiguous run id, an unknown job),
problems in the order of the file, the command that decides a queued call."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import jobrunner_executable
from tests.fake_api import tool_turn

MEMORY = {"current_objective": "Keep going.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}


def test_version(project):
    from jobrunner import __version__

    shown = project.run("--version")
    assert shown.code == 0 and shown.stdout.strip() == f"jobrunner {__version__}"


def test_init_makes_a_project_that_validates(project, tmp_path):
    target = tmp_path / "fresh" / "agents"
    made = project.run("init", str(target), cwd=tmp_path)
    assert made.code == 0, made.stderr
    assert (target / "jobrunner.toml").is_file()
    assert (target / "jobs").is_dir() and (target / "memory").is_dir()
    assert "jobrunner --home" in made.stdout and "add NAME" in made.stdout
    # The settings it writes are valid as they stand, and a job added to it runs as written.
    state = tmp_path / "fresh-state"
    with open(target / "jobrunner.toml", "a", encoding="utf-8") as handle:
        handle.write(f'state_dir = "{state}"\n')
    assert project.run("--home", str(target), "add", "first").code == 0
    checked = project.run("--home", str(target), "validate")
    assert checked.code == 0, checked.stderr
    # Never over an existing project.
    again = project.run("init", str(target))
    assert again.code == 2 and "already exists" in again.stderr


def test_bash_completion_completes_commands_and_job_names(project):
    project.job("daily-report")
    project.job("daily-digest")
    script = project.run("completion", "bash")
    assert script.code == 0, script.stderr
    program = (
        f'{script.stdout}\n'
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); '
        '_jobrunner_completion jobrunner; printf "%s\\n" "${COMPREPLY[@]}"; }\n'
        'echo "--commands"; complete_words jobrunner ru\n'
        'echo "--jobs"; complete_words jobrunner run daily-r\n'
    )
    # The script runs `jobrunner` from PATH, as a shell does.
    path = f"{Path(jobrunner_executable()).parent}:{project.env.get('PATH', '/usr/bin:/bin')}"
    done = subprocess.run(["bash", "--norc", "-c", program], cwd=project.root,
                          env={**project.env, "PATH": path}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    commands, jobs = done.stdout.split("--jobs")
    assert commands.split()[1:] == ["run", "runs"]
    assert jobs.split() == ["daily-report"]


def test_zsh_completion_answers_its_protocol(project):
    project.job("daily-report")
    script = project.run("completion", "zsh")
    assert script.code == 0 and "compdef _jobrunner_completion jobrunner" in script.stdout
    assert "_JOBRUNNER_COMPLETE=complete_zsh" in script.stdout
    # What the script's function evaluates: zsh's `_arguments` with the candidates.
    answer = project.run(env={"_JOBRUNNER_COMPLETE": "complete_zsh",
                              "_TYPER_COMPLETE_ARGS": "jobrunner next da"})
    assert answer.code == 0 and '"daily-report"' in answer.stdout
    assert project.run("completion", "fish").code == 2


def test_mistyped_model_gets_a_suggestion(project):
    project.job("report", model="claude-sonet-4-6")
    checked = project.run("validate")
    assert checked.code == 2
    assert "jobs/report.toml:3: model: unknown model 'claude-sonet-4-6' (did you mean " \
           "'claude-sonnet-4-6'?)" in checked.stderr


def test_problems_come_in_line_order(project):
    project.write("jobs/report.toml", '''
        prompt = "x"
        zzz = 1
        [limits]
        max_step = 3
        [lock]
        stale_after = "soon"
    ''')
    checked = project.run("validate")
    assert checked.code == 2
    lines = [ln.split(":")[1] for ln in checked.stderr.splitlines() if "report.toml" in ln]
    assert lines == sorted(lines, key=int) and len(lines) == 4, checked.stderr


def test_misspelt_array_of_tables_is_located_at_its_header(project):
    project.write("jobrunner.toml", f'''
        state_dir = "{project.state}"

        [alerts]
        cooldown = "1h"

        [[alerts.channel]]
        type = "log"
    ''')
    project.job("report")
    checked = project.run("validate")
    assert checked.code == 2
    assert "jobrunner.toml:6: alerts.channel: unknown key (did you mean 'channels'?)" \
        in checked.stderr


def _two_runs(project, fake_api) -> list[dict]:
    project.job("report")
    for _ in range(2):
        fake_api.enqueue(tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
        assert project.run("run", "report").code == 0
    return project.runs()


def test_ambiguous_run_prefix_names_the_matches(project, fake_api):
    runs = _two_runs(project, fake_api)
    prefix = runs[0]["id"][:4]  # the year: both runs have it
    for command in ("show", "replay"):
        shown = project.run(command, prefix)
        assert shown.code == 2, shown.stderr
        assert "ambiguous" in shown.stderr
        assert all(r["id"] in shown.stderr for r in runs)
    assert project.run("show", runs[0]["id"]).code == 0
    missing = project.run("show", "19990101")
    assert missing.code == 2 and "no run '19990101'" in missing.stderr


def test_runs_of_an_unknown_job_is_an_error(project, fake_api):
    _two_runs(project, fake_api)
    for args in (("runs", "reprot"), ("runs", "reprot", "--json")):
        listed = project.run(*args)
        assert listed.code == 2 and "no such job (jobs: report)" in listed.stderr
    # A job whose file is gone keeps its history.
    (project.root / "jobs/report.toml").unlink()
    kept = project.run("runs", "report", "--json")
    assert kept.code == 0 and len(kept.json()) == 2


def test_list_json_with_a_broken_job_exits_2_like_list(project):
    project.job("good")
    project.write("jobs/broken.toml", 'schedule = "0 8 * * *"\n')
    for args in (("list",), ("list", "--json")):
        listed = project.run(*args)
        assert listed.code == 2, (args, listed.stdout)
    assert project.run("list", "--json").json()["jobs"][0]["name"] == "good"


def test_a_queued_call_report_says_how_to_approve_it(project, fake_api):
    project.tool_file("billing", '''
        from jobrunner import tool

        @tool
        def refund(customer: str, amount: float) -> dict:
            """Refund a customer."""
            return {"refunded": amount}
    ''')
    project.job("refunds", tools=["refund"])
    fake_api.enqueue(tool_turn([("refund", {"customer": "c-1", "amount": 5})]),
                     tool_turn([("update_memory", MEMORY), ("finish", FINISH)]))
    ran = project.run("run", "refunds")
    assert ran.code == 4
    [approval] = project.run("approvals", "--json").json()
    assert f"jobrunner approve {approval['id']}" in ran.stderr
    assert f"jobrunner reject {approval['id']}" in ran.stderr


def test_every_command_is_in_the_readme_table_and_in_help(project):
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Commands\n", 1)[1].split("\n### ", 1)[0]
    documented = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split(" | ")[0]
            for fragment in re.findall(r"`([^`]+)`", first_cell):
                documented.add(fragment.removeprefix("jobrunner ").split()[0])
    shown = project.run("--help").stdout
    commands = shown.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert listed <= documented, listed - documented
    for command in ("test", "status", "doctor", "logs", "init", "completion", "--version"):
        assert command in documented and (command in listed or command in shown), command
    for command in listed:
        assert project.run(command, "--help").code == 0, command
