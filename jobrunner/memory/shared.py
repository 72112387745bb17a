"""Memory shared by several hosts (a PostgreSQL state): the state keeps each agent's
memory as numbered versions, and every host's `memory/AGENT/MEMORY.md` stays the
hand-editable view of the newest one.

Both steps run under the agent's lock, which spans hosts, so one writer at a time:
- `pull`, before a session: a MEMORY.md nobody edited here since this host last synced
  becomes the newest version (its old text goes to history/); one a person edited here
  becomes the newest version itself. If another host wrote a version meanwhile too, the
  person's edit stays (the conflict rule of one host), the other version is kept in
  history/ as a proposal and `memory.conflict` is alerted.
- `push`, after the session (or a `memory edit`/`restore`, or a crash note): what was
  written here becomes the next version, written on top of the version read (compare-
  and-swap), so two hosts never write over each other and no version is lost.

This host's last sync (version and the file's hash) is a small record in its own state
folder; the embedded state needs none of this (`State.shares_memory`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.hosts import this_host
from jobrunner.locks.file import atomic_write_json
from jobrunner.memory.store import save, save_history

if TYPE_CHECKING:
    from jobrunner.config.project import Project


@dataclass
class Synced:
    """What this host last read or wrote of an agent's shared memory."""

    version: int = 0
    sha: str | None = None


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _record(project: Project, agent: str) -> Path:
    return project.state_dir / "memory-sync" / f"{agent}.json"


def _synced(project: Project, agent: str) -> Synced:
    try:
        data = json.loads(_record(project, agent).read_text(encoding="utf-8"))
        return Synced(int(data["version"]), data.get("sha"))
    except (OSError, ValueError, KeyError, TypeError):
        return Synced()


def _remember(project: Project, agent: str, version: int, content: bytes) -> None:
    path = _record(project, agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"version": version, "sha": _sha(content)})


def pull(project: Project, store: Any, agent: str, path: Path,
         keep: Callable[[], int]) -> str:
    """Bring this host's MEMORY.md up to the agent's newest version (see the module).
    Returns a note for the run's report ("" when all went as planned)."""
    local = path.read_bytes() if path.is_file() else b""
    try:
        local_text = local.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # not text: loading it stops the run, and nothing is shared
    latest = store.memory_latest(agent)
    synced = _synced(project, agent)
    if latest is None:
        if local and store.memory_put(agent, 0, local_text, f"seed@{this_host()}"):
            _remember(project, agent, 1, local)
        return ""
    version, text = latest
    edited_here = synced.sha is not None and _sha(local) != synced.sha
    if not edited_here:
        save(path, text.encode("utf-8"), local, f"v{version}", project.redactor(), keep=keep)
        _remember(project, agent, version, text.encode("utf-8"))
        return ""
    note = ""
    if version != synced.version:  # another host wrote a version since this one synced
        proposal = save_history(path, text.encode("utf-8"), f"v{version}",
                                project.redactor(), "proposal", keep=keep)
        note = (f"{path} was edited here while another host wrote version {version}: the "
                f"edit was kept; that version is saved as history/{proposal.name}")
        from jobrunner.alerts import outbox as alerts

        alerts.emit(project, "memory.conflict", None, None, note,
                    {"path": str(path), "agent": agent, "version": version,
                     "proposal": str(proposal)})
    if store.memory_put(agent, version, local_text, f"edit@{this_host()}"):
        _remember(project, agent, version + 1, local)
    return note


def push(project: Project, store: Any, agent: str, path: Path, source: str,
         keep: Callable[[], int]) -> str:
    """Make what this host wrote to MEMORY.md the agent's next version. Returns a note
    ("" when all went as planned)."""
    local = path.read_bytes() if path.is_file() else b""
    synced = _synced(project, agent)
    if not local or _sha(local) == synced.sha:
        return ""
    if store.memory_put(agent, synced.version, local.decode("utf-8"), source):
        _remember(project, agent, synced.version + 1, local)
        return ""
    # Someone wrote a version without the agent's lock: theirs stays, ours is a proposal.
    proposal = save_history(path, local, source, project.redactor(), "proposal", keep=keep)
    latest = store.memory_latest(agent)
    if latest is not None:
        save(path, latest[1].encode("utf-8"), local, f"v{latest[0]}", project.redactor(),
             keep=keep)
        _remember(project, agent, latest[0], latest[1].encode("utf-8"))
    return (f"another host wrote the memory of {agent} meanwhile: its version stays; this "
            f"run's is saved as history/{proposal.name}")
