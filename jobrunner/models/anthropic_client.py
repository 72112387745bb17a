"""The Anthropic Messages API through the official SDK, with retries left to the session;
streamed when the job bounds how long a reply may stop arriving."""

from __future__ import annotations

import json
import threading
from typing import Any

from jobrunner.models import ModelError, ModelRequest, ModelTurn
from jobrunner.models.pricing import Usage
from jobrunner.models.streaming import read_events, stalled

_NO_KEY = (
    "no Anthropic API key: set ANTHROPIC_API_KEY in the environment (or in the env_file "
    "named by jobrunner.toml, mode 0600); for an offline run use model = \"replay:PATH\""
)

_ADVICE = {
    400: "the request was refused as invalid; check the job's model name and limits",
    401: "the API key was refused: check ANTHROPIC_API_KEY",
    403: "the API key may not use this model or resource: check the key's permissions",
    404: "the model or endpoint was not found: check `model` in the job file "
    "(and ANTHROPIC_BASE_URL if set)",
    413: "the request is too large: lower limits.context_tokens or max_tool_result_chars",
}

_KINDS = {
    400: "invalid_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    413: "too_large",
    408: "timeout",
    409: "conflict",
    429: "rate_limit",
    529: "overloaded",
}


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (sec := headers.get("retry-after")) is not None:
            return max(0.0, float(sec))
    except (TypeError, ValueError):
        return None
    return None


def _count(usage: dict[str, Any], key: str, required: bool) -> int | str:
    """A token count from `usage`, or the problem with it."""
    value = usage.get(key)
    if value is None and not required:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"usage.{key}: expected a non-negative integer, got {value!r}"
    return value


def _block_problem(index: int, block: Any) -> str | None:
    if not isinstance(block, dict):
        return f"content.{index}: expected an object, got {type(block).__name__}"
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        return f"content.{index}.type: missing"
    if kind == "text" and not isinstance(block.get("text"), str):
        return f"content.{index}.text: expected a string"
    if kind == "tool_use":
        for key in ("id", "name"):
            if not isinstance(block.get(key), str) or not block[key]:
                return f"content.{index}.{key}: expected a non-empty string"
        if not isinstance(block.get("input"), dict):
            return f"content.{index}.input: expected an object"
    return None


def turn_from_reply(data: Any, request_id: str | None) -> ModelTurn | ModelError:
    """A 200 reply's JSON as a turn, or a retryable `malformed` error naming what is wrong:
    a reply the session cannot use is the server's fault, like a 5xx, not ours."""
    def malformed(problem: str) -> ModelError:
        return ModelError("malformed", f"malformed response: {problem}", retryable=True,
                          request_id=request_id)

    if not isinstance(data, dict):
        return malformed(f"expected a JSON object, got {type(data).__name__}")
    content = data.get("content")
    if not isinstance(content, list):
        return malformed(f"content: expected a list, got {type(content).__name__}")
    for index, block in enumerate(content):
        if problem := _block_problem(index, block):
            return malformed(problem)
    stop_reason = data.get("stop_reason")
    if not isinstance(stop_reason, str) or not stop_reason:
        return malformed(f"stop_reason: expected a string, got {stop_reason!r}")
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return malformed(f"usage: expected an object, got {type(usage).__name__}")
    counts: dict[str, int] = {}
    for key, required in (("input_tokens", True), ("output_tokens", True),
                          ("cache_creation_input_tokens", False),
                          ("cache_read_input_tokens", False)):
        value = _count(usage, key, required)
        if isinstance(value, str):
            return malformed(value)
        counts[key] = value
    model = data.get("model")
    return ModelTurn(
        # Null fields (e.g. `citations`) are left out, as the API accepts them back.
        content=[{k: v for k, v in block.items() if v is not None} for block in content],
        stop_reason=stop_reason,
        usage=Usage(**counts),
        request_id=request_id,
        model=model if isinstance(model, str) else "",
    )


class AnthropicClient:
    """Calls `messages.create` with the SDK's own retries off (`max_retries=0`).

    Each call takes an SDK client (its own connection pool) and gives it back when it ends.
    A call abandoned by the session on a stuck connection keeps its client until its thread
    ends, so the retry takes a fresh one and never waits on, or reuses, that connection.
    """

    def __init__(self) -> None:
        self._anthropic: Any = None
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Import the SDK (about 1.5 s): paid on the first model call, not when the run is
        set up (a run must be on record as soon as it holds its lock), and outside any
        call's time bound."""
        if self._anthropic is None:
            import anthropic

            self._anthropic = anthropic

    def _take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._anthropic.Anthropic(max_retries=0)

    def _give_back(self, client: Any) -> None:
        with self._lock:
            if not self._idle:
                self._idle.append(client)
                return
        client.close()  # a late abandoned call: one idle client is enough

    def request(self, request: ModelRequest) -> ModelTurn | ModelError:
        self.prepare()
        client = self._take()
        try:
            return self._request(client, request)
        finally:
            self._give_back(client)

    def _request(self, client: Any, request: ModelRequest) -> ModelTurn | ModelError:
        sdk = self._anthropic
        params = _params(request)
        try:
            if request.idle_timeout:
                return self._streamed(client, request, params)
            return self._whole(client, request, params)
        except TypeError as exc:
            if "authentication" in str(exc).lower():
                return ModelError("auth", _NO_KEY, retryable=False, advice=_NO_KEY)
            raise
        except sdk.APITimeoutError:
            # Streamed, each read is bounded by the idle timeout: the reply stalled.
            return stalled(request.idle_timeout, request.partial) if request.idle_timeout \
                else ModelError("timeout", "the model call timed out", retryable=True)
        except sdk.APIConnectionError as exc:
            return ModelError("connection", f"connection failed: {exc}", retryable=True)
        except sdk.APIStatusError as exc:
            return _status_error(exc)
        except sdk.APIError as exc:
            return ModelError("malformed", f"unusable response: {exc}", retryable=True)
        except ValueError as exc:  # a body that is not JSON
            return ModelError("malformed", f"malformed response: not JSON ({exc})",
                              retryable=True)

    @staticmethod
    def _whole(client: Any, request: ModelRequest,
               params: dict[str, Any]) -> ModelTurn | ModelError:
        # The raw reply, so its shape is checked here rather than trusted: the SDK builds
        # its models without validation and would hand on whatever came.
        raw = client.messages.with_raw_response.create(
            **params,
            # Bounds each read; the whole call is bounded by the session's deadline.
            timeout=request.timeout,
        )
        return turn_from_reply(raw.json(), raw.request_id)

    def _streamed(self, client: Any, request: ModelRequest,
                  params: dict[str, Any]) -> ModelTurn | ModelError:
        """The call as a stream: each read bounded by the idle timeout, so a reply that
        stops arriving is cut, not waited for until the whole call's time is up."""
        import httpx2

        sdk = self._anthropic
        idle = float(request.idle_timeout or 0)
        timeout = sdk.Timeout(request.timeout, read=idle)
        with client.messages.with_streaming_response.create(
                **params, stream=True, timeout=timeout) as response:
            request_id = response.request_id
            try:
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # A server that answered in one piece: the same checks as any reply.
                    return turn_from_reply(json.loads(response.read()), request_id)
                message = read_events(sdk.Stream.raw_events(response.http_response), idle,
                                      request.partial, request_id)
            except httpx2.TimeoutException:
                return stalled(idle, request.partial)
            except httpx2.HTTPError as exc:
                return ModelError("connection", f"the stream broke off: {exc}",
                                  retryable=True,
                                  extra={"partial_text": "".join(request.partial)})
        if isinstance(message, ModelError):
            return message
        return turn_from_reply(message, request_id)


def _params(request: ModelRequest) -> dict[str, Any]:
    """The request's keywords for `messages.create`: tools and a tool choice only if set
    (a helper model's request may have none)."""
    params: dict[str, Any] = dict(
        model=request.model, system=request.system, messages=request.messages,
        max_tokens=request.max_tokens)
    if request.tools:
        params["tools"] = request.tools
    if request.tool_choice is not None:
        params["tool_choice"] = request.tool_choice
    return params


def _status_error(exc: Any) -> ModelError:
    """An HTTP error status as a ModelError: retryable or not, and what to do about it."""
    status = exc.status_code
    retryable = status in (408, 409, 429) or status >= 500
    kind = _KINDS.get(status, "server" if status >= 500 else f"http_{status}")
    detail = exc.message
    body = exc.body if isinstance(exc.body, dict) else None
    if body and isinstance(body.get("error"), dict):
        detail = body["error"].get("message", detail)
    return ModelError(
        kind,
        f"HTTP {status} {kind}: {detail}",
        retryable=retryable,
        status=status,
        retry_after=_retry_after(exc.response.headers if exc.response else None),
        request_id=exc.request_id,
        advice=_ADVICE.get(status, ""),
    )
