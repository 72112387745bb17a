"""Whether a daemon schedules this project: its lock in the state folder, whose holder
record (pid, host, since when) the daemon writes when it starts and frees when it stops."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobrunner.locks.file import RunLock, inspect

if TYPE_CHECKING:
    from jobrunner.config.project import Project


def daemon_lock(project: Project) -> RunLock:
    """The one lock a project's daemon holds while it runs (`STATE_DIR/daemon.lock`)."""
    return RunLock(project.state_dir, "daemon")


@dataclass
class DaemonPresence:
    """`up`: a live daemon holds the lock; else when it last stopped (or died)."""

    up: bool
    pid: int | None = None
    host: str | None = None
    since: str | None = None  # started at (up), or stopped at (down)
    died: bool = False  # the last daemon's process is gone without having stopped

    def as_json(self) -> dict[str, Any]:
        return {"up": self.up, "pid": self.pid, "host": self.host, "since": self.since,
                "died": self.died}


def daemon_presence(project: Project) -> DaemonPresence:
    """Told by trying the daemon's lock for an instant (a pid can be reused; the lock
    dies with its process), the record read, never written."""
    state = inspect(daemon_lock(project), math.inf)
    meta = state.meta
    if state.state == "held":
        return DaemonPresence(True, meta.get("pid"), meta.get("host"), meta.get("started_at"))
    if state.state == "crashed":
        return DaemonPresence(False, meta.get("pid"), meta.get("host"), meta.get("started_at"),
                              died=True)
    return DaemonPresence(False, since=meta.get("released_at"))
