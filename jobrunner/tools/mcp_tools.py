"""A job's MCP tools: its `mcp:SERVER` and `mcp:SERVER/TOOL` entries resolved, over
connections the run holds, into `ToolSpec`s the session treats like any other tool.

    with McpServers(project.root, settings.mcp, emit=trace.emit) as servers:
        tools = servers.job_tools(job, taken=python_tool_names, deadline=run_deadline)

Each server the job names is started once, on first need, and listed; every one is closed
(its processes gone, its stderr in the trace) when the block ends. A server that cannot
start or list raises `McpServerError`: the run stops before its first model call.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.formats.mcp import McpServerConfig
from jobrunner.tools.api import ToolResult, ToolSpec, policy_problems, tightened
from jobrunner.tools.mcp_config import McpListError, McpServerError, McpTool

if TYPE_CHECKING:
    from jobrunner.tools.mcp_client import McpConnection

PREFIX = "mcp:"
# How often a failed call of a tool its server says may be repeated (read-only or
# idempotent) is retried; a job may lower it with `[tool."SERVER/TOOL"] retries`.
MCP_RETRIES = 2

Emit = Callable[..., None]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One `mcp:` entry of a job's `tools`: a whole server, or one of its tools."""

    server: str
    tool: str | None  # None: every tool the server lists

    def covers(self, server: str, tool: str) -> bool:
        return self.server == server and self.tool in (None, tool)


def is_entry(name: str) -> bool:
    return name.startswith(PREFIX)


def parse_entry(name: str) -> Entry:
    """`mcp:git` or `mcp:git/git_status` (call only when `is_entry`)."""
    server, _, tool = name.removeprefix(PREFIX).partition("/")
    return Entry(server, tool or None)


def entries(job: Any) -> list[Entry]:
    """The job's `mcp:` entries, in its order."""
    return [parse_entry(n) for n in job.spec.tools if is_entry(n)]


def entry_problem(name: str, declared: Collection[str]) -> str | None:
    """Why a `tools` entry starting with `mcp:` cannot be used, or None."""
    server, slash, tool = name.removeprefix(PREFIX).partition("/")
    if not server or (slash and not tool):
        return f"{name!r}: write mcp:SERVER (every tool) or mcp:SERVER/TOOL"
    if server not in declared:
        known = ", ".join(sorted(declared)) or "none"
        return (f"{name!r}: no MCP server {server!r} is declared (declared: {known}); add an "
                f"[mcp.{server}] table to jobrunner.toml")
    return None


def policy_key(server: str, tool: str) -> str:
    """The name of a job's policy table for one MCP tool: `[tool."SERVER/TOOL"]`."""
    return f"{server}/{tool}"


def server_of(job: Any, model_name: str) -> str | None:
    """The server an MCP tool's model-facing name (`SERVER__TOOL`) belongs to, if the job
    uses that server."""
    for entry in entries(job):
        if model_name.startswith(f"{entry.server}__"):
            return entry.server
    return None


def provisional_spec(server: str, tool: str, config: McpServerConfig) -> ToolSpec:
    """An MCP tool as loose as its server could make it, for checking a job's policy table
    without connecting: what it tightens past this is wrong whatever the annotations say."""
    return ToolSpec(name=policy_key(server, tool), fn=_never, description="", risk="low",
                    side_effect=False, timeout=config.timeout, retries=MCP_RETRIES,
                    source=f"{PREFIX}{server}", schema={"type": "object"})


def _never(**_args: Any) -> None:
    raise RuntimeError("a provisional MCP tool is never called")


def describe(spec: ToolSpec, origin: tuple[str, str]) -> dict[str, Any]:
    """An MCP tool's resolved policy, as `validate` shows it."""
    return {"tool": spec.name, "server": origin[0], "name": origin[1], "risk": spec.risk,
            "side_effect": spec.side_effect, "retries": spec.retries,
            "timeout": spec.timeout, "untrusted_output": spec.untrusted_output,
            "needs_approval": spec.risk == "high"}


class McpServers:
    """The MCP servers one run (or one approval, one `validate --connect`) uses, each
    connected once; `close()` ends them all. `emit(event, **fields)` gets trace events:
    `mcp.start`, `mcp.failed`, `mcp.elicitation` (declined), `mcp.stderr`."""

    def __init__(self, root: Path, declared: Mapping[str, McpServerConfig], *,
                 emit: Emit | None = None, environ: Mapping[str, str] | None = None,
                 only: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        self.declared = dict(declared)
        self.emit = emit or (lambda *_a, **_f: None)
        self.environ = environ
        self.only = None if only is None else set(only)
        self._connections: dict[str, McpConnection] = {}
        self.origins: dict[str, tuple[str, str]] = {}  # model name -> (server, tool)
        self.untightened: dict[str, ToolSpec] = {}  # model name -> as the server made it
        self._asked: list[dict[str, Any]] = []  # elicitations not yet in the trace

    def __enter__(self) -> McpServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self, server: str) -> McpConnection:
        """The server's connection (not started until first used)."""
        conn = self._connections.get(server)
        if conn is None:
            from jobrunner.tools.mcp_client import McpConnection

            conn = McpConnection(server, self.declared[server], self.root,
                                 environ=os.environ if self.environ is None else self.environ,
                                 on_elicitation=self._asked.append)
            self._connections[server] = conn
        return conn

    def job_tools(self, job: Any, taken: Collection[str] = (),
                  deadline: float | None = None) -> dict[str, ToolSpec]:
        """The tools the job's `mcp:` entries name, by model-facing name, each as the
        server's annotations and the job's `[tool."SERVER/TOOL"]` table make it."""
        found: dict[str, ToolSpec] = {}
        wanted = entries(job)
        servers = list(dict.fromkeys(e.server for e in wanted))
        for server in servers:
            if self.only is not None and server not in self.only:
                continue
            listed = self._listed(server, [*taken, *found], deadline)
            for tool in self._chosen(server, listed, wanted):
                own = self._spec(tool)
                policy = job.spec.tool.get(policy_key(server, tool.name))
                if policy is not None and (kept := policy_problems(own, policy)):
                    # Only tightening applies; what would loosen is ignored, and said.
                    self.emit("mcp.policy_kept", tool=own.name,
                              problems=[f"{key}: {problem}" for key, problem in kept])
                spec = tightened(own, policy)
                found[spec.name] = spec
                self.untightened[spec.name] = own
                self.origins[spec.name] = (server, tool.name)
        return found

    def close(self) -> None:
        """Close every connection (none of its processes is left) and trace what the
        servers wrote on stderr."""
        self._flush()
        for server, conn in self._connections.items():
            conn.close()
            text = conn.stderr_text()
            if text.strip():
                self.emit("mcp.stderr", server=server, text=text)
        self._connections.clear()

    # -- internals --

    def _listed(self, server: str, taken: list[str], deadline: float | None) -> list[McpTool]:
        conn = self.connection(server)
        started = time.monotonic()
        try:
            tools = conn.list_tools(taken=taken, deadline=deadline)
        except McpServerError as exc:
            self.emit("mcp.failed", server=server, error=exc.problem,
                      seconds=round(time.monotonic() - started, 3))
            raise
        self.emit("mcp.start", server=server, transport="stdio" if conn.config.command
                  else "http", pgid=conn.pgid, tools=len(tools),
                  seconds=round(time.monotonic() - started, 3))
        return tools

    @staticmethod
    def _chosen(server: str, listed: list[McpTool], wanted: list[Entry]) -> list[McpTool]:
        names = {t.name for t in listed}
        for entry in wanted:
            if entry.server == server and entry.tool is not None and entry.tool not in names:
                shown = ", ".join(sorted(names)) or "none"
                raise McpListError(server, f"has no tool {entry.tool!r} (mcp:{server}/"
                                   f"{entry.tool}; it lists: {shown})")
        return [t for t in listed if any(e.covers(server, t.name) for e in wanted)]

    def _spec(self, tool: McpTool) -> ToolSpec:
        from jobrunner.tools.dispatch import CallOutcome

        conn = self.connection(tool.server)
        policy = tool.policy

        def call(args: dict[str, Any], seconds: float) -> CallOutcome:
            result = conn.call(tool.name, args, timeout=seconds)
            self._flush()
            return CallOutcome(ok=result.ok, data=result.data, error=result.error,
                               duration=result.duration, timed_out=result.timed_out,
                               raised=result.raised)

        def function(**args: Any) -> ToolResult:
            outcome = call(args, conn.config.timeout)
            return ToolResult(outcome.ok, outcome.data, outcome.error)

        function.__name__ = tool.model_name
        return ToolSpec(
            name=tool.model_name, fn=function, description=tool.description,
            risk=policy.risk, side_effect=policy.side_effect, timeout=conn.config.timeout,
            retries=MCP_RETRIES if policy.retries_allowed else 0,
            untrusted_output=policy.untrusted_output, source=f"{PREFIX}{tool.server}",
            schema=tool.input_schema, call=call, repeatable=policy.retries_allowed)

    def _flush(self) -> None:
        """Elicitations the servers asked for (and were refused), into the trace; from
        the calling thread, as the trace is the run's."""
        while self._asked:
            self.emit("mcp.elicitation", **self._asked.pop(0))

