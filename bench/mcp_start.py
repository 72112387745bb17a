"""What a run pays to use a stdio MCP server: start it and list its tools.

    .venv/bin/python -m bench.mcp_start [--reps 10]

Medians of interleaved repetitions, wall clock, against `python -c pass` (same
interpreter). Each figure is a separate thing a run pays:

- `import mcp` (in a fresh interpreter, minus `python -c pass`): once per run that
  uses any MCP server (jobrunner imports the SDK only then);
- the guard (`mcp_guard.py`: a bare interpreter, the watchdog's fork, then exec), as
  `guard -> exec true` against `true` alone;
- start + handshake + tools/list + close through `McpConnection`, for the test server
  (tests/mcp_test_server.py, SDK `MCPServer`) and the package index's `mcp-server-time`;
- the same through the SDK's `Client` directly, without the guard: the difference is what
  the process-lifetime guarantee costs.

Needs the `test` extra (mcp, mcp-server-time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import REPO, median, timed

SERVER = [sys.executable, str(REPO / "tests" / "mcp_test_server.py")]
IMPORT = "python -c 'import mcp' (once per run)"
TIME_SERVER = [str(Path(sys.executable).parent / "mcp-server-time"), "--local-timezone", "UTC"]


def guarded_true() -> float:
    """The guard exec'ing `true`, in a session of its own as the SDK starts it; the
    watchdog it leaves behind is killed with its group afterwards."""
    from jobrunner.tools import mcp_guard

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-I", "-S", mcp_guard.__file__, str(os.getpid()),
                             "true"], start_new_session=True, stderr=subprocess.DEVNULL)
    proc.wait()
    wall = time.perf_counter() - started
    with contextlib.suppress(ProcessLookupError):  # nothing left of the group
        os.killpg(proc.pid, signal.SIGKILL)
    return wall


def through_connection(command: list[str], root: Path) -> Callable[[], float]:
    from jobrunner.tools.mcp_client import McpConnection
    from jobrunner.tools.mcp_config import McpServerConfig

    def once() -> float:
        started = time.perf_counter()
        conn = McpConnection("bench", McpServerConfig(command=command), root)
        try:
            conn.list_tools()
        finally:
            conn.close()
        return time.perf_counter() - started

    return once


def through_sdk(command: list[str], root: Path) -> Callable[[], float]:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def session() -> None:
        params = StdioServerParameters(command=command[0], args=command[1:], cwd=str(root))
        with open("/dev/null", "w") as sink:
            async with Client(stdio_client(params, errlog=sink), cache=None) as client:
                await client.list_tools()

    def once() -> float:
        started = time.perf_counter()
        asyncio.run(session())
        return time.perf_counter() - started

    return once


def run(reps: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="jr-bench-mcp-") as tmp:
        root = Path(tmp)
        subjects: dict[str, Callable[[], float]] = {
            "python -c pass": lambda: timed([sys.executable, "-c", "pass"]).wall,
            "true": lambda: timed(["true"]).wall,
            "guard -> exec true": guarded_true,
            IMPORT:
                lambda: timed([sys.executable, "-c", "import mcp.client.stdio"]).wall,
            "McpConnection: test server": through_connection(SERVER, root),
            "SDK Client, no guard: test server": through_sdk(SERVER, root),
            "McpConnection: mcp-server-time": through_connection(TIME_SERVER, root),
            "SDK Client, no guard: mcp-server-time": through_sdk(TIME_SERVER, root),
        }
        for once in subjects.values():
            once()  # warm the page cache and bytecode before measuring
        samples: dict[str, list[float]] = {name: [] for name in subjects}
        for _ in range(reps):
            for name, once in subjects.items():  # interleaved: drift hits all alike
                samples[name].append(once())
    return {name: median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    options = parser.parse_args()
    figures = run(options.reps)
    bare = figures["python -c pass"]
    print(f"median of {options.reps}, wall clock\n")
    print(f"| {'what':<40} | {'median':>9} | {'x python -c pass':>16} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 18}|")
    for name, value in figures.items():
        print(f"| {name:<40} | {value * 1000:7.1f} ms | {value / bare:15.1f}x |")
    guard = figures["guard -> exec true"] - figures["true"]
    print(f"\nthe guard costs {guard * 1000:.1f} ms per server start; "
          f"`import mcp` {(figures[IMPORT] - bare) * 1000:.0f} ms once per run")


if __name__ == "__main__":
    main()
