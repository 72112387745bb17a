"""Alerts: one JSON object per event (SPEC §9), written to the always-on log and routed
to the project's channels, with a cooldown and an outbox.

- The log (`state_dir/alerts.jsonl`) receives every alert that is not a repeat.
- The same event for the same job and cause is sent once per `alerts.cooldown` (or once
  ever, `once=True`, for things that happen once by nature: a crashed run, a stale
  holder, a missed slot); repeats are counted on the first alert, not sent.
- Each (alert, channel) delivery is a row in the outbox; a delivery that fails stays
  `pending` and is retried by the next run or `jobrunner check`. A channel that failed
  once in this process is not tried again by it, so a dead channel costs one timeout.
- A failing channel also backs off across processes: the outbox sweep at the end of each
  run leaves it alone for `alerts.retry_backoff` (30 s) after its first failure, doubling
  up to `alerts.retry_backoff_max` (10 min), so a dead
  webhook does not add its timeout to every cron tick. A new alert is still tried at once
  (it may be the one that matters), and `check` always tries: the watchdog line bounds how
  long a revived channel waits for its backlog.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from jobrunner.clock import iso, utcnow
from jobrunner.errors import JobrunnerError
from jobrunner.state import State

if TYPE_CHECKING:
    from jobrunner.config.jobfile import Job
    from jobrunner.config.project import Project

log = logging.getLogger("jobrunner")

# Channels that failed during this process: not retried again by it (bounded slowness).
_BROKEN: set[str] = set()
# A delivery claimed by a process that died mid-send is taken up again after this.
_CLAIM_TIMEOUT = timedelta(minutes=5)


class Alert(BaseModel):
    """The alert contract (SPEC §9)."""

    event: str
    job: str | None
    run_id: str | None
    message: str
    at: str
    details: dict[str, Any]


def alert_log_path(state_dir: Path) -> Path:
    return state_dir / "alerts.jsonl"


def channel_key(channel: Any) -> str:
    """A stable name for a configured channel that reveals no secret (webhook URLs are)."""
    import hashlib

    digest = hashlib.sha256(channel.model_dump_json().encode()).hexdigest()[:8]
    return f"{channel.type}-{digest}"


def channel_label(channel: Any) -> str:
    """How a channel is shown to people: enough to recognise it, no secret in it."""
    if channel.type == "webhook":
        from urllib.parse import urlsplit

        parts = urlsplit(channel.url)
        port = f":{parts.port}" if parts.port else ""
        return f"webhook {parts.scheme}://{parts.hostname}{port}/…"
    if channel.type == "email":
        return "email to " + ", ".join(channel.to)
    if channel.type == "command":
        return "command " + (channel.command[0] if channel.command else "?")
    return "log " + channel.path


def alert_settings(project: Project) -> Any:
    """The project's `[alerts]` settings. When jobrunner.toml is invalid elsewhere, its
    `[alerts]` table alone, if that validates: the alert saying the file is broken must
    still reach the channels."""
    from jobrunner.config.settings import AlertSettings
    from jobrunner.errors import ConfigError

    if not project.reaches_out:  # a dry run's alerts stay in its own log
        return AlertSettings()
    try:
        return project.settings.alerts
    except ConfigError:
        from pydantic import ValidationError

        try:
            raw, _ = project.raw_settings
            return AlertSettings.model_validate(raw.get("alerts") or {})
        except (ConfigError, ValidationError):
            return AlertSettings()


def _matches(names: list[str], value: str | None) -> bool:
    return "*" in names or (value is not None and value in names)


def _job_events(project: Project, job: str | None) -> list[str]:
    """The job's own `[alerts] events` routing (all events when it cannot be read)."""
    if not job:
        return ["*"]
    from jobrunner.config.jobs import load_job

    try:
        return list(load_job(project, job).spec.alerts.events)
    except JobrunnerError:
        return ["*"]


def routed_channels(project: Project, event: str, job: str | None,
                    job_events: list[str] | None = None) -> list[Any]:
    """The configured channels this alert goes to: the channel's `events` and `jobs`
    must match, and the job's own `[alerts] events` must allow the event."""
    channels = alert_settings(project).channels
    if not channels:
        return []
    allowed = job_events if job_events is not None else _job_events(project, job)
    if event != "alert.test" and not _matches(allowed, event):
        return []
    return [c for c in channels if _matches(c.events, event) and
            (job is None or _matches(c.jobs, job))]


def emit(
    project: Project,
    event: str,
    job: Job | str | None,
    run_id: str | None,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    cause: str | None = None,
    once: bool = False,
    job_events: list[str] | None = None,
) -> Alert:
    """Raise an alert: log it, queue it for its channels, try to deliver it now.

    `cause` tells repeats apart (default: the run id); a repeat inside the cooldown (or
    ever, with `once`) is counted and not sent. Never raises for a delivery problem.
    `job` is the Job when the caller has it (its `[alerts] events` route the alert), else
    a job's name (its file is read for the routing) or None.
    Message and details pass the project's Redactor before they are encoded; the outbox
    row (the store) and the alert log line pass it again as text.
    """
    if job is not None and not isinstance(job, str):
        job, job_events = job.name, list(job.spec.alerts.events)
    alert, _ = _raise(project, event, job, run_id, message, details, cause, once, job_events)
    return alert


def _raise(project, event, job, run_id, message, details, cause, once, job_events,
           channels: list[Any] | None = None) -> tuple[Alert, int | None]:
    redactor = project.redactor()
    alert = Alert(
        event=event, job=job, run_id=run_id, message=redactor.text(message),
        at=iso(utcnow()) or "", details=redactor.data(details or {}),
    )
    cause = cause if cause is not None else (run_id or "")
    if channels is None:
        channels = routed_channels(project, event, job, job_events)
    body = json.dumps(alert.model_dump())
    alert_id: int | None = None
    try:
        store = project.store()
        alert_id = _record(store, alert, cause, once, alert_settings(project).cooldown,
                           body, [channel_key(c) for c in channels])
    except JobrunnerError as exc:
        # The log below still has it; say why the channels were not tried.
        alert.details["outbox_error"] = redactor.text(str(exc))
        body = json.dumps(alert.model_dump())
        alert_id = -1
    if alert_id is None:
        return alert, None  # a repeat inside the cooldown
    try:
        with open(alert_log_path(project.state_dir), "a", encoding="utf-8") as handle:
            handle.write(redactor.text(body) + "\n")
    except OSError as exc:
        # A full or read-only disk must not break the run that is alerting; the outbox
        # (if it could be written) and the channels still carry the alert.
        log.warning("could not write the alert log: %s", exc)
    if alert_id > 0 and channels:
        deliver_pending(project, alert_ids=[alert_id])
    return alert, alert_id


def _record(store: State, alert: Alert, cause: str, once: bool, cooldown: float, body: str,
            channel_keys: list[str]) -> int | None:
    """Insert the alert and its deliveries, or count it as a repeat (returns None)."""
    repeat_after = None if once else iso(utcnow() - timedelta(seconds=cooldown))
    return store.alert_record(event=alert.event, job=alert.job, run_id=alert.run_id,
                              cause=cause, message=alert.message, at=alert.at, body=body,
                              channels=channel_keys, repeat_after=repeat_after)


def alert_invalid(project: Project, problems: list[str]) -> None:
    """`job.invalid` once for each distinct problem of a job file or jobrunner.toml: a job
    that stops validating is no longer scheduled, and that must not be silent."""
    import hashlib

    from jobrunner.errors import ConfigError

    try:
        project.raw_settings  # noqa: B018 - unreadable: no state folder to alert into
    except ConfigError:
        return  # the caller reports the problem on stderr, where cron mails it
    for problem in dict.fromkeys(problems):
        where = Path(problem.split(":", 1)[0])
        job = where.stem if where.parent == project.jobs_dir else None
        emit(project, "job.invalid", job, None, problem, {"problem": problem},
             cause=hashlib.sha256(problem.encode()).hexdigest()[:16], once=True)


def deliver_pending(project: Project, alert_ids: list[int] | None = None,
                    force: bool = False) -> dict[str, int]:
    """Try every pending delivery (or those of `alert_ids`); returns counts by outcome.

    Each channel has its own short timeout, and a channel that fails is not tried again
    in this process, so a dead channel never holds up a run for long. A sweep of the
    whole outbox skips channels still backing off, unless `force` (the watchdog).
    """
    from jobrunner.alerts.channels import send

    counts = {"delivered": 0, "failed": 0, "abandoned": 0, "backing_off": 0}
    try:
        store = project.store()
        channels = {channel_key(c): c for c in alert_settings(project).channels}
        resting = set() if force or alert_ids is not None else set(store.channels_resting())
        for delivery in store.deliveries_due(alert_ids, iso(utcnow() - _CLAIM_TIMEOUT) or ""):
            key = delivery.channel
            channel = channels.get(key)
            if channel is None:
                store.delivery_set(delivery.alert_id, key, "abandoned",
                                   "channel no longer in jobrunner.toml")
                counts["abandoned"] += 1
                continue
            if key in resting:
                counts["backing_off"] += 1
                continue
            if key in _BROKEN or not store.delivery_claim(delivery):
                continue
            error = send(project, channel, json.loads(delivery.body))
            if error is None:
                store.delivery_set(delivery.alert_id, key, "delivered", None)
                store.channel_ok(key)
                counts["delivered"] += 1
            else:
                _BROKEN.add(key)
                # Redacted before it is cut short (the store would mask only whole secrets).
                error = store.redactor.text(error)[:500]
                store.delivery_set(delivery.alert_id, key, "pending", error)
                policy = alert_settings(project)
                store.channel_failed(key, error, policy.retry_backoff,
                                     policy.retry_backoff_max)
                counts["failed"] += 1
    except JobrunnerError:
        # The outbox keeps what it has; the next invocation tries again.
        counts["failed"] += 1
    return counts


def send_test(project: Project) -> list[dict[str, Any]]:
    """Send an `alert.test` through every configured channel, ignoring routing and
    cooldown; returns one {channel, ok, error} per channel (the log always works)."""
    channels = list(alert_settings(project).channels)
    _, alert_id = _raise(
        project, "alert.test", None, None, "jobrunner test alert: this channel works",
        {"channels": [channel_label(c) for c in channels]},
        "test-" + secrets.token_hex(4), False, None, channels=channels,
    )
    results = [{"channel": "log " + str(alert_log_path(project.state_dir)), "ok": True,
                "error": None}]
    statuses = {}
    if alert_id and alert_id > 0:
        statuses = {d.channel: d for d in project.store().deliveries_of(alert_id)}
    for channel in channels:
        found = statuses.get(channel_key(channel))
        ok = found is not None and found.status == "delivered"
        results.append({"channel": channel_label(channel), "ok": ok, "error": None if ok
                        else (found.last_error if found else None) or "not attempted"})
    return results


def recent(project: Project, limit: int = 20) -> list[dict[str, Any]]:
    """The newest alerts with each channel's delivery state, newest first."""
    store = project.store()
    labels = {channel_key(c): channel_label(c) for c in alert_settings(project).channels}
    resting = store.channels_resting()
    out = []
    for row in store.alerts_recent(limit):
        deliveries = [
            {"channel": labels.get(d.channel, d.channel), "status": d.status,
             "attempts": d.attempts, "error": d.last_error, "delivered_at": d.delivered_at,
             "retry_at": resting.get(d.channel) if d.status == "pending" else None}
            for d in store.deliveries_of(row.id)
        ]
        alert = json.loads(row.body)
        alert.update(id=row.id, cause=row.cause, repeats=row.repeats, deliveries=deliveries)
        out.append(alert)
    return out


def undelivered(project: Project) -> int:
    """How many deliveries are still waiting in the outbox."""
    return project.store().undelivered()
