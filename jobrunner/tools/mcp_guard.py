"""Starts an MCP server so that it cannot outlive the jobrunner process that started it.

    python -I -S mcp_guard.py PARENT_PID COMMAND [ARG...]

jobrunner spawns this as the leader of a new session and process group (the MCP SDK's
stdio transport does `start_new_session`). Before turning into the server it

1. writes one marker line, `MARKER PGID`, to stderr: jobrunner reads it and kills the
   whole group on close, including what the server started and left behind;
2. forks a watchdog that stays in the group, detached from the server (double fork) so the
   server never sees it as a child. It waits on a pidfd of jobrunner and SIGKILLs the
   group the moment jobrunner is gone, however it went (kill -9 included);
3. execs the server command in its own place: same pid, stdin, stdout and stderr, so the
   SDK talks to the server directly and sees its exit.

Standard library only, run with `-I -S`: a server start pays one bare interpreter.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

MARKER = "\x00jobrunner-mcp-group"
EXIT_PARENT_GONE = 125
EXIT_CANNOT_EXEC = 127


def _parent_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(parent: int, pidfd: int | None) -> None:
    """The watchdog: hold nothing of the server's, wait for jobrunner's end, kill the group."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # never hold the server's pipes open (EOF must mean EOF)
    os.chdir("/")
    # The SDK's polite shutdown SIGTERMs the group; the watchdog stays until the SIGKILL
    # that ends every shutdown, so a parent killed mid-shutdown still takes the group.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once jobrunner has exited
    else:  # no pidfd (not Linux >= 5.3): poll
        while _parent_alive(parent):
            time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> None:
    parent, command = int(argv[1]), argv[2:]
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        pidfd = None
    if os.getppid() != parent:
        # jobrunner died before the pidfd was opened: it may name another process.
        os._exit(EXIT_PARENT_GONE)
    os.write(2, f"{MARKER} {os.getpgrp()}\n".encode())
    first = os.fork()
    if first == 0:
        if os.fork() == 0:
            try:
                watch(parent, pidfd)
            finally:
                os._exit(0)
        os._exit(0)
    os.waitpid(first, 0)
    if pidfd is not None:
        os.close(pidfd)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f"cannot start {command[0]!r}: {exc.strerror}\n".encode())
        os.killpg(0, signal.SIGKILL)  # the watchdog too; the SDK sees the server die
        os._exit(EXIT_CANNOT_EXEC)


if __name__ == "__main__":
    main(sys.argv)
