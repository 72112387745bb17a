"""How the daemon starts a run's process: forked by its fork server (the default), or
exec'd as a fresh interpreter (`--launch exec`, and whenever the server cannot serve).

Either way the run is the command line `jobrunner --home ROOT run NAME --trigger daemon
--slot ISO` in a process of its own session, which the daemon waits for and, on
SIGTERM, signals by process group. See `forkserver` for what a forked child keeps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from jobrunner.hosts import pid_alive
from jobrunner.installed import code_stamp

LOG = logging.getLogger("jobrunner.daemon")
START_TIMEOUT = 120.0  # a server importing its libraries on a loaded host
RETRY_AFTER = 60.0  # after a server that would not start, exec runs this long first


class Child:
    """A run's process as the daemon sees it: its pid once started, and its exit."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.error: str | None = None
        self.code: int | None = None  # exit code; negative: the signal that killed it
        self.cpu: float | None = None  # CPU seconds it used, when its parent told
        self.lost = False  # its server died first: how it ended is not known
        self._started = threading.Event()
        self._ended = threading.Event()

    def started(self, pid: int | None, error: str | None = None) -> None:
        self.pid, self.error = pid, error
        self._started.set()
        if pid is None:
            self._ended.set()

    def ended(self, code: int | None, lost: bool = False, cpu: float | None = None) -> None:
        self.code, self.lost, self.cpu = code, lost, cpu
        self._started.set()
        self._ended.set()

    def wait_started(self) -> int | None:
        """The pid (None: it could not be started; `error` says why)."""
        self._started.wait()
        return self.pid

    def wait(self) -> int | None:
        """The exit code, once the process has ended (None: not known)."""
        self._ended.wait()
        if self.lost and self.pid is not None:
            while _running(self.pid):  # reparented when its server died: watch it go
                time.sleep(0.2)
        return self.code


def _running(pid: int) -> bool:
    """Whether `pid` still runs. A child reparented to this process (the daemon as PID 1,
    in a container) is reaped here; an exited one nobody reaps yet is a zombie, not a run."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not ours: its new parent reaps it
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass  # no /proc: what kill(0) says stands
    return pid_alive(pid)


def exec_child(argv: list[str]) -> Child:
    """A fresh interpreter for the run (what every firing was before the fork server)."""
    from jobrunner.scheduling.due import jobrunner_command

    child = Child()
    try:
        proc = subprocess.Popen([*jobrunner_command(), *argv], stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:
        child.started(None, str(exc))
        return child
    child.started(proc.pid)
    threading.Thread(target=lambda: child.ended(proc.wait()), name=f"wait-{proc.pid}",
                     daemon=True).start()
    return child


class ForkServer:
    """One running fork server: its process, its socket, and the children it forked."""

    def __init__(self) -> None:
        self.stamp = code_stamp()  # the code it imports
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobrunner.cli.forkserver", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                # Not the daemon's folder: nothing there may shadow what it imports (each
                # child changes to the daemon's folder itself).
                cwd=str(Path(sys.executable).parent))
        finally:
            theirs.close()
        self.sock = ours
        self.reader = ours.makefile("rb")
        self.children: dict[int, Child] = {}
        self.guard = threading.Lock()
        self.next_id = 0
        self.alive = True
        self.retired = False
        ours.settimeout(START_TIMEOUT)
        try:
            ready = json.loads(self.reader.readline() or b"{}")
        except (OSError, ValueError):
            ready = {}
        ours.settimeout(None)
        if not ready.get("ready"):
            self.proc.kill()  # wedged, or gone: never one left behind per retry
            self._close()
            self.reader.close()
            ours.close()
            raise OSError("the fork server did not start")
        threading.Thread(target=self._read, name="fork-server", daemon=True).start()

    def spawn(self, argv: list[str]) -> Child:
        """Ask for a child running `argv`; returns at once (the pid follows)."""
        child = Child()
        request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
        with self.guard:
            if not self.alive:
                raise OSError("the fork server has stopped")
            self.next_id += 1
            request["id"] = self.next_id
            self.children[self.next_id] = child
            try:
                self.sock.sendall((json.dumps(request) + "\n").encode())
            except OSError:
                self.children.pop(self.next_id, None)
                raise
        return child

    def retire(self) -> None:
        """No new children; the server stops once those it has are reaped."""
        with self.guard:
            self.retired = True
            idle = not self.children
            if idle:
                self.alive = False  # in the same hold: no spawn slips in before the close
        if idle:
            self._close()

    def _read(self) -> None:
        for line in self.reader:
            message = json.loads(line)
            with self.guard:
                child = self.children.get(message["id"])
                if "exit" in message or "error" in message:
                    self.children.pop(message["id"], None)
                idle = self.retired and not self.children
                if idle:
                    self.alive = False  # as in `retire`: no spawn after this decision
            if child is not None:
                if "pid" in message:
                    child.started(message["pid"])
                elif "error" in message:
                    child.started(None, message["error"])
                else:
                    child.ended(message["exit"], cpu=message.get("cpu"))
            if idle:
                break
        with self.guard:
            self.alive = False
            orphans = list(self.children.values())
            self.children.clear()
        for child in orphans:  # the server died under them
            child.ended(None, lost=True)
        self._close()
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()

    def _close(self) -> None:
        """Hang up: the server exits at the end of its socket, and the reader thread's
        blocked read returns."""
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Launcher:
    """Starts the daemon's runs: through the current fork server, a new one when the
    installed code changed, and a fresh interpreter when no server can serve."""

    def __init__(self, mode: str = "fork") -> None:
        self.mode = mode
        self.server: ForkServer | None = None
        self.failed_at = float("-inf")
        self.starting = False  # a replacement server is being started
        self.closed = False
        self.guard = threading.Lock()

    def start(self) -> None:
        """The first server, before the first firing (so it forks from the start)."""
        if self.mode == "fork":
            self._start_server()

    def _server(self, check_code: bool = False) -> ForkServer | None:
        """The server to fork from now, or None (this run starts as a fresh process). A
        server that stopped, or runs out-of-date code, is retired and a new one started
        in a thread of its own: never under a lock the daemon's launches or its SIGTERM
        handling wait for (a start may take up to START_TIMEOUT)."""
        with self.guard:
            server = self.server
            if server is not None and server.alive and \
                    (not check_code or server.stamp == code_stamp()):
                return server
            retiring, self.server = server, None
            start = not self.starting and not self.closed and \
                time.monotonic() - self.failed_at >= RETRY_AFTER
            self.starting = self.starting or start
        if retiring is not None:
            LOG.info("restarting the fork server ("
                     + ("the installed code changed)" if retiring.alive else "it stopped)"))
            threading.Thread(target=retiring.retire, name="fork-server-retire",
                             daemon=True).start()
        if start:
            threading.Thread(target=self._start_server, name="fork-server-start",
                             daemon=True).start()
        return None

    def _start_server(self) -> None:
        with self.guard:
            self.starting = True
        try:
            server = ForkServer()
        except OSError as exc:
            with self.guard:
                self.failed_at, self.starting = time.monotonic(), False
            LOG.info(f"the fork server could not start ({exc}); runs start as fresh "
                     "processes for now")
            return
        with self.guard:
            self.starting = False
            closed = self.closed
            if not closed:
                self.server = server
        if closed:
            server.retire()  # the daemon stopped while it started
            return
        LOG.info(f"fork server started (pid {server.proc.pid})")

    def spawn(self, argv: list[str]) -> Child:
        server = self._server() if self.mode == "fork" else None
        if server is not None:
            try:
                return server.spawn(argv)
            except OSError:
                pass  # it died this instant: this run starts as a fresh process
        return exec_child(argv)

    def check(self) -> None:
        """Replace a server that stopped or whose code is out of date now rather than at
        the next firing (called from the daemon's supervising loop)."""
        if self.mode == "fork" and self.server is not None:
            self._server(check_code=True)

    def close(self) -> None:
        with self.guard:
            self.closed = True
            server, self.server = self.server, None
        if server is not None:
            server.retire()

