"""The Anthropic Messages API through the official SDK, with retries left to the session."""

from __future__ import annotations

from typing import Any

from jobrunner.models import ModelError, ModelRequest, ModelTurn
from jobrunner.models.pricing import Usage

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


class AnthropicClient:
    """Calls `messages.create` with the SDK's own retries off (`max_retries=0`)."""

    def __init__(self) -> None:
        self._anthropic: Any = None
        self._client: Any = None

    def _sdk(self) -> Any:
        # ~1 s to import: paid on the first model call, not when the run is set up (a run
        # must be on record as soon as it holds its lock).
        if self._anthropic is None:
            import anthropic

            self._anthropic = anthropic
            self._client = anthropic.Anthropic(max_retries=0)
        return self._anthropic

    def request(self, request: ModelRequest) -> ModelTurn | ModelError:
        sdk = self._sdk()
        try:
            message = self._client.messages.create(
                model=request.model,
                system=request.system,
                messages=request.messages,
                tools=request.tools,
                max_tokens=request.max_tokens,
                timeout=request.timeout,
            )
        except TypeError as exc:
            if "authentication" in str(exc).lower():
                return ModelError("auth", _NO_KEY, retryable=False, advice=_NO_KEY)
            raise
        except sdk.APITimeoutError:
            return ModelError("timeout", "the model call timed out", retryable=True)
        except sdk.APIConnectionError as exc:
            return ModelError("connection", f"connection failed: {exc}", retryable=True)
        except sdk.APIStatusError as exc:
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
        except sdk.APIResponseValidationError as exc:
            return ModelError("malformed", f"malformed response: {exc}", retryable=True)
        except sdk.APIError as exc:
            # A body that is not JSON surfaces as a plain APIError in the SDK.
            return ModelError("malformed", f"unusable response: {exc}", retryable=True)
        except ValueError as exc:
            return ModelError("malformed", f"unusable response: {exc}", retryable=True)
        usage = message.usage
        return ModelTurn(
            content=[block.model_dump(exclude_none=True) for block in message.content],
            stop_reason=message.stop_reason or "end_turn",
            usage=Usage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
                cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            ),
            request_id=getattr(message, "_request_id", None),
            model=message.model,
        )
