"""A job file's strict model (`jobs/NAME.toml`, SPEC §2) and the validated `Job`.

Reading, merging with `[defaults]` and the checks that need the project (tools, models,
the environment) are `config.jobs`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from jobrunner.formats.names import JOB_NAME
from jobrunner.formats.validation import Duration, StrictModel

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief

DEFAULT_MODEL = "claude-sonnet-4-6"
# Where each helper model is named in a job file.
HELPER_KEYS = {"gate": "gate.model", "summary": "limits.summarize_with"}


def _system_timezone() -> str:
    from jobrunner.config.schedule import system_timezone

    return system_timezone()


class Limits(StrictModel):
    """Hard limits enforced by the runner, never by asking the model."""

    max_steps: int = Field(20, ge=1)
    max_model_retries: int = Field(5, ge=0, le=20)
    max_tool_calls: int = Field(30, ge=0)
    max_invalid_calls: int = Field(2, ge=0)
    max_seconds: Duration = 300.0
    model_timeout: Duration = 300.0  # one model call; never longer than the run's time left
    # Stream model replies and cut one that stops arriving for this long (0: off).
    model_idle_timeout: Duration = 0.0
    max_input_tokens: int = Field(200_000, ge=1)
    max_output_tokens: int = Field(20_000, ge=1)
    max_tokens_per_call: int = Field(4096, ge=1)
    max_cost_usd: float = Field(0.50, ge=0)
    max_cost_usd_per_day: float = Field(2.00, ge=0)
    max_tool_result_chars: int = Field(16_000, ge=100)
    context_tokens: int = Field(60_000, ge=1000)
    # A cheap model that summarizes old tool results when they are elided ("": plain notes).
    summarize_with: str = ""
    summary_tokens: int = Field(400, ge=50, le=4096)  # each summary's reply allowance


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


class GatePolicy(StrictModel):
    """`[gate]`: a cheap model asked "does this match the job's intent?" before each
    consequential tool call and before `finish`; FAIL stops the run."""

    model: str = Field(min_length=1)  # any priced model, or replay:PATH
    before: list[Literal["low", "medium", "high"]] = Field(
        default_factory=lambda: ["medium", "high"])  # risk tiers checked before they run
    finish: bool = True  # also check the final summary against the prompt
    max_tokens: int = Field(256, ge=16, le=4096)  # the gate's reply allowance
    excerpt_chars: int = Field(6000, ge=200, le=200_000)  # of what the run established


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
    # Undo the run's compensable side effects when it ends aborted, failed or at a limit.
    compensate_on_abort: bool = True
    heartbeat_url: str = ""
    prompt: str = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    lock: LockPolicy = Field(default_factory=LockPolicy)
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
    tool: dict[str, ToolPolicy] = Field(default_factory=dict)
    alerts: AlertRouting = Field(default_factory=AlertRouting)
    gate: GatePolicy | None = None  # off unless the job (or [defaults]) has a [gate] table

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

    def with_model(self, model: str) -> Job:
        """The same job answered by another model (a replay script, for `jobrunner test`)."""
        from dataclasses import replace

        return replace(self, spec=self.spec.model_copy(update={"model": model}))

    def helper_models(self) -> dict[str, str]:
        """The models that help this job's runs, by purpose (`gate`, `summary`)."""
        found = {}
        if self.spec.gate is not None:
            found["gate"] = self.spec.gate.model
        if self.spec.limits.summarize_with:
            found["summary"] = self.spec.limits.summarize_with
        return found

    def models(self) -> list[tuple[str, str]]:
        """(key, model) of every model the job calls: its agent's, then its helpers'."""
        return [("model", self.spec.model),
                *((HELPER_KEYS[p], m) for p, m in self.helper_models().items())]

    @property
    def brief(self) -> JobBrief:
        """What taking the job's lock needs of it (see `config.checked`)."""
        from jobrunner.config.checked import JobBrief

        return JobBrief(name=self.name, path=self.path, agent=self.agent,
                        model=self.spec.model, models=tuple(self.models()),
                        timezone=self.spec.timezone,
                        stale_after=self.spec.lock.stale_after,
                        max_cost_usd_per_day=self.limits.max_cost_usd_per_day)

    def schedule(self):
        from jobrunner.config.schedule import parse_schedule

        return parse_schedule(self.spec.schedule, self.spec.timezone)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, tables merged key by key (defaults under a job)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
