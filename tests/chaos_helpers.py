"""Helpers of the chaos tests: a real local SMTP server that counts deliveries."""

from __future__ import annotations

import socket
import threading
from email import message_from_bytes


class SmtpSink:
    """aiosmtpd on 127.0.0.1: every message delivered to it, by subject."""

    def __init__(self) -> None:
        self.messages: list = []
        self._lock = threading.Lock()
        self.controller = None
        self.port = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        # aiosmtpd checks its own server by connecting to the configured port: pick one.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def subjects(self) -> list[str]:
        with self._lock:
            return [m["Subject"] for m in self.messages]
