"""Helpers shared by the scheduling tests: offline jobs that complete, fail, crash or hang."""

from __future__ import annotations

import json

from tests.turns import finish, replay_turn, update_memory


def replay_job(project, name: str, schedule: str, status: str = "completed",
               before: list[tuple[str, dict]] | None = None, tools: list[str] | None = None,
               body: str = "", **keys) -> None:
    """A job on a replay script: optional tool calls, then memory, then finish(status)."""
    turns = [replay_turn(call) for call in before or []]
    turns += [replay_turn(update_memory()), replay_turn(finish(status, f"ended {status}"))]
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
