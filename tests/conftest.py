"""Shared fixtures: every test gets its own project and state dir. `project` drives the
installed CLI, its model the real anthropic SDK talking HTTP to a local fake Messages API;
`inproc` runs the runner in this process with a scripted model (tests/inprocess.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_api import FakeMessagesAPI

# The real PostgreSQL server fixtures (`pg_server`, `pg_url`).
pytest_plugins = ["tests.pg_server"]

REPO = Path(__file__).resolve().parent.parent
TEST_KEY = "sk-ant-test-0123456789abcdef"  # a fake key: tests check it never leaks


def wait_for(condition, timeout: float = 60.0, *, what: str, interval: float = 0.05):
    """Poll until `condition()` is truthy and return its value; fail the test at the
    timeout, naming what it waited for. The one way a test waits for something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@contextmanager
def reaped(proc: subprocess.Popen):
    """A child process that must not outlive the test: killed if still running at the end
    of the block, its pipes closed."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


class Lines:
    """A child's text stream read line by line in a thread of its own, so that a test
    waiting for a line is bounded by its timeout even if the child goes silent (and
    fails at once if the stream ends)."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self.arrived: list[float] = []  # time.monotonic() as each line came
        self._next = 0
        self._ended = False
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        try:
            for line in stream:
                with self._lock:
                    self.arrived.append(time.monotonic())
                    self.seen.append(line)
        except ValueError:  # the test closed the pipe (see `reaped`): the end, as EOF is
            pass
        finally:
            with self._lock:
                self._ended = True

    def _take(self) -> tuple[float, str] | None:
        with self._lock:
            if self._next < len(self.seen):
                self._next += 1
                return self.arrived[self._next - 1], self.seen[self._next - 1]
            if self._ended:
                raise AssertionError(f"the output ended after: {''.join(self.seen)}")
        return None

    def next(self, timeout: float, *, what: str) -> str:
        """The next line; fails the test if none comes within `timeout` seconds."""
        return self.next_timed(timeout, what=what)[1]

    def next_timed(self, timeout: float, *, what: str) -> tuple[float, str]:
        """The next line and when it came (a `time.monotonic()` value). A timeout's
        failure shows the last lines that did come."""
        try:
            return wait_for(self._take, max(timeout, 0.0), what=what, interval=0.02)
        except AssertionError as exc:
            with self._lock:
                said = "".join(self.seen[-40:])
            raise AssertionError(f"{exc}; the last lines seen:\n{said}") from None

    def until(self, text: str, timeout: float = 30.0) -> str:
        """Skip lines until one holds `text`, and return it."""
        deadline = time.monotonic() + timeout
        while text not in (line := self.next(deadline - time.monotonic(),
                                             what=f"{text!r} in: {self.text()}")):
            pass
        return line

    def text(self) -> str:
        with self._lock:
            return "".join(self.seen)


def jobrunner_executable() -> str:
    """The installed console script next to this interpreter (fallback: PATH)."""
    candidate = Path(sys.executable).parent / "jobrunner"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("jobrunner")
    if not found:
        raise RuntimeError("the jobrunner console script is not installed (pip install -e .)")
    return found


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@dataclass
class Project:
    """A temporary jobrunner project driven through the real CLI."""

    root: Path
    state: Path
    env: dict[str, str]

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def job(self, name: str, body: str = "", **keys) -> Path:
        """Write jobs/NAME.toml: sensible minimal keys, overridden by `keys`, then `body`."""
        values = {"schedule": "0 8 * * *", "timezone": "UTC", "model": "claude-sonnet-4-6",
                  "tools": [], "prompt": "Do the task."}
        values.update(keys)
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        return self.write(f"jobs/{name}.toml", "\n".join(lines) + "\n" + textwrap.dedent(body))

    def tool_file(self, name: str, source: str) -> Path:
        return self.write(f"jobs/tools/{name}.py", source)

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Result:
        """Run `jobrunner ARGS` as a subprocess in the project."""
        proc = subprocess.run(
            [jobrunner_executable(), *args], cwd=cwd or self.root, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [jobrunner_executable(), *args], cwd=self.root, env={**self.env, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def runs(self, job: str | None = None) -> list[dict]:
        result = self.run("runs", *([job] if job else []), "--json", "-n", "1000")
        assert result.code == 0, result.stderr
        return result.json()

    def recorded_runs(self, job: str | None = None) -> list[dict]:
        """What `runs` lists, read from the state in this process: cheap enough to poll
        while the runs themselves go on in other processes."""
        from jobrunner.config.project import Project as State

        store = State(self.root).store()
        try:
            return [r.as_json() for r in store.list_runs(job, 1000)]
        finally:
            store.close()

    def trace(self, run_id: str) -> list[dict]:
        """A run's trace events, from `jobrunner show RUN --json`."""
        result = self.run("show", run_id, "--json")
        assert result.code == 0, result.stderr
        return result.json()["trace"]

    def memory(self, agent: str) -> str:
        return (self.root / "memory" / agent / "MEMORY.md").read_text(encoding="utf-8")

    def alerts(self) -> list[dict]:
        path = self.state / "alerts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fast layer is every test that runs in this process (`pytest -m inprocess`)."""
    for item in items:
        if "inproc" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.inprocess)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's key or project (each project fixture sets its own
    `state_dir`: the default one does not depend on the environment)."""
    for var in ("JOBRUNNER_HOME", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                "ANTHROPIC_BASE_URL", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake_api() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as api:
        yield api


@pytest.fixture
def project(tmp_path: Path, fake_api: FakeMessagesAPI) -> Project:
    """An empty project whose runs talk to the fake API with a test key."""
    root = tmp_path / "proj"
    (root / "jobs").mkdir(parents=True)
    state = tmp_path / "state"
    (root / "jobrunner.toml").write_text(f'state_dir = "{state}"\n', encoding="utf-8")
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "JOBRUNNER_"))
    }
    env.update({
        "ANTHROPIC_API_KEY": TEST_KEY,
        "ANTHROPIC_BASE_URL": fake_api.url,
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return Project(root=root, state=state, env=env)


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[Project]:
    """An empty project for runs in this process (see tests/inprocess.py)."""
    from tests.inprocess import in_process_project

    with in_process_project(tmp_path) as project:
        yield project


@pytest.fixture
def example_project(tmp_path: Path, fake_api: FakeMessagesAPI) -> Project:
    """A copy of the repository's daily-email example project."""
    root = tmp_path / "example"
    for part in ("jobs", "memory", "data"):
        shutil.copytree(REPO / part, root / part,
                        ignore=shutil.ignore_patterns("__pycache__", "history"))
    state = tmp_path / "state"
    settings = (REPO / "jobrunner.toml").read_text(encoding="utf-8")
    (root / "jobrunner.toml").write_text(f'state_dir = "{state}"\n' + settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "JOBRUNNER_"))}
    return Project(root=root, state=state, env=env)
