"""SMTP delivery shared by the send_email tool and the email alert channel."""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage


def send_message(smtp, message: EmailMessage) -> None:
    """Deliver `message` through the project's [smtp] settings; raises OSError or
    smtplib.SMTPException when it cannot (the caller decides what that means)."""
    password = os.environ.get(smtp.password_env, "") if smtp.password_env else ""
    if smtp.password_env and not password:
        raise smtplib.SMTPException(
            f"SMTP password variable {smtp.password_env} is not set in the environment"
        )
    if smtp.ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=smtp.timeout, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    with client:
        if smtp.starttls and not smtp.ssl:
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            elif smtp.username:
                # Never send a password in clear text.
                raise smtplib.SMTPException("server does not offer STARTTLS; refusing to log in")
        if smtp.username:
            client.login(smtp.username, password)
        client.send_message(message)
