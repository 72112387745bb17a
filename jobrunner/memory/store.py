"""Keeping MEMORY.md safe on disk: atomic writes, bounded history, the agent's lock,
conflicts with a person's edit, and jobrunner's own failure-log lines.

Locking: every job that names an agent runs its whole session (load, model, write)
holding the agent's lock (`locks/agent-NAME`), taken after the job's own lock. Two
jobs of one agent therefore run their sessions one after the other, each starting from
the memory the other left; a second one waits for the first (at most its own
`limits.max_seconds`) instead of clobbering it. `jobrunner memory edit/restore` take the
same lock, so a hand edit through jobrunner never races a run. A person editing the
file directly during a session is detected at write time: their version stays.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner.config.jobfile import MemoryPolicy
from jobrunner.locks.file import Acquired, Busy, RunLock
from jobrunner.memory.format import (
    Memory,
    MemoryFileError,
    apply_update,
    decode,
    failure_line,
    keep_failure_lines,
    load,
    memory_path,
    with_failure_line,
)
from jobrunner.redact import Redactor

if TYPE_CHECKING:
    from jobrunner.config.project import Project

log = logging.getLogger("jobrunner")

# The default of `[memory] history`: earlier versions an agent keeps.
HISTORY_KEEP = MemoryPolicy().history
NOT_WRITTEN = "memory not written"  # how a note for the report says the write failed
_VERSION = re.compile(r"^(?P<stamp>\d{8}T\d{12}Z)-(?P<tag>.+?)(?:-(?P<kind>proposal))?\.md$")


class MemoryBusy(errors.JobrunnerError):
    """The agent's memory is in use (a run or an edit holds its lock): try again later."""

    exit_code = errors.EXIT_TEMPFAIL


# -- atomic writes and history ---------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes, redactor: Redactor) -> None:
    """temp file, fsync, rename, fsync the folder: the old file or the new, never a mix.
    Every memory write (MEMORY.md, history/) passes the project's Redactor here: the
    memory goes to the model and outlives the run, so no secret goes into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(redactor.encoded(content))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _clean_temps(path: Path) -> None:
    """Temp files left by a writer killed before its rename (only called under the lock)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def history_dir(path: Path) -> Path:
    return path.parent / "history"


def save_history(path: Path, content: bytes, tag: str, redactor: Redactor, kind: str = "",
                 keep: int | Callable[[], int] = HISTORY_KEEP) -> Path:
    """Keep `content` in history/ as `TIME-TAG[-KIND].md` (TAG: the run id, `edit` or
    `restore`), dropping the oldest versions beyond `keep` (`[memory] history`)."""
    folder = history_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{stamp}-{tag}{'-' + kind if kind else ''}.md"
    # Make room first, so a kill between the two steps never leaves more than the bound.
    limit = keep() if callable(keep) else keep
    for old in sorted(folder.glob("*.md"))[: -(limit - 1) or None]:
        old.unlink(missing_ok=True)
    write_atomic(target, content, redactor)
    return target


def save(path: Path, content: bytes, previous: bytes, tag: str, redactor: Redactor,
         keep: int | Callable[[], int] = HISTORY_KEEP) -> bool:
    """Write `content` (redacted) if it differs from `previous`, keeping `previous` in
    history/ (at most `keep` versions; a callable is asked only then). Returns whether
    the file changed. Call under the agent's lock."""
    content = redactor.encoded(content)
    if content == previous:
        return False
    _clean_temps(path)
    if previous:
        save_history(path, previous, tag, redactor, keep=keep)
    write_atomic(path, content, redactor)
    return True


@dataclass
class Version:
    """One file in history/: what it was and who put it there."""

    name: str
    path: Path
    at: str  # ISO 8601 UTC
    tag: str  # run id, `edit` or `restore`
    kind: str  # `previous` (the file before a write) or `proposal` (an agent's unwritten one)
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"version": self.name, "at": self.at, "tag": self.tag, "kind": self.kind,
                "bytes": self.size, "path": str(self.path)}


def list_history(path: Path) -> list[Version]:
    """Every version in history/, oldest first."""
    out = []
    for item in sorted(history_dir(path).glob("*.md")):
        match = _VERSION.match(item.name)
        if not match:
            continue
        stamp = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        out.append(Version(item.stem, item, stamp.isoformat().replace("+00:00", "Z"),
                           match["tag"], match["kind"] or "previous", item.stat().st_size))
    return out


def find_version(path: Path, ref: str | None) -> Version:
    """A version by name, unique prefix or tag (run id); the newest when `ref` is None."""
    versions = list_history(path)
    if not versions:
        raise errors.NotFoundError(f"{history_dir(path)}: no earlier versions yet")
    if ref is None:
        return versions[-1]
    ref = ref.removesuffix(".md")
    exact = [v for v in versions if v.name == ref]
    found = exact or [v for v in versions if v.name.startswith(ref) or v.tag == ref]
    if len(found) == 1:
        return found[0]
    if not found:
        raise errors.NotFoundError(
            f"{ref!r}: no such version of {path} (see `jobrunner memory history`)")
    names = ", ".join(v.name for v in found[:5])
    raise errors.NotFoundError(f"{ref!r} matches several versions: {names}")


# -- the agent's lock ---------------------------------------------------------------------------


def agent_lock(project: Project, agent: str) -> RunLock:
    return project.store().lock(f"agent-{agent}")


def hold_agent(project: Project, agent: str, owner: str, job: str, wait: float,
               trace: Any = None) -> RunLock | dict[str, Any]:
    """Take the agent's lock, waiting up to `wait` seconds. Returns the held lock, or the
    holder's metadata if it stayed busy."""
    lock = agent_lock(project, agent)
    got = lock.try_acquire()
    if isinstance(got, Busy) and wait > 0:
        if trace is not None:
            trace.emit("memory.waiting", agent=agent, holder=got.holder)
        got = lock.try_acquire(timeout=wait)
    if isinstance(got, Busy):
        return got.holder or {}
    assert isinstance(got, Acquired)
    try:
        lock.mark_held(owner, job, agent=agent)
    except BaseException:
        lock.release(keep_meta=True)
        raise
    return lock


def busy_message(agent: str, holder: dict[str, Any]) -> str:
    who = holder.get("job") or "?"
    if holder.get("run_id") in ("edit", "restore"):
        return (f"agent {agent}'s memory is being changed by `jobrunner memory "
                f"{holder['run_id']}` (pid {holder.get('pid', '?')})")
    return (f"agent {agent}'s memory is in use by run {holder.get('run_id', '?')} of job "
            f"{who} (pid {holder.get('pid', '?')})")


# -- the end of a run ----------------------------------------------------------------------


def _today(job: Any) -> str:
    from jobrunner.clock import utcnow

    return utcnow().astimezone(job.schedule().zone).date().isoformat()


def write_after_run(project: Project, job: Any, run_id: str, path: Path, memory: Memory,
                    raw: bytes, update: Any, line: str | None, trace: Any,
                    keep: Callable[[], int]) -> str:
    """Write the agent's rewrite and jobrunner's failure-log line, once, at the end of the
    session (the caller holds the agent's lock). A person's edit made during the session
    wins: the agent's version goes to history/ as a proposal and `memory.conflict` is
    alerted. Returns a note for the report ("" when all went as planned); a disk that
    refuses the write is such a note too, not a failure of the run."""
    try:
        return _write_after_run(project, job, run_id, path, memory, raw, update, line, trace,
                                keep)
    except OSError as exc:
        trace.emit("memory.not_written", reason=str(exc))
        return f"{NOT_WRITTEN} ({path}): {exc.strerror or exc}"


def _write_after_run(project: Project, job: Any, run_id: str, path: Path, memory: Memory,
                     raw: bytes, update: Any, line: str | None, trace: Any,
                     keep: Callable[[], int]) -> str:
    budget = job.spec.memory.budget_tokens
    if update is None and line is None:
        return ""
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = b""
    note = ""
    base = memory
    if current != raw:
        note = _conflict(project, job, run_id, path, memory, update, trace, keep)
        try:
            base = decode(current, path)
        except MemoryFileError as exc:
            trace.emit("memory.not_written", reason=str(exc))
            return (note + f"\n{NOT_WRITTEN}: {exc}").strip()
        update = None  # the person's version stays; only jobrunner's own line goes on it
        if line is None:
            return note
    updated = base
    if update is not None:
        updated = keep_failure_lines(base, apply_update(base, update), budget)
    if line is not None:
        updated = with_failure_line(updated, line, budget)
        trace.emit("memory.failure_line", line=line)
    changed = save(path, updated.render().encode("utf-8"), current, run_id, project.redactor(),
                   keep=keep)
    trace.emit("memory.write", changed=changed, tokens=updated.tokens(), budget=budget)
    return note


def _conflict(project: Project, job: Any, run_id: str, path: Path, memory: Memory, update: Any,
              trace: Any, keep: Callable[[], int]) -> str:
    from jobrunner.alerts import outbox as alerts
    if update is None:
        proposal_note = "the agent proposed no rewrite"
        details: dict[str, Any] = {"path": str(path), "proposal": None}
    else:
        proposal = save_history(path, apply_update(memory, update).render().encode("utf-8"),
                                run_id, project.redactor(), "proposal",
                                keep=keep)
        proposal_note = f"the agent's version is saved as history/{proposal.name}"
        details = {"path": str(path), "proposal": str(proposal)}
    trace.emit("memory.conflict", **details)
    alerts.emit(project, "memory.conflict", job, run_id,
                f"{path} was edited during run {run_id} of {job.name}: the edited version "
                f"was kept; {proposal_note}", details)
    return f"memory was edited during the run: kept the edit; {proposal_note}"


def note_crash(project: Project, job: Any, meta: dict[str, Any], keep: Callable[[], int],
               then: Callable[[Path], Any] | None = None) -> None:
    """A run died without finishing (kill -9, OOM, reboot): put it in the agent's failure
    log, as if the run had written it. Best effort under the agent's lock: a memory that
    is busy or unreadable is left alone (the crash is still recorded and alerted)."""
    try:
        lock = hold_agent(project, job.agent, f"crash-note-{meta.get('run_id')}", job.name,
                          5.0)
    except errors.StateError as exc:
        log.warning("%s: could not note the crash of run %s in the memory: %s", job.name,
                    meta.get("run_id"), exc)
        return
    if isinstance(lock, dict):
        return  # busy: the crash is still recorded and alerted
    try:
        path = memory_path(project.memory_dir, job.agent)
        try:
            memory, current = load(path)
        except MemoryFileError:
            return
        line = failure_line(_today(job), str(meta.get("run_id")), "crashed", None,
                            f"the process (pid {meta.get('pid')} on {meta.get('host')}) died "
                            "mid-run; whatever it was doing may be half done", [])
        updated = with_failure_line(memory, line, job.spec.memory.budget_tokens)
        try:
            save(path, updated.render().encode("utf-8"), current, str(meta.get("run_id")),
                 project.redactor(), keep=keep)
            if then is not None:
                then(path)  # still under the agent's lock
        except OSError as exc:
            log.warning("%s: could not note the crash of run %s in %s: %s", job.name,
                        meta.get("run_id"), path, exc.strerror or exc)
    finally:
        lock.release()
