"""Local servers the alert tests start on 127.0.0.1: an HTTP recorder and SMTP (aiosmtpd)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HttpRecorder:
    """Records every POST (path and body); answers `status`."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.status = status
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append((self.path, self.rfile.read(length)))
                self.send_response(recorder.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def json_bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    def __enter__(self) -> HttpRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpRecorder:
    """aiosmtpd on a free local port, keeping every message it receives."""

    def __init__(self, tls_context=None, login: tuple[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[dict] = []
        self.logins: list[str] = []
        recorder = self

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = login is not None and (auth_data.login.decode(), auth_data.password.decode()) \
                == login
            if ok:
                recorder.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                recorder.messages.append({"to": list(envelope.rcpt_tos),
                                          "data": envelope.content.decode("utf-8", "replace")})
                return "250 OK"

        self.port = free_port()
        # With TLS and a login: STARTTLS is required before anything, and the login too.
        extra = {} if tls_context is None else {
            "tls_context": tls_context, "require_starttls": True, "auth_required": True,
            "auth_require_tls": True, "authenticator": authenticator}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **extra)

    def __enter__(self) -> SmtpRecorder:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
