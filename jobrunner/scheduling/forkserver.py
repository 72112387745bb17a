"""The daemon's fork server: one child process per run, forked from a process that has
imported jobrunner and its libraries once, instead of a fresh interpreter per firing.

The server is its own program (`python -m jobrunner.cli.forkserver FD`), started by the
daemon as a fresh interpreter, single-threaded, importing jobrunner's own modules and
its third-party libraries and nothing of the project: tool files and job files are read
by each run, in its child, as `jobrunner run` reads them from cron. For each request it
forks a child that becomes what `jobrunner run NAME --trigger daemon --slot ISO` would
be: its own session and process group (the daemon's `killpg` reaches it, and SIGTERM is
handled by the run as it is under cron), stdin from /dev/null, the daemon's stdout and
stderr, environment and working directory, the console entry point's own code path; it
exits as an interpreter does. Nothing returns from a child to the server, so a run that
crashes, leaks or rewrites module state affects no other run, and a child never uses a
connection of the server's (the server opens none).

Protocol, one JSON object per line on a socket pair: the daemon sends
`{"id", "argv", "env", "cwd"}`; the server answers `{"id", "pid"}` once forked (or
`{"id", "error"}`) and `{"id", "exit", "cpu"}` (an exit code, negative for the signal
that killed it, and the CPU seconds it used) once reaped. The server exits when the
daemon closes its end; children it leaves run on, as exec'd children of a dead daemon
would.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

READY = {"ready": True}


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def serve(fd: int, child: Callable[[list[str]], int]) -> int:
    """Serve fork requests on socket `fd` until the daemon closes it; each child runs
    `child(argv)` and exits with what it returns."""
    import threading

    if threading.active_count() != 1:  # fork copies one thread: others' locks would hang
        print("jobrunner fork server: an import started a thread; not serving",
              file=sys.stderr)
        return 1
    sock = socket.socket(fileno=fd)
    # Its life is the daemon's socket: a signal sent to the daemon's process group (Ctrl-C,
    # `timeout`, a closed terminal) is the daemon's to act on, which then closes it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # wakes the selector
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    private = [sock.fileno(), wake_r, wake_w, selector.fileno()]  # closed in each child
    ids: dict[int, int] = {}  # pid -> request id
    buffer = b""
    _send(sock, READY)
    while True:
        for key, _ in selector.select():
            if key.fileobj is not sock:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                continue
            data = sock.recv(1 << 16)
            if not data:
                return 0  # the daemon is gone: children live on, and are reaped by init
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = _fork(request, child, private)
                except OSError as exc:  # EAGAIN, ENOMEM: this run does not start
                    _send(sock, {"id": request["id"], "error": str(exc)})
                    continue
                ids[pid] = request["id"]
                _send(sock, {"id": request["id"], "pid": pid})
        _reap(sock, ids)


def _reap(sock: socket.socket, ids: dict[int, int]) -> None:
    while ids:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in ids:
            _send(sock, {"id": ids.pop(pid), "exit": os.waitstatus_to_exitcode(status),
                         "cpu": round(usage.ru_utime + usage.ru_stime, 6)})


def _fork(request: dict[str, Any], child: Callable[[list[str]], int],
          private: list[int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _become(request, child, private)
    except BaseException:  # noqa: BLE001 - the child's uncaught error, told as Python tells it
        traceback.print_exc()
    finally:
        os._exit(code)


def _become(request: dict[str, Any], child: Callable[[list[str]], int],
            private: list[int]) -> int:
    """In the forked child: the process a fresh `jobrunner run` would be, then the run."""
    os.setsid()  # its own session and process group, as start_new_session gave it
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)  # as a fresh interpreter has them
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in private:
        with contextlib.suppress(OSError):
            os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    return child(list(request["argv"]))
