"""A streamed Messages reply (server-sent events) read back into the reply it stands for.

Streaming lets a call be cut when the reply stops arriving: every event must come within
the idle bound, and `ping`s alone do not count as the reply arriving. The text received so
far is appended to `partial` as it comes, so a call cut off (here, or abandoned at its
wall-clock deadline) still says what the model had written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from jobrunner.events import ModelErrorKind
from jobrunner.models import ModelError

# The API's error types mid-stream, as the kinds an HTTP status would give.
_STREAM_ERRORS = {"overloaded_error": (ModelErrorKind.OVERLOADED, True),
                  "rate_limit_error": (ModelErrorKind.RATE_LIMIT, True),
                  "api_error": (ModelErrorKind.SERVER, True),
                  "timeout_error": (ModelErrorKind.TIMEOUT, True),
                  "invalid_request_error": (ModelErrorKind.INVALID_REQUEST, False)}


def stalled(idle: float, partial: list[str], what: str = "nothing") -> ModelError:
    """The error of a stream that stopped arriving: retryable, with its partial text."""
    return ModelError(ModelErrorKind.IDLE_TIMEOUT,
                      f"the reply stalled: {what} arrived for {idle:g}s (limits."
                      "model_idle_timeout); the call was cut", retryable=True,
                      extra={"partial_text": "".join(list(partial))})


class _Reply:
    """The message being assembled from its events."""

    def __init__(self, partial: list[str]) -> None:
        self.message: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.partial = partial
        self.stopped = False

    def apply(self, data: dict[str, Any]) -> None:
        """One event; KeyError/TypeError/ValueError for an event of the wrong shape."""
        kind = data["type"]
        if kind == "message_start":
            self.message = dict(data["message"])
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[int(data["index"])] = dict(data["content_block"])
        elif kind == "content_block_delta":
            self._delta(self.blocks[int(data["index"])], int(data["index"]), data["delta"])
        elif kind == "content_block_stop":
            index = int(data["index"])
            block = self.blocks[index]
            if block.get("type") == "tool_use":
                text = "".join(self.json_parts.pop(index, []))
                block["input"] = json.loads(text) if text.strip() else {}
        elif kind == "message_delta":
            assert self.message is not None, "message_delta before message_start"
            self.message.update({k: v for k, v in data["delta"].items() if v is not None})
            self.message["usage"].update(data.get("usage") or {})
        elif kind == "message_stop":
            self.stopped = True

    def _delta(self, block: dict[str, Any], index: int, delta: dict[str, Any]) -> None:
        kind = delta["type"]
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta["text"]
            self.partial.append(delta["text"])
        elif kind == "input_json_delta":
            self.json_parts.setdefault(index, []).append(delta["partial_json"])
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta["signature"]
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta["citation"])

    def result(self) -> dict[str, Any]:
        assert self.message is not None
        return {**self.message, "content": [self.blocks[i] for i in sorted(self.blocks)]}


def read_events(events: Iterable[Any], idle: float, partial: list[str],
                request_id: str | None) -> dict[str, Any] | ModelError:
    """The message a stream of server-sent events (`.event`, `.data`) spells, or why
    not. Socket silence is the HTTP client's read timeout; this bounds a stream that
    only sends `ping`s."""
    reply = _Reply(partial)
    progress = time.monotonic()
    for sse in events:
        now = time.monotonic()
        if sse.event == "ping" or not sse.data:
            if now - progress > idle:
                return stalled(idle, partial, "only pings")
            continue
        progress = now
        try:
            data = json.loads(sse.data)
            if sse.event == "error" or data.get("type") == "error":
                return _stream_error(data, request_id, partial)
            reply.apply(data)
        except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as exc:
            return ModelError(ModelErrorKind.MALFORMED,
                              f"malformed stream event {sse.event!r}: {type(exc).__name__}: "
                              f"{exc}", retryable=True, request_id=request_id,
                              extra={"partial_text": "".join(partial)})
        if reply.stopped:
            break
    if not reply.stopped or reply.message is None:
        return ModelError(ModelErrorKind.MALFORMED, "malformed response: the stream ended "
                          "before message_stop", retryable=True, request_id=request_id,
                          extra={"partial_text": "".join(partial)})
    return reply.result()


def _stream_error(data: dict[str, Any], request_id: str | None,
                  partial: list[str]) -> ModelError:
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    kind, retryable = _STREAM_ERRORS.get(str(error.get("type")), (ModelErrorKind.SERVER, True))
    return ModelError(kind, f"error in the stream: {error.get('type')}: "
                      f"{error.get('message', '')}", retryable=retryable,
                      request_id=request_id, extra={"partial_text": "".join(partial)})
