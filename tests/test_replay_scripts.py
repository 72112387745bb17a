"""Replay scripts as a job author writes them: `validate` locates each problem in the
script, and a script is answered as a live model would be."""

from __future__ import annotations

import json

MEMORY = {"current_objective": "Keep going.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}


def _turn(*blocks, stop_reason="tool_use"):
    return {"content": list(blocks), "stop_reason": stop_reason}


def _use(name, args, ident):
    return {"type": "tool_use", "id": ident, "name": name, "input": args}


def test_validate_locates_problems_inside_the_replay_script(project):
    project.write("jobs/report.replay.json", '''
        {
          "description": "a script with mistakes",
          "turns": [
            {
              "content": [
                {"type": "text", "text": "Starting."},
                {"type": "tool_use", "id": "t1", "input": {}}
              ],
              "stop_reason": "tool_use"
            },
            {
              "content": [{"type": "image"}],
              "stop_reason": "done",
              "usage": {"input_tokens": -1}
            }
          ]
        }
    ''')
    project.job("report", model="replay:jobs/report.replay.json")
    checked = project.run("validate")
    assert checked.code == 2
    problems = [ln for ln in checked.stderr.splitlines() if "report.replay.json" in ln]
    assert problems == [
        "jobs/report.replay.json:7: turns.0.content.1.name: required key is missing",
        "jobs/report.replay.json:12: turns.1.content.0.type: one of text, tool_use, "
        "thinking, redacted_thinking (got 'image')",
        "jobs/report.replay.json:13: turns.1.stop_reason: Input should be 'end_turn', "
        "'max_tokens', 'stop_sequence', 'tool_use', 'pause_turn', 'refusal' or "
        "'model_context_window_exceeded'",
        "jobs/report.replay.json:14: turns.1.usage.input_tokens: Input should be greater "
        "than or equal to 0",
    ], checked.stderr
    # What validate refuses, run refuses too, before anything is recorded.
    ran = project.run("run", "report")
    assert ran.code == 2 and "report.replay.json:7:" in ran.stderr
    assert project.runs() == []


def test_validate_locates_a_json_syntax_error(project):
    project.write("jobs/report.replay.json", '{\n  "turns": [\n    {"content": [],}\n  ]\n}\n')
    project.job("report", model="replay:jobs/report.replay.json")
    checked = project.run("validate")
    assert checked.code == 2
    assert "jobs/report.replay.json:3: replay script is not JSON" in checked.stderr


def test_a_replayed_finish_without_memory_gets_the_reminder(project):
    script = {"turns": [
        _turn(_use("finish", FINISH, "t1")),  # no update_memory: reminded, as a model is
        _turn(_use("update_memory", MEMORY, "t2"), _use("finish", FINISH, "t3")),
    ]}
    project.write("jobs/report.replay.json", json.dumps(script, indent=1))
    project.job("report", model="replay:jobs/report.replay.json")
    assert project.run("validate").code == 0
    ran = project.run("run", "report")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    events = project.run("show", record["id"], "--json").json()["trace"]
    assert [e["reason"] for e in events if e["event"] == "guard.nudge"] == \
        ["finish_without_memory"]
    assert record["steps"] == 2 and "Keep going." in project.memory("report")
    # A script that ends there has no turn left to answer the reminder with.
    project.write("jobs/short.replay.json", json.dumps({"turns": script["turns"][:1]}))
    project.job("short", model="replay:jobs/short.replay.json")
    stopped = project.run("run", "short")
    assert stopped.code == 1 and "has no turn 2" in stopped.stderr
