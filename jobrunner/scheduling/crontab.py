"""System cron: the crontab lines that run a project's jobs, and the marked block that
`jobrunner cron --install` keeps in the user's crontab.

Every line runs `jobrunner --home ROOT run --due NAME --trigger cron`: the run works out
the slot from the job's own schedule and time zone, so a slot runs once even when cron
and the daemon (or two hosts' lines) both launch it. cron reads expressions in the
system's time zone and Debian's cron has no CRON_TZ, so a job in another zone gets a
line that fires every minute and lets `run --due` decide; a job in the system's zone
gets its own expression. cron runs with a bare environment and $HOME as working
directory: the executable and the project are absolute paths. stdout is discarded
(`run` prints nothing on success); stderr, where failure reports go, reaches cron's
mail, so mail arrives for failures only.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jobrunner.config.jobfile import Job
from jobrunner.config.project import Project
from jobrunner.config.schedule import ALIASES
from jobrunner.errors import JobrunnerError
from jobrunner.scheduling.due import jobrunner_command

EVERY_MINUTE = "* * * * *"
_FIELD_MAX = [59, 23, 31, 12, 7]


class CronError(JobrunnerError):
    """The crontab could not be read or written."""


def system_timezone() -> str:
    """The zone cron reads expressions in: the system's (/etc/localtime), not $TZ."""
    from jobrunner.config.schedule import system_timezone as zone

    return zone(honour_tz_env=False)


def _zone_file(name: str) -> bytes | None:
    import zoneinfo

    for base in zoneinfo.TZPATH:
        path = Path(base) / name
        if path.is_file():
            return path.read_bytes()
    return None


def same_zone(a: str, b: str) -> bool:
    """Whether two zone names follow the same rules (e.g. `UTC` and `Etc/UTC`)."""
    if a == b:
        return True
    data = _zone_file(a)
    return data is not None and data == _zone_file(b)


def cron_expression(expression: str) -> str:
    """The expression as any crontab reads it: aliases expanded, `N/S` as `N-MAX/S`."""
    text = " ".join(expression.split())
    text = ALIASES.get(text.lower(), text)
    fields = []
    for field, high in zip(text.split(" "), _FIELD_MAX, strict=True):
        parts = [re.sub(r"^(\w+)/(\d+)$", rf"\1-{high}/\2", part) for part in field.split(",")]
        fields.append(",".join(parts))
    return " ".join(fields)


@dataclass
class CronLine:
    job: str
    expression: str  # what cron fires on
    command: str
    note: str

    def render(self) -> str:
        return f"# {self.note}\n{self.expression} {self.command}"


def line_for(project: Project, job: Job, system_zone: str) -> CronLine:
    """The crontab line (and a comment saying why it looks so) for one job."""
    argv = [*jobrunner_command(), "--home", str(project.root), "run", "--due", job.name,
            "--trigger", "cron"]
    # `%` ends a crontab command (it means newline): escape it.
    command = " ".join(shlex.quote(a) for a in argv).replace("%", "\\%") + " >/dev/null"
    spec = job.spec
    # The comment quotes the schedule on one line: a newline in it (`"0 8 * * *\n"` parses,
    # whitespace separating fields) would start a crontab line that crontab rejects.
    shown = " ".join(spec.schedule.split())
    if same_zone(spec.timezone, system_zone):
        return CronLine(job.name, cron_expression(spec.schedule), command,
                        f"{job.name}: {shown} ({spec.timezone})")
    return CronLine(job.name, EVERY_MINUTE, command,
                    f"{job.name}: {shown} in {spec.timezone}; cron runs in "
                    f"{system_zone}, so `run --due` checks every minute")


def markers(project: Project) -> tuple[str, str]:
    return f"# BEGIN jobrunner {project.root}", f"# END jobrunner {project.root}"


def render_block(project: Project, lines: list[CronLine]) -> str:
    begin, end = markers(project)
    body = [begin, "# Written by `jobrunner cron --install`; `--uninstall` removes this block "
            "and re-installing replaces it."]
    body += [line.render() for line in lines] or ["# (no jobs)"]
    return "\n".join([*body, end]) + "\n"


def replace_block(crontab: str, project: Project, block: str | None) -> str:
    """`crontab` with this project's block replaced by `block` (None: removed). Every
    other line is kept as it was; a new block goes at the end."""
    begin, end = markers(project)
    lines = crontab.splitlines(keepends=True)
    kept: list[str] = []
    position: int | None = None
    inside = False
    for line in lines:
        stripped = line.rstrip("\r\n")
        if not inside and stripped == begin:
            inside = True
            position = len(kept) if position is None else position
            continue
        if inside:
            inside = stripped != end
            continue
        kept.append(line)
    if inside:
        raise CronError(f"the crontab has `{begin}` without `{end}`: fix it by hand "
                        "(crontab -e); nothing was changed")
    if block is not None:
        if position is None:
            if kept and not kept[-1].endswith("\n"):
                kept[-1] += "\n"
            position = len(kept)
        kept.insert(position, block)
    return "".join(kept)


def _crontab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["crontab", *args], input=stdin, capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError as exc:
        raise CronError("the `crontab` command was not found: install cron (Debian/Ubuntu: "
                        "apt-get install cron), or use `jobrunner daemon`") from exc


def read_crontab() -> str:
    """The user's crontab (empty when there is none)."""
    done = _crontab("-l")
    if done.returncode != 0:
        if "no crontab" in done.stderr.lower():
            return ""
        raise CronError(f"crontab -l failed: {done.stderr.strip()}")
    return done.stdout


def write_crontab(text: str) -> None:
    done = _crontab("-", stdin=text)
    if done.returncode != 0:
        raise CronError(f"crontab - refused the new table: {done.stderr.strip()}")


def update(project: Project, block: str | None) -> bool:
    """Put (or remove, with None) this project's block; returns whether anything changed."""
    current = read_crontab()
    wanted = replace_block(current, project, block)
    if wanted == current:
        return False
    write_crontab(wanted)
    return True


def installed_block(project: Project, crontab: str) -> str | None:
    """This project's block as the crontab holds it (None: not installed)."""
    begin, end = markers(project)
    lines = crontab.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == begin]
    if not starts:
        return None
    block = []
    for line in lines[starts[0]:]:
        block.append(line)
        if line.rstrip("\r\n") == end:
            break
    return "".join(block)


def cron_running() -> bool:
    """Whether a cron daemon (`cron`, `crond`) runs on this host (Linux: by /proc)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("cron", "crond"):
                return True
        except OSError:
            continue  # the process ended while we looked
    return False
