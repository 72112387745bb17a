"""Run locks: an OS-level lock (portalocker; dies with its process) plus a metadata
record saying who holds it, so a lock can be told free, live, stale or crashed.

A lock file is never unlinked: two waiters on two inodes is how double runs happen.
Recovery after a crash rewrites the metadata while holding the OS lock.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobrunner.store import iso, utcnow


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `path` so a reader sees the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class Acquired:
    """We hold the lock. `left_behind` is the record of a holder that died holding it."""

    left_behind: dict[str, Any] | None


@dataclass
class Busy:
    """A live process holds the lock; `holder` is its metadata (may be None briefly)."""

    holder: dict[str, Any] | None


class RunLock:
    """The lock of one job (`job-NAME`) or one agent's memory (`agent-NAME`)."""

    def __init__(self, locks_dir: Path, key: str) -> None:
        locks_dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.path = locks_dir / f"{key}.lock"
        self.meta_path = locks_dir / f"{key}.json"
        self._lock: Any = None

    def read_meta(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def try_acquire(self, timeout: float = 0.0) -> Acquired | Busy:
        """Take the OS lock without waiting (or up to `timeout` seconds)."""
        import portalocker

        lock = portalocker.Lock(
            str(self.path),
            mode="a",
            timeout=timeout,
            check_interval=0.05,
            fail_when_locked=timeout == 0,
            flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
        )
        try:
            lock.acquire()
        except portalocker.exceptions.LockException:
            return Busy(self.read_meta())
        self._lock = lock
        meta = self.read_meta()
        left = meta if meta and meta.get("state") == "held" else None
        return Acquired(left)

    def mark_held(self, run_id: str, job: str, **extra: Any) -> dict[str, Any]:
        """Record who holds the lock (only while holding it)."""
        now = iso(utcnow())
        meta = {
            "state": "held",
            "run_id": run_id,
            "job": job,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": now,
            "heartbeat_at": now,
            **extra,
        }
        atomic_write_json(self.meta_path, meta)
        return meta

    def heartbeat(self) -> None:
        meta = self.read_meta()
        if meta and meta.get("pid") == os.getpid():
            meta["heartbeat_at"] = iso(utcnow())
            atomic_write_json(self.meta_path, meta)

    def release(self) -> None:
        """Mark the lock free, then drop the OS lock (the file stays)."""
        if self._lock is None:
            return
        meta = self.read_meta() or {}
        atomic_write_json(
            self.meta_path,
            {"state": "free", "last_run_id": meta.get("run_id"), "released_at": iso(utcnow())},
        )
        self._lock.release()
        self._lock = None

    @property
    def held(self) -> bool:
        return self._lock is not None
