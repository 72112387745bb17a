"""Alerts: one JSON object per event, always written to the project's alert log.

Further channels (webhook, email, command), routing, cooldown and the outbox build on
`emit`; a broken channel never breaks a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from jobrunner.redact import Redactor
from jobrunner.store import iso, utcnow


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


def emit(
    project: Any,
    event: str,
    job: str | None,
    run_id: str | None,
    message: str,
    details: dict[str, Any] | None = None,
    redactor: Redactor | None = None,
) -> Alert:
    """Record an alert in the always-on log channel and return it."""
    redactor = redactor or Redactor(project.secret_values())
    alert = Alert(
        event=event, job=job, run_id=run_id, message=redactor.text(message),
        at=iso(utcnow()) or "", details=redactor.data(details or {}),
    )
    path = alert_log_path(project.state_dir)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(alert.model_dump()) + "\n")
    return alert
