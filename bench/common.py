"""What the benchmarks share: temporary projects, timed child processes, statistics.

Every figure comes from real processes: the installed `jobrunner` console script, the
real anthropic SDK, and the fake Messages API server of the test suite on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BIN = Path(sys.executable).parent
TEST_KEY = "sk-ant-bench-0123456789abcdef"


# A checkout of the commit to compare with (`python -m bench --baseline DIR`): its
# `jobrunner` package, run by this same interpreter and libraries (PYTHONPATH first).
BASELINE: dict[str, Path | None] = {"dir": None}


def baseline_env(env: dict[str, str]) -> dict[str, str] | None:
    """`env` running the baseline checkout's code, or None when no baseline was given."""
    folder = BASELINE["dir"]
    if folder is None:
        return None
    return {**env, "PYTHONPATH": str(folder)}


def baseline_commit() -> str:
    """The baseline checkout's short commit ("" without one)."""
    folder = BASELINE["dir"]
    if folder is None:
        return ""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def jobrunner_cmd() -> list[str]:
    """The installed console script next to this interpreter, as cron would call it."""
    script = BIN / "jobrunner"
    if not script.exists():
        raise SystemExit("bench: the jobrunner console script is missing (pip install -e .)")
    return [str(script)]


@dataclass
class Timed:
    """One child process: wall seconds, CPU seconds (user + system), exit code, output."""

    wall: float
    cpu: float
    code: int
    stdout: str = ""
    stderr: str = ""


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
          stdin: str | None = None) -> Timed:
    """Run `cmd` to completion; CPU comes from the kernel's rusage of that child alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err,
                                stdin=subprocess.PIPE if stdin is not None else None)
        if stdin is not None:
            proc.stdin.write(stdin.encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(wall, usage.ru_utime + usage.ru_stime, proc.returncode,
                     out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class BenchProject:
    """A throwaway jobrunner project whose runs talk to a given fake API."""

    root: Path
    state: Path
    env: dict[str, str] = field(default_factory=dict)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def job(self, name: str, body: str = "", **keys) -> Path:
        values = {"schedule": "0 8 * * *", "timezone": "UTC", "model": "claude-sonnet-4-6",
                  "tools": [], "prompt": "Do the task."}
        values.update(keys)
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        return self.write(f"jobs/{name}.toml", "\n".join(lines) + "\n" + textwrap.dedent(body))

    def cli(self, *args: str) -> Timed:
        return timed([*jobrunner_cmd(), *args], env=self.env, cwd=self.root)

    def runs(self, job: str | None = None) -> list[dict]:
        result = self.cli("runs", *([job] if job else []), "--json", "-n", "10000")
        if result.code != 0:
            raise RuntimeError(f"jobrunner runs failed: {result.stderr}")
        return json.loads(result.stdout)

    def trace(self, run_id: str) -> list[dict]:
        result = self.cli("show", run_id, "--json")
        if result.code != 0:
            raise RuntimeError(f"jobrunner show failed: {result.stderr}")
        return json.loads(result.stdout)["trace"]


def make_project(base: Path, api_url: str | None = None) -> BenchProject:
    """An empty project under `base` with its own state dir and a scrubbed environment."""
    root = base / "proj"
    (root / "jobs").mkdir(parents=True)
    state = base / "state"
    (root / "jobrunner.toml").write_text(f'state_dir = "{state}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "JOBRUNNER_"))}
    env["ANTHROPIC_API_KEY"] = TEST_KEY
    if api_url:
        env["ANTHROPIC_BASE_URL"] = api_url
    return BenchProject(root=root, state=state, env=env)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import platform

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu or "unknown",
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }
