"""Which host and process this is, and whether another process on this host still lives."""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    """The host name every record of this process carries."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (it may belong to someone else)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that recorded something is alive. One on another host cannot
    be told from here: it is taken to live (the caller says so where it matters)."""
    if not pid:
        return False
    if host and host != this_host():
        return True
    return pid == os.getpid() or pid_alive(pid)
