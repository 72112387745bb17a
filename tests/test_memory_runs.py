"""Memory through real runs: budget, conflicts, the failure log, shared agents."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import wait_for
from tests.fake_api import tool_turn
from tests.session_helpers import tool_results
from tests.turns import finish, update_memory

HOLD_TOOL = '''
    import pathlib
    import time
    from jobrunner import tool
    @tool(risk="low", side_effect=False, timeout=60)
    def hold(marker: str) -> str:
        """Signal that the session is under way, then wait until the test says go."""
        folder = pathlib.Path(marker)
        (folder / "started").write_text("1")
        for _ in range(1200):
            if (folder / "go").exists():
                return "released"
            time.sleep(0.05)
        return "timed out waiting"
'''


def update(objective="Keep it short.", decisions=(), dont=()):
    """An `update_memory` call with these sections (and no open items)."""
    return update_memory(current_objective=objective, key_decisions=list(decisions),
                         what_not_to_do=list(dont))


def test_a_memory_that_is_not_text_stops_the_run_before_any_model_call(project, fake_api):
    project.job("bin")
    path = project.root / "memory/bin/MEMORY.md"
    path.parent.mkdir(parents=True)
    garbage = b"# Memory\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    path.write_bytes(garbage)
    ran = project.run("run", "bin")
    assert ran.code == 1
    assert "memory: not a text file" in ran.stderr
    assert fake_api.message_requests == []
    assert path.read_bytes() == garbage  # untouched
    assert not (path.parent / "history").exists()
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "memory_unreadable"
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]


def test_an_over_budget_rewrite_is_sent_back_until_compact(project, fake_api):
    project.job("tight", "[memory]\nbudget_tokens = 120\n")
    long_items = [f"Decision number {i} with a long explanation of why it matters."
                  for i in range(12)]
    fake_api.enqueue(
        tool_turn([update(decisions=long_items)]),
        tool_turn([update(decisions=long_items[:8])]),
        tool_turn([update(decisions=["Keep numbers only."])]),
        tool_turn([finish()]),
    )
    ran = project.run("run", "tight")
    assert ran.code == 0, ran.stderr
    requests = fake_api.message_requests
    for answered in requests[1:3]:
        [result] = tool_results(answered)
        assert result["is_error"] is True
        assert "over the budget of 120" in result["content"]
        assert "Send a compact version" in result["content"]
    [saved] = tool_results(requests[3])
    assert "Memory saved" in saved["content"]
    memory = project.memory("tight")
    assert "- Keep numbers only." in memory and "Decision number" not in memory


def test_the_compaction_loop_is_bounded_and_keeps_the_old_memory(project, fake_api):
    project.job("stubborn", "[memory]\nbudget_tokens = 60\n")
    path = project.root / "memory/stubborn/MEMORY.md"
    path.parent.mkdir(parents=True)
    path.write_text("# Memory: stubborn\n\n## Current objective\n\nOld.\n")
    before = path.read_bytes()
    fake_api.enqueue(*[tool_turn([update(decisions=[f"attempt {i} " + "x" * 400])])
                       for i in range(3)],
                     tool_turn([finish()]))
    ran = project.run("run", "stubborn")
    assert ran.code == 0, ran.stderr
    requests = fake_api.message_requests
    assert len(requests) == 4  # three refusals, then finish is accepted at once
    [last] = tool_results(requests[3])
    assert "still over budget" in last["content"] and "Call finish now" in last["content"]
    assert path.read_bytes() == before
    [record] = project.runs()
    assert record["status"] == "completed"


def test_a_person_editing_during_the_session_wins_and_the_agent_proposal_is_kept(
        project, fake_api, tmp_path):
    project.tool_file("hold", HOLD_TOOL)
    project.job("edited", tools=["hold"])
    marker = tmp_path / "marker"
    marker.mkdir()
    fake_api.enqueue(tool_turn([("hold", {"marker": str(marker)})]),
                     tool_turn([update("The agent's objective.")]), tool_turn([finish()]))
    path = project.root / "memory/edited/MEMORY.md"
    path.parent.mkdir(parents=True)
    path.write_text("# Memory: edited\n\n## Current objective\n\nOriginal.\n")
    run = project.popen("run", "edited")
    wait_for(lambda: (marker / "started").exists(), what="the session to start")
    person = "# Memory: edited\n\n## Current objective\n\nThe person's objective.\n"
    path.write_text(person)
    (marker / "go").write_text("1")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert path.read_text() == person
    [proposal] = (path.parent / "history").glob("*-proposal.md")
    assert "The agent's objective." in proposal.read_text()
    [alert] = project.alerts()
    assert alert["event"] == "memory.conflict" and alert["job"] == "edited"
    assert proposal.name in alert["message"]
    listed = project.run("memory", "history", "edited", "--json").json()
    assert [(v["kind"], v["version"]) for v in listed] == [("proposal", proposal.stem)]


def test_an_aborted_run_gets_a_failure_line_and_old_lines_make_room(project, fake_api):
    project.tool_file("ops", '''
        from jobrunner import ToolResult, tool

        @tool(risk="low", side_effect=False)
        def check(day: str) -> str:
            """Check a day."""
            return "fine"

        @tool(risk="low", side_effect=False)
        def fetch(day: str) -> ToolResult:
            """Fetch a day."""
            return ToolResult(ok=False, error="upstream answered 503")

        @tool(risk="low", side_effect=False)
        def publish(text: str) -> str:
            """Publish."""
            return "published"
    ''')
    project.job("flaky", "[memory]\nbudget_tokens = 150\n", tools=["check", "fetch", "publish"])
    path = project.root / "memory/flaky/MEMORY.md"
    path.parent.mkdir(parents=True)
    old_lines = "".join(f"- 2026-10-{d:02d} run old{d} aborted (tool_failed) at step 1: "
                        "tool fetch failed: timeout\n" for d in range(1, 6))
    path.write_text("# Memory: flaky\n\n## What NOT to do (failure log)\n\n"
                    "- Never publish without numbers.\n" + old_lines + "\n## Open items\n")
    fake_api.enqueue(tool_turn([("check", {"day": "2026-11-20"})]),
                     tool_turn([("fetch", {"day": "2026-11-20"}),
                                ("publish", {"text": "made up"})]))
    ran = project.run("run", "flaky")
    assert ran.code == 1
    [record] = project.runs()
    memory = project.memory("flaky")
    day = record["started_at"][:10]
    line = (f"- {day} run {record['id']} aborted (tool_failed) at step 2: tool fetch failed: "
            "upstream answered 503; not done: publish")
    assert line in memory
    assert "- Never publish without numbers." in memory  # a person's line is never dropped
    assert "run old1 " not in memory and "run old5 " in memory  # oldest dropped first
    assert len(memory) <= 150 * 4
    assert memory.endswith("## Open items\n")
    [previous] = (path.parent / "history").glob(f"*-{record['id']}.md")
    assert "run old1 " in previous.read_text()


def test_two_jobs_of_one_agent_take_turns_with_its_memory(project, fake_api, tmp_path):
    project.tool_file("hold", HOLD_TOOL)
    marker = tmp_path / "marker"
    marker.mkdir()
    project.job("first", tools=["hold"], agent="team")
    project.job("second", agent="team")

    def responder(body):
        system = json.dumps(body["system"])
        job = re.search(r"Job: (\w+)", system).group(1)
        seen = sorted(set(re.findall(r"decision from \w+", system)))
        step = len(body["messages"])
        if job == "first" and step == 1:
            return tool_turn([("hold", {"marker": str(marker)})])
        if step <= 3 and not any("Memory saved" in json.dumps(m) for m in body["messages"]):
            return tool_turn([update(f"Shared by {job}.", [*seen, f"decision from {job}"])])
        return tool_turn([finish()])

    fake_api.responder = responder
    first = project.popen("run", "first")
    wait_for(lambda: (marker / "started").exists(), what="the first session to start")
    second = project.popen("run", "second")
    traces = project.state / "traces"
    wait_for(lambda: any("memory.waiting" in p.read_text() for p in traces.glob("*.jsonl")),
             what="the second job to wait for the agent's memory")
    assert not any("Job: second" in json.dumps(r.body) for r in fake_api.message_requests)
    (marker / "go").write_text("1")
    for proc in (first, second):
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    memory = project.memory("team")
    assert "- decision from first" in memory and "- decision from second" in memory
    assert "Shared by second." in memory
    assert project.alerts() == []  # taking turns is not a conflict
    assert sorted(r["status"] for r in project.runs()) == ["completed", "completed"]
    assert not Path(project.root / "memory/first").exists()


def test_a_run_killed_mid_session_is_in_the_failure_log_of_the_next(project, fake_api, tmp_path):
    import signal

    project.tool_file("hold", HOLD_TOOL)
    project.job("fragile", tools=["hold"])
    marker = tmp_path / "marker"
    marker.mkdir()
    fake_api.enqueue(tool_turn([("hold", {"marker": str(marker)})]))
    doomed = project.popen("run", "fragile")
    wait_for(lambda: (marker / "started").exists(), what="the session to start")
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=30)
    [dead] = project.runs()
    fake_api.enqueue(tool_turn([update("Carry on.", dont=["Check the feed first."])]),
                     tool_turn([finish()]))
    ran = project.run("run", "fragile")
    assert ran.code == 0, ran.stderr
    memory = project.memory("fragile")
    assert f"run {dead['id']} crashed: the process (pid {doomed.pid} " in memory
    assert "- Check the feed first." in memory  # the agent's own rewrite went on top
    # the crash is alerted once; the completion after it is a recovery
    assert [a["event"] for a in project.alerts()] == ["run.crashed", "run.recovered"]


def test_history_keeps_as_many_versions_as_the_job_says(project, fake_api):
    project.job("brief", "[memory]\nhistory = 3\n")
    objectives = [f"Brief the team, version {n}." for n in range(6)]
    for objective in objectives:
        fake_api.enqueue(tool_turn([update(objective)]), tool_turn([finish()]))
        ran = project.run("run", "brief")
        assert ran.code == 0, ran.stderr
    versions = project.run("memory", "history", "brief", "--json").json()
    assert len(versions) == 3
    kept = [(project.root / "memory/brief/history" / f"{v['version']}.md").read_text()
            for v in reversed(versions)]  # oldest first
    # The three versions before the current one, oldest dropped first.
    assert [objectives.index(next(o for o in objectives if o in text)) for text in kept] == \
        [2, 3, 4]
    assert objectives[5] in project.memory("brief")


def test_a_persons_long_section_does_not_lock_the_agent_out_of_its_memory(project, fake_api):
    """A runbook a person pasted into MEMORY.md is over the whole budget on its own. The
    agent cannot shorten it (it is not one of its four sections), so the budget it is held
    to leaves it a quarter of the budget for its own sections; the runbook stays whole."""
    project.job("ops", "[memory]\nbudget_tokens = 200\n")
    path = project.root / "memory/ops/MEMORY.md"
    path.parent.mkdir(parents=True)
    runbook = "".join(f"- Step {i}: check the queue depth and page on-call if over 1000.\n"
                      for i in range(20))
    path.write_text("# Memory: ops\n\n## Current objective\n\nOld.\n\n"
                    f"## Runbook\n\n{runbook}\n## Key decisions made\n\n"
                    "## What NOT to do (failure log)\n\n## Open items\n")
    shown = project.run("memory", "show", "ops")
    assert "it is mostly outside the agent's four sections" in shown.stdout
    assert "the agent's sections get 50 tokens" in shown.stdout
    fake_api.enqueue(
        tool_turn([update("Watch the queue.", decisions=["x" * 400])]),  # too long even so
        tool_turn([update("Watch the queue.", decisions=["Page at 1000."])]),
        tool_turn([finish()]),
    )
    ran = project.run("run", "ops")
    assert ran.code == 0, ran.stderr
    [refused] = tool_results(fake_api.message_requests[1])
    assert refused["is_error"] is True
    assert "the parts of the file you cannot change take" in refused["content"]
    assert "yours must fit in 50" in refused["content"]
    [saved] = tool_results(fake_api.message_requests[2])
    assert "Memory saved" in saved["content"]
    memory = project.memory("ops")
    assert "Watch the queue." in memory and "- Page at 1000." in memory
    assert runbook in memory  # a person's section is never cut


def test_a_shared_agent_keeps_the_largest_history_of_its_jobs(project, fake_api):
    project.job("hourly", "[memory]\nhistory = 2\n", agent="desk")
    project.job("daily", "[memory]\nhistory = 4\n", agent="desk")
    for n in range(6):
        fake_api.enqueue(tool_turn([update(f"Desk work, version {n}.")]), tool_turn([finish()]))
        assert project.run("run", "hourly").code == 0
    assert len(project.run("memory", "history", "desk", "--json").json()) == 4
