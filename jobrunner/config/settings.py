"""`jobrunner.toml`: project-wide settings, defaults for every job, pricing, channels."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from jobrunner.config.jobfile import JobFile, merge
from jobrunner.errors import ConfigError
from jobrunner.formats.mcp import McpServerConfig, ServerName
from jobrunner.formats.validation import Duration, StrictModel, in_line_order, located_errors
from jobrunner.models.pricing import BUILTIN_PRICES, Price


class PriceSetting(StrictModel):
    """USD per million tokens for one model."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)

    def price(self) -> Price:
        return Price(
            input=self.input,
            output=self.output,
            cache_write=self.cache_write if self.cache_write is not None else self.input * 1.25,
            cache_read=self.cache_read if self.cache_read is not None else self.input * 0.1,
        )


class SmtpSettings(StrictModel):
    """Outgoing mail for the `send_email` tool and the email alert channel."""

    host: str
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str = ""
    password_env: str = ""  # the password is read from this environment variable
    sender: str = "jobrunner@localhost"
    timeout: Duration = 10.0


class AlertChannel(StrictModel):
    """One alert destination (`type` says which keys apply)."""

    type: Literal["log", "webhook", "email", "command"]
    events: list[str] = Field(default_factory=lambda: ["*"])
    jobs: list[str] = Field(default_factory=lambda: ["*"])
    url: str = ""  # webhook
    to: list[str] = Field(default_factory=list)  # email
    command: list[str] = Field(default_factory=list)  # command
    path: str = ""  # log: another file besides the built-in alert log
    timeout: Duration = 5.0

    @field_validator("events")
    @classmethod
    def _events_known(cls, value: list[str]) -> list[str]:
        from jobrunner.events import ALERT_EVENTS

        for event in value:
            if event != "*" and event not in ALERT_EVENTS:
                raise ValueError(f"unknown event {event!r} (known: {', '.join(ALERT_EVENTS)})")
        return value


    @model_validator(mode="after")
    def _needs(self) -> AlertChannel:
        # A channel missing what it needs would only fail at 3 a.m., when an alert is due.
        if self.type == "webhook" and not self.url.startswith(("http://", "https://")):
            raise ValueError("a webhook channel needs url = \"https://...\"")
        if self.type == "email" and not self.to:
            raise ValueError("an email channel needs to = [\"address\", ...]")
        if self.type == "command" and not self.command:
            raise ValueError("a command channel needs command = [\"program\", \"arg\", ...]")
        return self


class AlertSettings(StrictModel):
    channels: list[AlertChannel] = Field(default_factory=list)
    cooldown: Duration = 3600.0  # the same event, job and cause alert once per this
    # After a failed delivery, runs leave the channel alone this long, doubling per
    # failure up to `retry_backoff_max` (`check` always tries).
    retry_backoff: Duration = 30.0
    retry_backoff_max: Duration = 600.0
    # `run.cost_spike`: a run costing more than this many times the median of the job's
    # last 10 completed runs (once it has 3); 0 turns it off.
    cost_spike_factor: float = Field(3.0, ge=0)
    # `job.degraded` (from `check`): more than half of the job's last this-many runs did
    # not complete; 0 turns it off.
    degraded_runs: int = Field(5, ge=0, le=1000)


class OtelSettings(StrictModel):
    """`[otel]` in jobrunner.toml: where finished runs are exported, if anywhere."""

    # Base URL of an OTLP/HTTP collector (`/v1/traces` is added unless given); empty: the
    # OTEL_EXPORTER_OTLP_* variables decide.
    endpoint: str = ""
    timeout: Duration = Field(default=2.0, gt=0, le=10)  # a dead collector costs at most this
    service_name: str = "jobrunner"

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError('expected an OTLP/HTTP URL like "http://localhost:4318"')
        return value


class Settings(StrictModel):
    """The whole of `jobrunner.toml`; every key optional."""

    @field_validator("state_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL: postgresql://USER@HOST:PORT/DB")
        return value


    state_dir: str = ""
    # The shared state of several hosts: `postgresql://USER@HOST:PORT/DB` (empty: the
    # embedded SQLite state in state_dir). JOBRUNNER_STATE_URL wins over it.
    state_url: str = ""
    state_password_env: str = ""  # the variable holding its password (else PGPASSWORD...)
    env_file: str = ""
    secrets: list[str] = Field(default_factory=list)  # env var names whose values are redacted
    email_outbox: str = "outbox"  # where send_email writes .eml files when [smtp] is absent
    # How long one jobs/tools/*.py file may take to import before it counts as broken.
    tool_import_timeout: Duration = Field(10.0, gt=0)
    defaults: dict[str, Any] = Field(default_factory=dict)  # validated against the job model
    pricing: dict[str, PriceSetting] = Field(default_factory=dict)
    smtp: SmtpSettings | None = None
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    otel: OtelSettings | None = None  # OpenTelemetry export of finished runs
    mcp: dict[ServerName, McpServerConfig] = Field(default_factory=dict)  # MCP tool servers

    @model_validator(mode="after")
    def _email_needs_smtp(self) -> Settings:
        if self.smtp is None and any(c.type == "email" for c in self.alerts.channels):
            raise ValueError("an email alert channel needs an [smtp] table")
        return self

    def prices(self) -> dict[str, Price]:
        """Built-in prices with this project's overrides applied."""
        table = dict(BUILTIN_PRICES)
        table.update({name: p.price() for name, p in self.pricing.items()})
        return table


def load_settings(project: Any) -> Settings:
    """Validate the project's `jobrunner.toml` (absent: all defaults)."""
    raw, text = project.raw_settings
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(in_line_order(located_errors(project.settings_path, text, exc,
                                                       Settings))) from exc
    if settings.defaults:
        check_defaults(project, settings.defaults, text)
    return settings


def check_defaults(project: Any, defaults: dict[str, Any], text: str) -> None:
    """Validate `[defaults]` of jobrunner.toml on its own so its errors point there."""
    probe = merge({"schedule": "@daily", "prompt": "x"}, defaults)
    try:
        JobFile.model_validate(probe)
    except ValidationError as exc:
        problems = []
        for line in located_errors(project.settings_path, text, exc, JobFile):
            path, lineno, rest = line.split(":", 2)
            key = rest.strip().split(":", 1)[0]
            # Re-point at the [defaults] table, where these keys were written.
            from jobrunner.formats.tomlpos import key_lines, line_of

            real = line_of(key_lines(text), ("defaults", *key.split(".")))
            problems.append(f"{path}:{real}:{rest}")
        raise ConfigError(problems) from exc
