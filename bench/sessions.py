"""Scripted agent sessions, run by jobrunner and by the naive loop against one fake server.

The server decides each turn from the conversation it receives: step k of N calls the
bench tool with i=k (distinct arguments, so no loop guard fires), step N-1 rewrites the
memory, step N finishes. Both contenders make exactly N model calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import BenchProject, Timed, timed
from tests.fake_api import FakeMessagesAPI, tool_turn

MODEL = "claude-sonnet-4-6"

TOOLS_FILE = '''
"""Bench tools: a cheap low-risk side effect, and a tool with an 8 KB result."""

from jobrunner import tool
_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima ".split()


@tool(risk="low", side_effect=True, timeout=30)
def tick(i: int) -> str:
    """Record tick number i (a cheap low-risk side effect)."""
    return f"tick {i} recorded"


@tool(risk="low", side_effect=False, timeout=30)
def blob(i: int) -> str:
    """Fetch page i of the report (about 8 KB of text)."""
    words = [_WORDS[(i * 7 + n) % len(_WORDS)] + str(n % 97) for n in range(1200)]
    return " ".join(words)[:8192]
'''

MEMORY_ARGS = {"current_objective": "Bench the loop.", "key_decisions": [],
               "what_not_to_do": [], "open_items": []}
FINISH_ARGS = {"status": "completed", "summary": "Bench done.", "established": ["ran"],
               "assumed": [], "unknown": []}


def scripted(tool_name: str, steps: int):
    """A responder for the fake server: the turn for the step this request is at."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        step = sum(1 for m in body["messages"] if m["role"] == "assistant") + 1
        if step >= steps:
            return tool_turn([("finish", FINISH_ARGS)])
        if step == steps - 1:
            return tool_turn([("update_memory", MEMORY_ARGS)])
        return tool_turn([(tool_name, {"i": step})])

    return respond


def prepare(project: BenchProject, name: str, tool_name: str, steps: int,
            context_tokens: int | None = None) -> None:
    """A job allowed to run `steps` steps (limits raised so only the script ends it)."""
    project.write("jobs/tools/bench.py", TOOLS_FILE)
    context = f"context_tokens = {context_tokens}\n" if context_tokens else ""
    project.job(name, f"""
        [limits]
        max_steps = {steps + 5}
        max_tool_calls = {steps + 5}
        max_seconds = 3600
        max_input_tokens = 100000000
        max_output_tokens = 1000000
        max_cost_usd = 1000
        max_cost_usd_per_day = 100000
        {context}""", tools=[tool_name], model=MODEL)


def run_jobrunner(api: FakeMessagesAPI, project: BenchProject, name: str, tool_name: str,
                  steps: int) -> tuple[Timed, dict]:
    api.reset()
    api.responder = scripted(tool_name, steps)
    result = project.cli("run", name)
    if result.code != 0:
        raise RuntimeError(f"bench: jobrunner run {name} exited {result.code}: {result.stderr}")
    record = project.runs(name)[0]
    if record["steps"] != steps:
        raise RuntimeError(f"bench: expected {steps} steps, the run made {record['steps']}")
    return result, record


def run_naive(api: FakeMessagesAPI, project: BenchProject, tool_name: str,
              steps: int) -> tuple[Timed, dict]:
    api.reset()
    api.responder = scripted(tool_name, steps)
    result = timed([sys.executable, "-m", "bench.naive_loop",
                    str(project.root / "jobs/tools/bench.py"), MODEL],
                   env={**project.env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                   cwd=project.root)
    if result.code != 0:
        raise RuntimeError(f"bench: naive loop exited {result.code}: {result.stderr}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if data["steps"] != steps:
        raise RuntimeError(f"bench: expected {steps} naive steps, got {data['steps']}")
    return result, data
