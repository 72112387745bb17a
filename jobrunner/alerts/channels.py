"""Delivering one alert through one channel: webhook, email, command or an extra log.

Each `send` returns None when delivered, else a short error (no URL in it: webhook URLs
are secrets). Every channel is bounded by its `timeout`.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobrunner.config.project import Project


def slack_text(alert: dict[str, Any]) -> str:
    """The one line a chat channel shows (Slack reads `text`)."""
    job = alert.get("job") or "jobrunner"
    return f"[jobrunner] {alert.get('event')} {job}: {alert.get('message')}"


def send(project: Project, channel: Any, alert: dict[str, Any]) -> str | None:
    """Deliver `alert` through `channel`; None when it arrived, else why not."""
    senders = {"webhook": _webhook, "email": _email, "command": _command, "log": _log}
    try:
        return senders[channel.type](project, channel, alert)
    except (OSError, ValueError, smtplib.SMTPException, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _webhook(project: Project, channel: Any, alert: dict[str, Any]) -> str | None:  # noqa: ARG001
    # Every sender takes (project, channel, alert): `send` picks one by the channel's type.
    import urllib.error
    import urllib.request

    body = json.dumps({"text": slack_text(alert), **alert}).encode()
    request = urllib.request.Request(
        channel.url, data=body, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "jobrunner-alerts"},
    )
    try:
        with urllib.request.urlopen(request, timeout=channel.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"webhook answered HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"webhook unreachable: {exc.reason}"
    except TimeoutError:
        return f"webhook did not answer within {channel.timeout:g}s"
    return None if 200 <= status < 300 else f"webhook answered HTTP {status}"


def _email(project: Project, channel: Any, alert: dict[str, Any]) -> str | None:
    from jobrunner.mail import send_message

    smtp = project.settings.smtp
    if smtp is None:
        return "no [smtp] table in jobrunner.toml for the email channel"
    if not channel.to:
        return "email channel has no `to` addresses"
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(channel.to)
    subject = f"[jobrunner] {alert.get('event')} {alert.get('job') or ''}: {alert.get('message')}"
    message["Subject"] = " ".join(subject.split())[:200]
    message.set_content(
        f"{alert.get('message')}\n\n" + json.dumps(alert, indent=2, default=str) + "\n"
    )
    send_message(smtp.model_copy(update={"timeout": min(smtp.timeout, channel.timeout)}), message)
    return None


def _command(project: Project, channel: Any, alert: dict[str, Any]) -> str | None:
    if not channel.command:
        return "command channel has an empty `command`"
    try:
        proc = subprocess.run(
            channel.command, input=json.dumps(alert) + "\n", text=True, capture_output=True,
            timeout=channel.timeout, cwd=project.root, env=os.environ.copy(),
        )
    except subprocess.TimeoutExpired:
        return f"command did not finish within {channel.timeout:g}s"
    if proc.returncode != 0:
        # Redacted before it is cut short: a cut secret would escape the mask.
        last = project.redactor().text((proc.stderr.strip().splitlines() or [""])[-1])[:200]
        return f"command exited {proc.returncode}" + (f": {last}" if last else "")
    return None


def _log(project: Project, channel: Any, alert: dict[str, Any]) -> str | None:
    if not channel.path:
        return None  # the built-in alert log already has it
    path = Path(channel.path).expanduser()
    path = path if path.is_absolute() else project.root / path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(alert) + "\n")
    return None
