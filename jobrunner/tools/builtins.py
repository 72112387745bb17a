"""Tools jobrunner ships. No shell tool: a job gets only what it lists."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from jobrunner.tools.api import ToolResult, ToolSpec, current_context, tool

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


@tool(risk="medium", side_effect=True, timeout=30, idempotency_key="{job}:{tool}:{slot}:{args}")
def send_email(to: list[str], subject: str, body: str) -> ToolResult:
    """Send a plain-text email. `to` is a list of addresses. Sent over SMTP when the
    project configures [smtp], otherwise written as an .eml file to the outbox folder."""
    context = current_context()
    bad = [a for a in to if not _ADDRESS.match(a)]
    if not to or bad:
        return ToolResult(ok=False, error=f"invalid recipient address(es): {bad or to}")
    settings = context.settings
    message = EmailMessage()
    sender = settings.smtp.sender if settings.smtp else "jobrunner@localhost"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="jobrunner.local")
    message["X-Jobrunner-Job"] = context.job_name
    message["X-Jobrunner-Run"] = context.run_id
    # 8bit keeps the .eml readable; very long lines need quoted-printable.
    longest = max(map(len, body.splitlines() or [""]))
    message.set_content(body, cte="8bit" if longest < 990 else "quoted-printable")
    if settings.smtp is None:
        outbox = Path(context.project_root) / settings.email_outbox
        outbox.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = outbox / f"{stamp}-{context.job_name}-{context.run_id}.eml"
        path.write_bytes(bytes(message))
        return ToolResult(data={"delivered": "outbox", "path": str(path), "to": to})
    from jobrunner.mail import send_message

    send_message(settings.smtp, message)
    return ToolResult(data={"delivered": "smtp", "to": to, "message_id": message["Message-ID"]})


def all_specs() -> list[ToolSpec]:
    """Every built-in tool's spec."""
    return [send_email.__jobrunner_tool__]
