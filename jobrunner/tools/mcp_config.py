"""MCP servers as jobrunner sees them before any is started: tool policy from annotations,
model-facing tool names, and the errors of a server that cannot be used (the `[mcp.NAME]`
declaration itself is `config.mcp`). Light on imports (no asyncio, no SDK)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from jobrunner.errors import JobrunnerError

# The declaration is configuration; it is re-exported here with the rest of MCP's names.
from jobrunner.formats.mcp import (  # noqa: F401
    SAFE_ENV,
    SERVER_NAME_MAX,
    McpServerConfig,
    ServerName,
    server_name_problem,
)
from jobrunner.tools.api import Risk

MODEL_NAME_MAX = 64  # the Messages API's tool names: [a-zA-Z0-9_-]{1,64}
_MODEL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


# --- policy and names ------------------------------------------------------------------

class ToolPolicy(NamedTuple):
    risk: Risk
    side_effect: bool
    retries_allowed: bool
    untrusted_output: bool


def policy_from_annotations(annotations: Any) -> ToolPolicy:
    """jobrunner's policy for an MCP tool, from its annotations (an SDK `ToolAnnotations`,
    the wire dict in camelCase or snake_case, or None). The spec's defaults for an absent
    hint are the pessimistic ones, and so are ours:

    | annotations                                  | risk   | side effect | may retry  |
    |----------------------------------------------|--------|-------------|------------|
    | none at all                                  | high   | yes         | no         |
    | readOnlyHint true                            | low    | no          | yes        |
    | not read-only, destructiveHint true or absent | high  | yes         | idempotent |
    | not read-only, destructiveHint false         | medium | yes         | idempotent |

    ("destructiveHint absent" is the spec's default of true.) "idempotent": a failed call
    may be retried only if `idempotentHint` is true; a read-only tool may be, always.
    Untrusted output: yes unless `openWorldHint` is explicitly false (absent is the spec's
    default of true); with no annotations at all, yes. Untrusted output is fenced and
    taints the session.
    Hints come from the server: a job may tighten the result, and a server not trusted to
    describe itself should not be configured at all.
    """
    if annotations is None:
        return ToolPolicy("high", True, False, True)
    hints = _hints(annotations)
    untrusted = hints.get("open_world_hint") is not False
    if hints.get("read_only_hint") is True:
        return ToolPolicy("low", False, True, untrusted)
    risk: Risk = "medium" if hints.get("destructive_hint") is False else "high"
    return ToolPolicy(risk, True, hints.get("idempotent_hint") is True, untrusted)


def _hints(annotations: Any) -> dict[str, Any]:
    raw = dict(annotations) if isinstance(annotations, Mapping) else annotations.model_dump()
    camel = {"readOnlyHint": "read_only_hint", "destructiveHint": "destructive_hint",
             "idempotentHint": "idempotent_hint", "openWorldHint": "open_world_hint"}
    return {camel.get(k, k): v for k, v in raw.items()}


def model_tool_name(server: str, tool: str) -> str:
    """`SERVER__TOOL` in the Messages API's charset; a name over 64 characters keeps its
    start and gets a hash of the full tool name, so it stays unique."""
    name = f"{server}__{_MODEL_NAME_BAD.sub('_', tool)}"
    if len(name) > MODEL_NAME_MAX:
        digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
        name = f"{name[:MODEL_NAME_MAX - 9]}-{digest}"
    return name


def assign_model_names(server: str, tools: Collection[str],
                       taken: Collection[str] = ()) -> dict[str, str]:
    """tool name -> model-facing name; two tools (or a tool and a name in `taken`, e.g.
    another server's or a built-in) landing on one name is an `McpListError`."""
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for tool in tools:
        model_name = model_tool_name(server, tool)
        if model_name in owner or model_name in taken:
            other = f"tool {owner[model_name]!r}" if model_name in owner else "another tool"
            raise McpListError(server, f"tool {tool!r} and {other} would both be "
                               f"{model_name!r} for the model; rename one on the server")
        owner[model_name] = tool
        names[tool] = model_name
    return names


# --- results and errors ----------------------------------------------------------------

class McpServerError(JobrunnerError):
    """A server could not be used at all: the run stops and reports before any model call."""

    def __init__(self, server: str, problem: str) -> None:
        self.server = server
        self.problem = problem
        super().__init__(f"MCP server {server!r}: {problem}")


class McpStartError(McpServerError):
    """The server did not start, or did not complete the handshake in time."""


class McpListError(McpServerError):
    """tools/list failed, or its answer cannot be used (malformed, bad schema, name clash)."""


@dataclasses.dataclass(frozen=True)
class McpTool:
    """One tool of a server, as listed."""

    server: str
    name: str  # as the server knows it
    model_name: str  # SERVER__TOOL
    description: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None  # snake_case hints, None when the server gave none

    @property
    def policy(self) -> ToolPolicy:
        return policy_from_annotations(self.annotations)

    def definition(self) -> dict[str, Any]:
        """The tool as listed to the model."""
        return {"name": self.model_name, "description": self.description,
                "input_schema": self.input_schema}
