"""Model clients behind one narrow interface: `request(ModelRequest) -> ModelTurn | ModelError`.

Errors are values here because the session decides what to do with them (retry, stop,
explain); nothing in this package retries on its own.
"""

from __future__ import annotations

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
    timeout: float


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
    def request(self, request: ModelRequest) -> ModelTurn | ModelError: ...


def client_for(model: str, project_root) -> ModelClient:
    """The client a job's `model` names: `replay:PATH` or an Anthropic model id."""
    if model.startswith("replay:"):
        from jobrunner.models.replay import ReplayClient

        return ReplayClient(project_root / model.removeprefix("replay:"))
    from jobrunner.models.anthropic_client import AnthropicClient

    return AnthropicClient()
