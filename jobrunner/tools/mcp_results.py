"""What an MCP server's answers mean to jobrunner: a tools/list adopted as `McpTool`s,
a call's result as data or an error, an SDK exception as one short line."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.redact import Redactor
from jobrunner.tools import schema as json_schema
from jobrunner.tools.mcp_config import (
    McpListError,
    McpServerError,
    McpTool,
    assign_model_names,
)


@dataclasses.dataclass
class McpCallResult:
    """How one call went; the fields mean what they mean in `CallOutcome`."""

    ok: bool
    data: Any = None
    error: str | None = None
    duration: float = 0.0
    timed_out: bool = False
    raised: bool = False  # the server went away mid-call: the tool may have acted
    invalid_arguments: bool = False  # refused before the call; `error` quotes the schema


def adopt_listing(server: str, listed: list[Any], taken: Collection[str],
                  redactor: Redactor) -> list[McpTool]:
    """The SDK's listed tools as jobrunner's, each with a usable schema and a name for
    the model that clashes with nothing; anything else is an `McpListError`."""
    names = assign_model_names(server, [t.name for t in listed], taken)
    tools = []
    for raw in listed:
        problem = json_schema.schema_error(raw.input_schema)
        if problem:
            raise McpListError(server, f"tool {raw.name!r}: {problem}")
        hints = None
        if raw.annotations is not None:
            hints = raw.annotations.model_dump(exclude_none=True)
        tools.append(McpTool(
            server=server, name=raw.name, model_name=names[raw.name],
            description=redactor.text(raw.description or raw.title or raw.name),
            input_schema=raw.input_schema, annotations=hints,
        ))
    return tools


def leaf(exc: BaseException) -> BaseException:
    """The first real cause inside the SDK's (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def describe(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    first = leaf(exc)
    text = str(first).strip().splitlines()
    return f"{type(first).__name__}: {text[0][:300]}" if text else type(first).__name__


def content_data(result: Any) -> Any:
    """What a tool returned, as jobrunner's result data: the structured content when there
    is some, else the text of its content blocks (media and blobs summarised, not inlined)."""
    if result.structured_content is not None:
        return result.structured_content
    parts = [_block_text(block) for block in result.content]
    if len(parts) == 1:
        return parts[0]
    return "\n".join(parts) if parts else None


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        return f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    if kind == "resource":
        inner = block.resource
        text = getattr(inner, "text", None)
        return text if text is not None else f"[resource {inner.uri}, binary]"
    return f"[{kind} content]"


def error_text(result: Any) -> str:
    """The message of an isError result."""
    texts = [b.text for b in result.content if getattr(b, "type", None) == "text"]
    return " ".join(texts).strip()[:2000] or "the tool reported an error (no message)"


def call_exception(exc: Exception, budget: float) -> tuple[str, bool, bool, bool]:
    """What a call that raised means: (error, timed_out, raised, the server is lost).
    "raised": the tool may have acted before the answer was lost."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    if isinstance(exc, MCPError) and exc.code == REQUEST_TIMEOUT:
        return f"timed out after {budget:g}s", True, False, False
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return ("the server closed the connection mid-call (it exited or crashed)",
                False, True, True)
    if isinstance(exc, McpServerError):
        return exc.problem, False, True, True
    if isinstance(exc, MCPError):
        return f"protocol error {exc.code}: {exc}", False, False, False
    return f"unusable answer: {describe(exc)}", False, True, False


def start_problem(failure: BaseException | None, stderr_hint: str) -> str:
    """Why a server did not start (or stopped), from what its client thread raised."""
    if failure is None:
        return "the server stopped" + stderr_hint
    first = leaf(failure)
    if isinstance(first, McpServerError | ConfigError):
        return str(getattr(first, "problem", first))
    if isinstance(first, OSError):
        return f"cannot start: {first.strerror or first}" + stderr_hint
    return f"the handshake failed: {describe(first)}" + stderr_hint
