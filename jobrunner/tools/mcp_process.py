"""The processes of a stdio MCP server: how it is spawned (through `mcp_guard`, with a
scrubbed environment, in the project root), its stderr kept in a bounded buffer, and its
process group killed and waited for. Standard library only; the SDK is imported by the
one function that builds its parameters."""

from __future__ import annotations

import array
import fcntl
import logging
import os
import select
import shutil
import signal
import sys
import termios
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.formats.mcp import SAFE_ENV, McpServerConfig
from jobrunner.tools import mcp_guard
from jobrunner.tools.mcp_config import McpStartError

log = logging.getLogger(__name__)

STDERR_LIMIT = 64 * 1024  # bytes of a server's stderr kept for the trace (head and tail)
_STDERR_HEAD = 8 * 1024
GONE_WAIT = 5.0  # after SIGKILL, how long to wait to see the group gone


def server_environment(name: str, config: McpServerConfig,
                       environ: Mapping[str, str]) -> dict[str, str]:
    """What the server's process gets: SAFE_ENV from jobrunner's environment, its `env`
    table, and its `secrets_env` (each of which must be set)."""
    env = {k: environ[k] for k in SAFE_ENV if k in environ}
    env.update(config.env)
    for var in config.secrets_env:
        if var not in environ:
            raise ConfigError(f"mcp.{name}.secrets_env: {var} is not set in jobrunner's "
                              "environment")
        env[var] = environ[var]
    return env


def spawn_parameters(name: str, config: McpServerConfig, root: Path,
                     environ: Mapping[str, str]) -> Any:
    """StdioServerParameters for the guard that becomes the server (see mcp_guard). A
    program that is not there is an `McpStartError` before any process exists."""
    from mcp import StdioServerParameters

    assert config.command is not None
    env = server_environment(name, config, environ)
    program = config.command[0]
    if "/" in program:
        found = (root / program).is_file() and os.access(root / program, os.X_OK)
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath)) is not None
    if not found:
        where = "the project" if "/" in program else "the server's PATH"
        raise McpStartError(name, f"command not found: {program!r} (looked in {where})")
    guard = [sys.executable, "-I", "-S", mcp_guard.__file__, str(os.getpid())]
    return StdioServerParameters(command=guard[0], args=[*guard[1:], *config.command],
                                 env=env, cwd=str(root))


def http_headers(name: str, config: McpServerConfig,
                 environ: Mapping[str, str]) -> dict[str, str]:
    """The HTTP headers of `headers_env`, from jobrunner's environment."""
    headers = {}
    for header, var in config.headers_env.items():
        if var not in environ:
            raise ConfigError(f"mcp.{name}.headers_env.{header}: {var} is not set in "
                              "jobrunner's environment")
        headers[header] = environ[var]
    return headers


def kill_group(pgid: int | None, server: str) -> None:
    """SIGKILL a server's whole process group (what it started, and the watchdog)."""
    if pgid is None:
        return  # never started, or over HTTP: no process of ours
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone
    except PermissionError:
        log.warning("cannot signal process group %d of MCP server %s", pgid, server)


def wait_group_gone(pgid: int | None, wait: float = GONE_WAIT) -> None:
    """Wait (bounded) until no live process is left in the group."""
    if pgid is None:
        return
    end = time.monotonic() + wait
    while group_alive(pgid) and time.monotonic() < end:
        time.sleep(0.01)


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in process group `pgid`. Reads /proc
    where there is one (a zombie still answers signal 0), else probes with signal 0."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


class StderrTap:
    """A pipe for a server's stderr, drained by a thread into a bounded buffer: the first
    `_STDERR_HEAD` bytes and the last ones, up to `STDERR_LIMIT` in all. It also picks up
    the guard's marker line (the process group id) ahead of the server's own output.
    Each read and its bookkeeping happen under the lock, so `settle` can tell when all that
    was written so far is in the buffer."""

    def __init__(self) -> None:
        self._fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
        self.pgid: int | None = None
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self._pending = b""  # until the marker line is complete
        self._marker_done = False
        self._marker_seen = threading.Event()
        self._eof = False
        self._thread = threading.Thread(target=self._drain, name="mcp-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._eof:
            select.select([self._fd], [], [])
            with self._lock:
                chunk = os.read(self._fd, 65536)  # readable, and only this thread reads
                if not chunk:
                    self._eof = True
                    break
                if not self._marker_done:
                    chunk = self._take_marker(chunk)
                self._keep(chunk)
        os.close(self._fd)

    def _take_marker(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        prefix = mcp_guard.MARKER.encode()
        if not data.startswith(prefix[:len(data)]):
            self._marker_done = True
            return data
        if b"\n" not in data:
            self._pending = data
            return b""
        line, rest = data.split(b"\n", 1)
        self._marker_done = True
        self._pending = b""
        if line.startswith(prefix):
            self.pgid = int(line[len(prefix):].strip())
            self._marker_seen.set()
            return rest
        return data

    def wait_marker(self, timeout: float) -> int | None:
        self._marker_seen.wait(timeout)
        return self.pgid

    def _keep(self, chunk: bytes) -> None:
        room = _STDERR_HEAD - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        excess = len(self._tail) - (STDERR_LIMIT - _STDERR_HEAD)
        if excess > 0:
            del self._tail[:excess]
            self._dropped += excess

    def settle(self, wait: float = 0.5) -> None:
        """Wait (a little) until what is already in the pipe is in the buffer."""
        end = time.monotonic() + wait
        while time.monotonic() < end:
            with self._lock:
                if self._eof or _unread(self._fd) == 0:
                    return
            time.sleep(0.01)

    def text(self) -> str:
        with self._lock:
            head, tail, dropped = bytes(self._head), bytes(self._tail), self._dropped
        gap = f"\n[... {dropped} bytes of stderr dropped ...]\n" if dropped else ""
        return head.decode(errors="replace") + gap + tail.decode(errors="replace")

    def close(self) -> None:
        """After the server group is gone: the writers are closed, the drain ends."""
        if not self.writer.closed:
            self.writer.close()
        self._thread.join(1.0)


def _unread(fd: int) -> int:
    """Bytes waiting in a pipe."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]
