"""Job files (`jobs/NAME.toml`): the strict model, defaults, and located validation."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from jobrunner.errors import ConfigError, NotFoundError
from jobrunner.project import JOB_NAME, Project, read_toml
from jobrunner.validation import Duration, StrictModel, located_errors

DEFAULT_MODEL = "claude-sonnet-4-6"


def _system_timezone() -> str:
    from jobrunner.schedule import system_timezone

    return system_timezone()


class Limits(StrictModel):
    """Hard limits enforced by the runner, never by asking the model."""

    max_steps: int = Field(20, ge=1)
    max_model_retries: int = Field(5, ge=0, le=20)
    max_tool_calls: int = Field(30, ge=0)
    max_invalid_calls: int = Field(2, ge=0)
    max_seconds: Duration = 300.0
    model_timeout: Duration = 300.0  # one model call; never longer than the run's time left
    max_input_tokens: int = Field(200_000, ge=1)
    max_output_tokens: int = Field(20_000, ge=1)
    max_tokens_per_call: int = Field(4096, ge=1)
    max_cost_usd: float = Field(0.50, ge=0)
    max_cost_usd_per_day: float = Field(2.00, ge=0)
    max_tool_result_chars: int = Field(16_000, ge=100)
    context_tokens: int = Field(60_000, ge=1000)


class LockPolicy(StrictModel):
    stale_after: Duration = 1800.0
    on_stale: Literal["alert", "terminate"] = "alert"
    terminate_grace: Duration = 30.0  # SIGTERM, then SIGKILL after this
    after_crash: Literal["run", "hold"] = "run"


class MemoryPolicy(StrictModel):
    budget_tokens: int = Field(500, ge=50)
    history: int = Field(30, ge=1, le=10_000)  # earlier versions kept in history/


class ToolPolicy(StrictModel):
    """A job's `[tool.NAME]` table: tightens the tool's own declaration for this job."""

    risk: Literal["low", "medium", "high"] | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    idempotency_key: str | None = None
    paths: list[str] | None = None
    after_untrusted: Literal["run", "approve"] = "run"


class AlertRouting(StrictModel):
    events: list[str] = Field(default_factory=lambda: ["*"])


class JobFile(StrictModel):
    """Every key a job file may hold (SPEC §2)."""

    description: str = ""
    schedule: str
    timezone: str = Field(default_factory=_system_timezone)
    model: str = DEFAULT_MODEL
    agent: str = ""
    tools: list[str] = Field(default_factory=list)
    pause_after: int = Field(3, ge=1)
    misfire_grace: Duration = 300.0
    jitter: Duration = 0.0
    approval_ttl: Duration = 86400.0
    continue_after_approval: bool = False
    heartbeat_url: str = ""
    prompt: str = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    lock: LockPolicy = Field(default_factory=LockPolicy)
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
    tool: dict[str, ToolPolicy] = Field(default_factory=dict)
    alerts: AlertRouting = Field(default_factory=AlertRouting)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError, IsADirectoryError...
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str) -> str:
        if value and not JOB_NAME.match(value):
            raise ValueError("agent names match [a-z0-9][a-z0-9_-]{0,63}")
        return value

    @field_validator("heartbeat_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("alerts")
    @classmethod
    def _events(cls, value: AlertRouting) -> AlertRouting:
        from jobrunner.events import ALERT_EVENTS

        for event in value.events:
            if event != "*" and event not in ALERT_EVENTS:
                raise ValueError(f"unknown event {event!r}")
        return value


@dataclass(frozen=True)
class Job:
    """A validated job: its file's settings plus where it lives."""

    name: str
    path: Path
    spec: JobFile

    @property
    def agent(self) -> str:
        return self.spec.agent or self.name

    @property
    def limits(self) -> Limits:
        return self.spec.limits

    def schedule(self):
        from jobrunner.schedule import parse_schedule

        return parse_schedule(self.spec.schedule, self.spec.timezone)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_defaults(project: Project, defaults: dict[str, Any], text: str) -> None:
    """Validate `[defaults]` of jobrunner.toml on its own so its errors point there."""
    probe = _merge({"schedule": "@daily", "prompt": "x"}, defaults)
    try:
        JobFile.model_validate(probe)
    except ValidationError as exc:
        problems = []
        for line in located_errors(project.settings_path, text, exc, JobFile):
            path, lineno, rest = line.split(":", 2)
            key = rest.strip().split(":", 1)[0]
            # Re-point at the [defaults] table, where these keys were written.
            from jobrunner.tomlpos import key_lines, line_of

            real = line_of(key_lines(text), ("defaults", *key.split(".")))
            problems.append(f"{path}:{real}:{rest}")
        raise ConfigError(problems) from exc


def _semantic_problems(project: Project, job: Job, text: str) -> list[str]:
    """Checks that need more than a type: the schedule, tools and model exist."""
    from jobrunner.schedule import ScheduleError, parse_schedule
    from jobrunner.tomlpos import key_lines, line_of

    lines = key_lines(text)
    spec = job.spec
    problems = []

    def where(*path: str) -> str:
        return f"{job.path}:{line_of(lines, path)}"

    try:
        parse_schedule(spec.schedule, spec.timezone)
    except ScheduleError as exc:
        problems.append(f"{where('schedule')}: schedule: {exc}")
    from jobrunner.tools.registry import tool_set

    loaded = tool_set(project)
    for name in spec.tools:
        if name not in loaded.tools:
            import difflib

            # A tool file that failed to load explains its own tools being unknown.
            hint = loaded.why_unknown(name)
            if hint is None:
                close = difflib.get_close_matches(name, sorted(loaded.tools), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where('tools')}: tools: unknown tool {name!r}{hint}")
    for name in spec.tool:
        if name not in spec.tools:
            problems.append(
                f"{where('tool', name)}: tool.{name}: policy for a tool the job does not list"
            )
    problems.extend(_policy_problems(project, job, where, loaded.tools))
    if spec.model.startswith("replay:"):
        script = project.root / spec.model.removeprefix("replay:")
        if not script.is_file():
            problems.append(f"{where('model')}: model: replay script {script} does not exist")
    elif spec.model not in project.settings.prices():
        problems.append(
            f"{where('model')}: model: unknown model {spec.model!r} (known: "
            f"{', '.join(sorted(project.settings.prices()))}; add a [pricing.\"{spec.model}\"] "
            "table to jobrunner.toml for a newer one)"
        )
    return problems


def _policy_problems(project: Project, job: Job, where, tools: dict[str, Any]) -> list[str]:
    """A job's `[tool.NAME]` tables may tighten a tool's policy, never loosen it."""
    from jobrunner.tools.api import policy_problems

    problems = []
    for name in job.spec.tools:
        if name not in tools:
            continue
        policy = job.spec.tool.get(name) or ToolPolicy()
        for key, problem in policy_problems(tools[name], policy):
            problems.append(f"{where('tool', name, key)}: tool.{name}.{key}: {problem}")
    return problems


def load_job(project: Project, name: str) -> Job:
    """Read, merge with defaults and validate one job; ConfigError lists every problem."""
    if not JOB_NAME.match(name):
        raise ConfigError(f"{name!r}: job names match [a-z0-9][a-z0-9_-]{{0,63}}")
    path = project.job_path(name)
    if not path.is_file():
        known = ", ".join(project.job_names()) or "none"
        raise NotFoundError(f"{path}: no such job (jobs: {known})")
    raw, text = read_toml(path)
    settings = project.settings
    if isinstance(raw.get("tools"), dict):
        raise ConfigError(
            f"{path}:1: tools: a list of tool names; per-tool policy goes in [tool.NAME] tables"
        )
    merged = _merge(settings.defaults, raw)
    try:
        spec = JobFile.model_validate(merged)
    except ValidationError as exc:
        fallback = (project.settings_path, project.raw_settings[1])
        raise ConfigError(located_errors(path, text, exc, JobFile, fallback)) from exc
    job = Job(name=name, path=path, spec=spec)
    problems = _semantic_problems(project, job, text)
    if problems:
        raise ConfigError(problems)
    return job


def load_all(project: Project) -> tuple[list[Job], list[str]]:
    """Every declared job that validates, and the problems of those that do not (and of
    each tool file that does not load, whether or not a job needs it)."""
    from jobrunner.tools.registry import tool_file_problems

    jobs, problems = [], tool_file_problems(project)
    for name in project.job_names():
        if not JOB_NAME.match(name):
            continue
        try:
            jobs.append(load_job(project, name))
        except ConfigError as exc:
            problems.extend(exc.problems)
    bad = [p.stem for p in project.jobs_dir.glob("*.toml") if not JOB_NAME.match(p.stem)]
    problems.extend(f"{project.jobs_dir / (n + '.toml')}:1: name: job names match "
                    "[a-z0-9][a-z0-9_-]{0,63}" for n in bad)
    return jobs, problems
