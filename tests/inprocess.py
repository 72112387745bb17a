"""Runs in this process: the real runner, session, guards, tools and state, with the model a
scripted client object passed in (the `models.ModelClient` interface, as a replay is).

The fast layer of the suite. What it cannot show stays with the subprocess tests: the
installed command, the real SDK over HTTP (tests/fake_api.py), processes that die or are
killed, locks held by other processes.

    def test_x(inproc):
        inproc.tool_file("ops", TOOLS)
        inproc.job("job", tools=["search"])
        model = ScriptedClient(tool_turn([("search", {"query": "a"})]), *ending())
        ran = inproc.run_job("job", model)
        assert ran.code == 0 and model.message_requests[1].body["messages"] ...
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobrunner.models import ModelError, ModelRequest, ModelTurn
from jobrunner.models.pricing import Usage
from tests.conftest import TEST_KEY, Project
from tests.fake_api import AUTO_TOOL_ID_PREFIX, estimate_input_tokens, estimate_output_tokens

Item = dict[str, Any]


@dataclass
class Sent:
    """One request as the client got it: `body` is what the SDK would send as JSON."""

    body: dict[str, Any]


class ScriptedClient:
    """A model client answering each request with the next scripted turn (the items of
    tests/fake_api.py: `tool_turn`, `text_turn`, or a `ModelError`), then asking
    `responder(body)` once they run out. Keeps every request in `message_requests`.

    Usage is counted as the fake API counts it (about four characters a token; a turn's
    own `usage` wins), without its prompt cache: a test about caching uses the fake API.
    """

    def __init__(self, *turns: Item | ModelError,
                 responder: Callable[[dict[str, Any]], Item | ModelError] | None = None) -> None:
        self.turns: deque[Item | ModelError] = deque(turns)
        self.responder = responder
        self.message_requests: list[Sent] = []
        self._served_ids: set[str] = set()
        self._lock = threading.Lock()  # calls run in the session's worker threads

    def prepare(self) -> None:
        """Nothing to load."""

    def request(self, request: ModelRequest) -> ModelTurn | ModelError:
        # Serialised as the SDK would: later changes to the session's lists are not seen.
        body = json.loads(json.dumps({
            "model": request.model, "max_tokens": request.max_tokens,
            "system": request.system, "messages": request.messages, "tools": request.tools}))
        with self._lock:
            self.message_requests.append(Sent(body))
            item = self.turns.popleft() if self.turns else None
        if item is None:
            if self.responder is None:
                return ModelError("script_exhausted", "the scripted model has no turn "
                                  f"{len(self.message_requests)}", retryable=False)
            item = self.responder(body)
        if isinstance(item, ModelError):
            return item
        if item.get("kind") != "message":
            raise ValueError(f"a scripted turn is a message or a ModelError, not {item!r}")
        return self._turn(body, item, len(self.message_requests))

    def _turn(self, body: dict[str, Any], item: Item, number: int) -> ModelTurn:
        content = copy.deepcopy(item["content"])
        with self._lock:
            for block in content:
                # A turn served twice gets fresh ids, as the fake API (and the real one) does.
                if block.get("type") == "tool_use" and block.get("id") in self._served_ids \
                        and block["id"].startswith(AUTO_TOOL_ID_PREFIX):
                    block["id"] = AUTO_TOOL_ID_PREFIX + uuid.uuid4().hex[:20]
                if block.get("type") == "tool_use":
                    self._served_ids.add(block["id"])
        counts = {"input_tokens": estimate_input_tokens(body),
                  "output_tokens": estimate_output_tokens(content)}
        counts.update({k: int(v) for k, v in (item.get("usage") or {}).items()})
        return ModelTurn(content=content, stop_reason=item["stop_reason"],
                         usage=Usage(**counts), request_id=f"scripted-{number}",
                         model=body["model"])


@dataclass
class Ran:
    """A run as `jobrunner run` ends it: its exit code and the report it would print."""

    code: int
    report: str
    run_id: str


@dataclass
class Ended:
    """A session run on its own: how it ended, its report and exit code as a run's."""

    ending: Any  # run.outcome.Ending
    report: str
    code: int
    run_id: str


class InProcessProject(Project):
    """A temporary project run in this process. `run` still drives the installed command
    (for a listing, say); `run_job` and `session` run in-process."""

    def _project(self) -> Any:
        from jobrunner.config.project import Project as Jobrunner

        # A new one each time, as each command builds its own (settings are re-read).
        return Jobrunner(self.root)

    def run_job(self, name: str, client: ScriptedClient, now: datetime | None = None) -> Ran:
        """`run_job`, the runner's one function, with the model `client`."""
        from jobrunner.run.runner import run_job

        outcome = run_job(self._project(), name, now=now, client=client)
        return Ran(outcome.exit_code, outcome.report, outcome.run_id)

    def session(self, name: str, client: ScriptedClient, started_monotonic: float | None = None,
                now: datetime | None = None) -> Ended:
        """The session alone, with its clocks injected: `started_monotonic` sets where the
        run's `max_seconds` count from, `now` the run's wall-clock time."""
        from jobrunner.clock import utcnow
        from jobrunner.config.jobs import load_job
        from jobrunner.memory import format as mem
        from jobrunner.models.pricing import REPLAY_PRICE
        from jobrunner.run.report import report_for
        from jobrunner.run.runner import new_run_id
        from jobrunner.run.session import Session
        from jobrunner.state.traces import Trace
        from jobrunner.tools.api import ToolContext, set_context
        from jobrunner.tools.registry import job_tools

        project = self._project()
        job = load_job(project, name)
        store = project.store()
        now = now or utcnow()
        run_id = new_run_id(now)
        memory, _ = mem.load(mem.memory_path(project.memory_dir, job.agent))
        trace = Trace(store, run_id)
        set_context(ToolContext(project.root, job.name, run_id, job.agent, project.settings,
                                policy=dict(job.spec.tool)))
        session = Session(
            job=job, run_id=run_id, client=client, tools=job_tools(project, job),
            memory=memory, price=project.settings.prices().get(job.spec.model, REPLAY_PRICE),
            trace=trace, redactor=store.redactor, now=now,
            started_monotonic=time.monotonic() if started_monotonic is None
            else started_monotonic)
        with contextlib.chdir(project.root):
            ending = session.run()
        trace.close()
        return Ended(ending, report_for(job, run_id, ending, store.redactor),
                     ending.exit_code(), run_id)

    def runs(self, job: str | None = None) -> list[dict]:
        """As `jobrunner runs --json` lists them, newest first."""
        return self.recorded_runs(job)

    def trace(self, run_id: str) -> list[dict]:
        """As `jobrunner show RUN --json` gives the trace."""
        return self._project().store().trace_read(run_id)

    def close(self) -> None:
        self._project().store().close()


@contextlib.contextmanager
def in_process_project(tmp_path: Path) -> Any:
    """An empty project whose in-process runs have a test key and nothing else: the
    environment is put back afterwards (a job's env_file is loaded into it)."""
    root = tmp_path / "proj"
    (root / "jobs").mkdir(parents=True)
    state = tmp_path / "state"
    (root / "jobrunner.toml").write_text(f'state_dir = "{state}"\n', encoding="utf-8")
    saved = dict(os.environ)
    os.environ["ANTHROPIC_API_KEY"] = TEST_KEY
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    # A command it starts has the key but no server: nothing can reach a real API.
    env.update({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "PYTHONDONTWRITEBYTECODE": "1"})
    project = InProcessProject(root=root, state=state, env=env)
    try:
        yield project
    finally:
        project.close()
        os.environ.clear()
        os.environ.update(saved)
