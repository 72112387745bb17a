"""Helpers shared by the scheduling tests: offline jobs that complete, fail, crash or hang."""

from __future__ import annotations

import json

MEMORY = {"current_objective": "Run on schedule.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}


def turn(*calls: tuple[str, dict]) -> dict:
    blocks = [{"type": "tool_use", "id": f"toolu_{i}_{name}", "name": name, "input": args}
              for i, (name, args) in enumerate(calls)]
    return {"content": blocks, "stop_reason": "tool_use",
            "usage": {"input_tokens": 100, "output_tokens": 20}}


def finish(status: str = "completed") -> tuple[str, dict]:
    return ("finish", {"status": status, "summary": f"ended {status}", "established": [],
                       "assumed": [], "unknown": []})


def replay_job(project, name: str, schedule: str, status: str = "completed",
               before: list[tuple[str, dict]] | None = None, tools: list[str] | None = None,
               body: str = "", **keys) -> None:
    """A job on a replay script: optional tool calls, then memory, then finish(status)."""
    turns = [turn(call) for call in before or []]
    turns += [turn(("update_memory", MEMORY)), turn(finish(status))]
    project.write(f"jobs/{name}.replay.json", json.dumps({"turns": turns}))
    project.job(name, schedule=schedule, model=f"replay:jobs/{name}.replay.json",
                tools=tools or [], body=body, **keys)


SLEEPY_TOOL = '''
import os
import time

from jobrunner import tool
@tool(risk="low", side_effect=False, timeout=600)
def sleepy(seconds: int) -> str:
    """Wait a while."""
    time.sleep(seconds)
    return "rested"


@tool(risk="low", side_effect=False)
def die() -> str:
    """Kill this process, as the OOM killer would."""
    os.kill(os.getpid(), 9)
    return "unreachable"
'''
