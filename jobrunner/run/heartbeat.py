"""Heartbeat URL pings, healthchecks-style: `URL/start` when a run starts, `URL` when
it completes, `URL/fail` when it does not, so an outside monitor notices a dead host.

A ping never breaks or slows a run much: short timeout, errors only traced."""

from __future__ import annotations

import threading
from typing import Any

PING_TIMEOUT = 5.0


def ping_url(base: str, kind: str) -> str:
    base = base.rstrip("/")
    return base if kind == "success" else f"{base}/{kind}"


def ping(base: str, kind: str, body: str = "", timeout: float = PING_TIMEOUT) -> str | None:
    """One ping; None when the monitor answered 2xx, else why not."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(ping_url(base, kind), data=body.encode()[:10000],
                                     method="POST", headers={"User-Agent": "jobrunner"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"unreachable: {exc.reason}"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


class Pinger:
    """Pings for one run: `start()` in the background, `finish(ok)` at the end. Results go
    to the trace from the calling thread only (the trace is not shared across threads)."""

    def __init__(self, url: str, trace: Any = None) -> None:
        self.url = url
        self.trace = trace
        self._start: threading.Thread | None = None
        self._start_error: list[str | None] = []

    def start(self) -> None:
        if not self.url:
            return
        self._start = threading.Thread(
            target=lambda: self._start_error.append(ping(self.url, "start")), daemon=True
        )
        self._start.start()

    def finish(self, ok: bool, summary: str = "") -> None:
        if not self.url:
            return
        if self._start is not None:
            self._start.join(timeout=PING_TIMEOUT)  # keep start before success/fail
            self._trace("start", self._start_error[0] if self._start_error else "no answer")
        kind = "success" if ok else "fail"
        self._trace(kind, ping(self.url, kind, summary))

    def _trace(self, kind: str, error: str | None) -> None:
        if self.trace is not None:
            self.trace.emit("heartbeat.ping", kind=kind, ok=error is None, error=error)
