"""Model clients behind one narrow interface: `request(ModelRequest) -> ModelTurn | ModelError`.

Errors are values here because the session decides what to do with them (retry, stop,
explain); nothing in this package retries on its own. `request_within` bounds a call by
wall-clock time, whatever the server does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobrunner.models.pricing import Usage


@dataclass
class ModelRequest:
    model: str
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    max_tokens: int
    timeout: float  # seconds of wall-clock time for the whole call (see request_within)
    # Stream the reply, and cut it when nothing arrives for this long (None: one response).
    idle_timeout: float | None = None
    tool_choice: dict[str, Any] | None = None  # e.g. a tool the reply must call
    # The text received so far, appended as it streams: what a cut-off call had written.
    partial: list[str] = field(default_factory=list)


@dataclass
class ModelTurn:
    """One assistant message."""

    content: list[dict[str, Any]]
    stop_reason: str
    usage: Usage
    request_id: str | None = None
    model: str = ""


@dataclass
class ModelError:
    """A call that produced no usable message."""

    kind: str  # rate_limit, overloaded, server, timeout, connection, malformed, auth, ...
    message: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None
    request_id: str | None = None
    advice: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ModelClient(Protocol):
    def prepare(self) -> None:
        """Load what calls need (e.g. import the SDK); not counted in any call's bound."""

    def request(self, request: ModelRequest) -> ModelTurn | ModelError:
        """One call; may be run in a worker thread and abandoned (see request_within)."""


# Threads of model calls abandoned at their deadline and still running; the CLI exits hard
# if any remain at the end, as for timed-out tools.
_ABANDONED: list[threading.Thread] = []


def request_within(client: ModelClient, request: ModelRequest) -> ModelTurn | ModelError:
    """`client.request(request)`, over within `request.timeout` seconds of wall-clock time.

    The SDK's timeout bounds each read, so a server that trickles a byte now and then
    would hold a call (and the run, and its lock) indefinitely. The call runs in a worker
    thread instead; past the deadline it is abandoned as a retryable `timeout` and its
    thread left to end on its own (the client must not reuse its connection).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = client.request(request)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name="model-call", daemon=True)
    thread.start()
    try:
        done.wait(max(0.0, request.timeout))
    finally:
        # Also when the wait is interrupted (SIGTERM): the thread is then left running.
        if not done.is_set():
            _ABANDONED.append(thread)
    if not done.is_set():
        return ModelError(
            "timeout",
            f"no complete reply within {request.timeout:.1f}s; the call was abandoned",
            retryable=True, extra={"partial_text": "".join(list(request.partial))},
        )
    if "error" in box:
        raise box["error"]
    return box["result"]


def abandoned_calls() -> list[threading.Thread]:
    """Model calls abandoned at their deadline whose threads are still running."""
    return [t for t in _ABANDONED if t.is_alive()]


def client_for(model: str, project_root) -> ModelClient:
    """The client a job's `model` names: `replay:PATH` or an Anthropic model id."""
    if model.startswith("replay:"):
        from jobrunner.models.replay import ReplayClient

        return ReplayClient(project_root / model.removeprefix("replay:"))
    from jobrunner.models.anthropic_client import AnthropicClient

    return AnthropicClient()
