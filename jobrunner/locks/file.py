"""Run locks: an OS-level lock that dies with its process, plus a metadata record saying
who holds it, so a lock can be told free, live, stale or crashed.

The OS lock is a POSIX record lock (`fcntl.lockf`, called directly: all that portalocker's
`LockfLocker` did, at ~15 ms less per process), not `flock`: a record lock belongs to the
process, so a child a tool forks (os.fork, multiprocessing) does not inherit it, and a run
killed with -9 frees its lock even while such a child lives on with the open file. The
price of per-process locks: two locks on one file in one process do not exclude each
other, and closing any descriptor of the file drops the process's lock. So this module
keeps a registry of the lock files the process holds, never opens a held one again, and
is the only code that opens lock files.

A lock file is never unlinked: two waiters on two inodes is how double runs happen.
Recovery after a crash rewrites the metadata while holding the OS lock.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobrunner import errors
from jobrunner.clock import iso, parse_iso, utcnow
from jobrunner.hosts import pid_alive

# The lock files this process holds (or is taking this instant), by path. A second
# RunLock on one of them must find it busy without opening it: its close would drop ours.
_HELD: set[str] = set()
_HELD_GUARD = threading.Lock()


class LockRecordError(errors.StateError):
    """The lock's metadata record could not be written (a full or read-only state disk)."""


class _RecordLock:
    """An exclusive POSIX record lock on one file, taken without blocking (retried every
    50 ms up to `timeout`). Unlocked by closing its descriptor; Python opens files
    close-on-exec, so an exec'd program gets neither the descriptor nor the lock."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fh: Any = None

    def acquire(self) -> bool:
        """Whether the lock is ours now (False: another process holds it)."""
        import fcntl

        deadline = time.monotonic() + self.timeout
        handle = open(self.path, "a")  # noqa: SIM115 - held open for as long as the lock
        try:
            while True:
                try:
                    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self.fh = handle
                    return True
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EAGAIN):
                        raise
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(min(0.05, max(0.001, deadline - time.monotonic())))
        except BaseException:
            handle.close()
            raise

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # drops this process's record locks on the file
            self.fh = None


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `path` so a reader sees the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not also collect half-written temps
        raise


def _written(path: Path, data: dict[str, Any]) -> bool:
    """atomic_write_json, saying whether the disk took it instead of raising."""
    try:
        atomic_write_json(path, data)
    except OSError:
        return False
    return True


@dataclass
class Acquired:
    """We hold the lock. `left_behind` is the record of a holder that died holding it."""

    left_behind: dict[str, Any] | None
    previous: dict[str, Any] | None = None  # the metadata as found (free, held or crashed)


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
        self._key = ""
        # Heartbeat and release both rewrite the metadata: never interleave them.
        self._meta_guard = threading.Lock()

    def read_meta(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def try_acquire(self, timeout: float = 0.0) -> Acquired | Busy:
        """Take the OS lock without waiting (or trying for up to `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        key = str(self.path.resolve())
        while not _reserve(key):  # this process holds it (or is taking it) already
            if time.monotonic() >= deadline:
                return Busy(self.read_meta())
            time.sleep(0.05)
        lock = _RecordLock(str(self.path), max(0.0, deadline - time.monotonic()))
        try:
            taken = lock.acquire()
        except BaseException:
            _forget(key)
            raise
        if not taken:
            _forget(key)
            return Busy(self.read_meta())
        self._lock, self._key = lock, key
        meta = self.read_meta()
        left = meta if meta and meta.get("state") == "held" else None
        return Acquired(left, meta)

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
        try:
            atomic_write_json(self.meta_path, meta)
        except OSError as exc:
            raise LockRecordError(f"{self.meta_path}: cannot record who holds the lock: "
                                  f"{exc.strerror or exc}") from exc
        return meta

    def heartbeat(self) -> bool:
        """Refresh `heartbeat_at` (only while this process holds the lock). Returns False
        when the disk refused it: a full disk must not end a run, the next beat retries."""
        with self._meta_guard:
            if self._lock is None:
                return True
            meta = self.read_meta()
            if meta and meta.get("pid") == os.getpid() and meta.get("state") == "held":
                meta["heartbeat_at"] = iso(utcnow())
                try:
                    atomic_write_json(self.meta_path, meta)
                except OSError:
                    return False
            return True

    def mark_crashed(self, holder: dict[str, Any]) -> None:
        """Record (under the OS lock) that `holder` died holding it: the crash has been
        recorded and alerted, and stays visible until a run or `unlock` clears it."""
        meta = {**holder, "state": "crashed", "recorded_at": iso(utcnow())}
        try:
            atomic_write_json(self.meta_path, meta)
        except OSError as exc:
            raise LockRecordError(f"{self.meta_path}: cannot record the crash of run "
                                  f"{holder.get('run_id')}: {exc.strerror or exc}") from exc

    def release(self, keep_meta: bool = False, last_run: dict[str, Any] | None = None) -> None:
        """Mark the lock free (unless `keep_meta`), then drop the OS lock (the file stays).
        `last_run` (the run's final status, and whether the state database has it) rides
        on the free record, so the next holder can record an end the database refused."""
        with self._meta_guard:
            if self._lock is None:
                return
            try:
                if not keep_meta:
                    self._write_free(last_run)
            finally:
                self._lock.release()
                self._lock = None
                _forget(self._key)

    def _write_free(self, last_run: dict[str, Any] | None) -> None:
        meta = self.read_meta() or {}
        record: dict[str, Any] = {
            "state": "free", "last_run_id": meta.get("run_id") or meta.get("last_run_id"),
            "released_at": iso(utcnow())}
        if last_run:
            record["last_run"] = last_run
        if _written(self.meta_path, record):
            return
        # No room for the new record beside the old: a "held" record left by a run that
        # ended would read as a crash. Unlinking needs no space and frees the old record's
        # block for the new one; the lock file itself is never touched. With no record at
        # all the lock reads as free, which it is.
        try:
            self.meta_path.unlink(missing_ok=True)
        except OSError:
            return  # read-only: the next holder tells an ended run by its database row
        _written(self.meta_path, record)

    @property
    def held(self) -> bool:
        return self._lock is not None


def _reserve(key: str) -> bool:
    """Claim lock file `key` for this process, unless it holds (or is taking) it already."""
    with _HELD_GUARD:
        if key in _HELD:
            return False
        _HELD.add(key)
        return True


def _forget(key: str) -> None:
    with _HELD_GUARD:
        _HELD.discard(key)


class HeartbeatThread:
    """Refreshes the lock's `heartbeat_at` every `interval` seconds while a run lives,
    so `locks` and `check` can tell a live holder from a silent one."""

    def __init__(self, lock: Any, interval: float,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self._lock = lock
        self._interval = interval
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lock-heartbeat", daemon=True)

    def start(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lock.heartbeat()
            except errors.LockLost as exc:  # the lock may be another's now: the run must stop
                if self._on_lost is not None:
                    self._on_lost(str(exc))
                return
            except errors.StateError:
                continue  # a state that refuses one beat (a full disk): the next tries

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def heartbeat_interval(stale_after: float) -> float:
    """Beat often enough to be seen well before the lock counts as stale."""
    return max(1.0, min(30.0, stale_after / 4))


@dataclass
class LockState:
    """What `locks` and `check` see: free, held, stale or crashed (left by a dead run)."""

    key: str
    state: str
    meta: dict[str, Any]
    held_for: float | None = None  # seconds since the holder started
    heartbeat_age: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "run_id": self.meta.get("run_id"), "pid": self.meta.get("pid"),
            "host": self.meta.get("host"), "started_at": self.meta.get("started_at"),
            "heartbeat_at": self.meta.get("heartbeat_at"),
            "held_for_s": None if self.held_for is None else round(self.held_for),
            "heartbeat_age_s": None if self.heartbeat_age is None else round(self.heartbeat_age),
        }


def _age(meta: dict[str, Any], key: str, now: datetime) -> float | None:
    try:
        moment = parse_iso(meta.get(key))
    except (TypeError, ValueError):
        return None
    return (now - moment).total_seconds() if moment else None


def is_stale(holder: dict[str, Any] | None, stale_after: float,
             now: datetime | None = None) -> bool:
    """A live holder that has held the lock longer than `stale_after` (hung or overrunning)."""
    if not holder or holder.get("state") != "held":
        return False  # a holder that has not written its record yet has only just started
    age = _age(holder, "started_at", now or utcnow())
    return age is not None and age > stale_after


def held_by_live_run(holder: dict[str, Any] | None) -> bool:
    """Whether a busy lock's record names a run that is alive. When it does not, the OS
    lock is held for an instant by `locks`/`check` testing liveness, or by a run that has
    not written its record yet: worth waiting a moment for rather than skipping."""
    if not holder or holder.get("state") != "held":
        return False
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        return pid_alive(pid)
    return True


def holder_died(holder: dict[str, Any] | None) -> bool:
    """Whether a lock's record names a run on this host whose process is gone."""
    if not holder or holder.get("state") != "held":
        return False
    pid = holder.get("pid")
    return (holder.get("host") == socket.gethostname() and isinstance(pid, int)
            and not pid_alive(pid))


def inspect(lock: RunLock, stale_after: float, now: datetime | None = None) -> LockState:
    """The state of a lock we do not hold, told by trying the OS lock for an instant.

    Taking the OS lock is the only reliable liveness test (a pid can be reused); the
    metadata is read, never written, so a crash is still recorded by whoever handles it.
    """
    now = now or utcnow()
    got = lock.try_acquire()
    if isinstance(got, Busy):
        meta = got.holder or {}
        # A dead holder whose lock is still taken (by a process it left behind, or one
        # outside this pid namespace) is a crashed run all the same.
        state = ("crashed" if holder_died(meta) else
                 "stale" if is_stale(meta, stale_after, now) else "held")
    else:
        meta = lock.read_meta() or {}
        lock.release(keep_meta=True)
        state = "crashed" if meta.get("state") in ("held", "crashed") else "free"
    live = state in ("held", "stale", "crashed")
    return LockState(
        lock.key, state, meta,
        held_for=_age(meta, "started_at", now) if live else None,
        heartbeat_age=_age(meta, "heartbeat_at", now) if live else None,
    )


