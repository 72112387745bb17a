"""Small builders shared by the guard tests: tools that log their calls, what the model
was sent, a job's limits."""

from __future__ import annotations

import json
from pathlib import Path

# Tools write one JSON line per call to calls.log in the project, so a test can tell exactly
# which calls ran (found through the run's context: a timed-out call may write after the run).
TOOLS = '''
import json, time
from pathlib import Path
from jobrunner import ToolResult, tool
from jobrunner.tools.api import current_context

def _log(name, **args):
    with open(Path(current_context().project_root) / "calls.log", "a") as f:
        f.write(json.dumps({"tool": name, **args}) + "\\n")

@tool(risk="low", side_effect=False)
def search(query: str) -> str:
    """Search the index."""
    _log("search", query=query)
    return "Result is unclear"

@tool(risk="low", side_effect=False)
def big_report(day: str) -> str:
    """The day's full report."""
    _log("big_report", day=day)
    return ("line of the report for " + day + ". ") * 400

@tool(risk="low", side_effect=False)
def publish(text: str) -> str:
    """Publish text."""
    _log("publish", text=text)
    return "published"

@tool(risk="low", side_effect=False)
def broken_search(query: str) -> str:
    """Search (the backend is down)."""
    _log("broken_search", query=query)
    raise ConnectionError("Search API is down")

@tool(risk="low", side_effect=False, timeout=1)
def hang(seconds: float) -> str:
    """Wait for a slow backend."""
    _log("hang", seconds=seconds)
    time.sleep(seconds)
    _log("hang_finished", seconds=seconds)
    return "late"

@tool(risk="low", side_effect=False, timeout=300)
def slow(seconds: float) -> str:
    """A slow but patient backend."""
    _log("slow", seconds=seconds)
    time.sleep(seconds)
    _log("slow_finished", seconds=seconds)
    return "late"
'''


# A tool that waits, in the run's working folder, until the test creates `go` (it creates
# `started` first): a run held mid-call for as long as a test needs it.
WAIT_FOR_GO = '''
from pathlib import Path
import time
from jobrunner import tool

@tool(risk="low", side_effect=False, timeout=60)
def wait_for_go() -> str:
    """Wait until told to go."""
    Path("started").touch()
    while not Path("go").exists():
        time.sleep(0.05)
    return "went"
'''


def calls(project) -> list[dict]:
    path = Path(project.root) / "calls.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def tool_results(request) -> list[dict]:
    """The tool_result blocks of the last user message of a recorded request."""
    last = request.body["messages"][-1]
    content = last["content"] if isinstance(last["content"], list) else []
    return [b for b in content if b.get("type") == "tool_result"]


def limits(**values) -> str:
    """A [limits] table for a job file body."""
    return "[limits]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
