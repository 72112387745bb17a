"""What a run has validated, remembered by a fingerprint of everything validation read.

A run validates its job in full (the job file merged with `[defaults]`, jobrunner.toml,
the tool files imported, the schedule, the model) before anything else. Most runs of an
unchanged job find it as the last one left it; a cron tick that finds the job's lock
held by a live run has only to record that it skipped. So after a full validation the
runner records, in `STATE_DIR/checked/NAME.json`, a fingerprint of its inputs and the
few validated values that taking the lock needs (`JobBrief`). The next run computes the
fingerprint again (reading those files, no model built); when it matches, the run takes
its lock on the brief and validates in full only once it holds the lock. Any change to
an input makes the fingerprint differ, and the run validates in full first, as always.

The fingerprint covers: the job file and jobrunner.toml (bytes), every file under
jobs/tools/ (bytes), the system time zone (a job's default), and the installed code
(`installed.code_stamp`: Python, jobrunner's modules, the library folders). The replay
script a brief names must still exist. What a tool file imports from outside jobs/tools/
is not covered: a run that takes the lock imports the tool files anew.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT = 2  # 2: the brief lists every model the job calls


@dataclass(frozen=True)
class JobBrief:
    """What a run needs of a validated job until it holds the job's lock."""

    name: str
    path: Path
    agent: str
    model: str
    models: tuple[tuple[str, str], ...]  # (job file key, model): the agent's, helpers'
    timezone: str
    stale_after: float
    max_cost_usd_per_day: float

    @property
    def brief(self) -> JobBrief:
        """Itself: a `Job` and its brief both answer `.brief`."""
        return self


@functools.cache
def _code_stamp() -> str:
    """The installed code, once per process (see `installed.code_stamp`)."""
    from jobrunner.installed import code_stamp

    return code_stamp()


def _content(digest: Any, path: Path | str) -> None:
    try:
        digest.update(Path(path).read_bytes())
        digest.update(b"\0ok\0")
    except OSError as exc:  # absent or unreadable is an input too: the full path says why
        digest.update(f"\0{type(exc).__name__}\0".encode())


def fingerprint(project: Any, name: str) -> str:
    """The digest of everything a full validation of job `name` reads."""
    from jobrunner.config.schedule import system_timezone
    from jobrunner.installed import files_under

    digest = hashlib.sha256(f"{FORMAT} {_code_stamp()} {name}\n".encode())
    digest.update(f"tz {system_timezone()}\n".encode())
    for path in (project.job_path(name), project.settings_path):
        digest.update(f"file {path}\n".encode())
        _content(digest, path)
    for path, _ in files_under(project.tools_dir):
        digest.update(f"tool {path}\n".encode())
        _content(digest, path)
    return digest.hexdigest()


def _record_path(project: Any, name: str) -> Path:
    return project.state_dir / "checked" / f"{name}.json"


def recall(project: Any, name: str, stamp: str) -> JobBrief | None:
    """The brief of job `name` if a run validated exactly these inputs (`stamp`), else
    None. Installs the validated settings the state needs on `project`."""
    try:
        record = json.loads(_record_path(project, name).read_text(encoding="utf-8"))
        if record.get("stamp") != stamp:
            return None
        values = dict(record["brief"])
        values["path"] = Path(values["path"])
        values["models"] = tuple((str(k), str(m)) for k, m in values["models"])
        brief = JobBrief(**values)
        settings = dict(record["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: the full validation writes a new one
    if any(m.startswith("replay:") and not (project.root / m.removeprefix("replay:")).is_file()
           for _, m in brief.models):
        return None
    project.known_settings = settings
    return brief


def remember(project: Any, name: str, stamp: str, brief: JobBrief,
             settings: dict[str, Any]) -> None:
    """Record that a full validation of these inputs gave `brief` (and these settings).
    A record the disk refuses is only a cost: the next run validates in full."""
    path = _record_path(project, name)
    data = {"stamp": stamp, "brief": {**asdict(brief), "path": str(brief.path)},
            "settings": settings}
    text = json.dumps(data, sort_keys=True)
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        return  # a full or read-only state disk: the run itself reports what matters
