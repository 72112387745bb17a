"""SMTP delivery shared by the send_email tool and the email alert channel."""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage


class NotSent(smtplib.SMTPException):
    """The message certainly did not leave: the failure came before the server was handed
    the message (connection, TLS, login, recipients refused). Safe to try again later."""


def send_message(smtp, message: EmailMessage) -> None:
    """Deliver `message` through the project's [smtp] settings.

    Raises NotSent when the message certainly did not leave, and OSError or
    smtplib.SMTPException when it may have (the outcome is then unknown)."""
    password = os.environ.get(smtp.password_env, "") if smtp.password_env else ""
    if smtp.password_env and not password:
        raise NotSent(f"SMTP password variable {smtp.password_env} is not set in the environment")
    try:
        client = _connect(smtp, password)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotSent(f"cannot reach SMTP server {smtp.host}:{smtp.port}: {exc}") from exc
    with client:
        try:
            refused = client.send_message(message)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            raise NotSent(f"SMTP server refused the message: {exc}") from exc
        if refused:
            # Some recipients got it: not a clean "not sent", so report it as a failure
            # whose outcome the ledger must treat as unknown.
            raise smtplib.SMTPException(f"SMTP server refused some recipients: {refused}")


def _connect(smtp, password: str) -> smtplib.SMTP:
    if smtp.ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=smtp.timeout, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    try:
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
    except BaseException:
        client.close()
        raise
    return client
