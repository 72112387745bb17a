"""An MCP server for the client's tests, written with the SDK's `MCPServer`.

    python tests/mcp_test_server.py [--http] [--page-size N] [--malformed KIND]

Over stdio by default. `--http` serves streamable HTTP on 127.0.0.1, on a port the
kernel picks, and prints `URL http://127.0.0.1:PORT/mcp` as its first stdout line.
`--page-size N` splits tools/list into pages of N (with `nextCursor`).
`--malformed missing-schema|bad-schema|hang` breaks the listing: a tool without an input
schema (invalid on the wire), one whose schema is not valid JSON Schema, or no answer.

Tools: succeed (`echo`, `add`), fail (`fail`: an isError result), hang, crash the server
(`crash`: os._exit), spawn a grandchild that ignores SIGTERM, write to stderr, ask for
elicitation (`ask`) or sampling (`sample`), report the environment and working directory
or the HTTP request headers, serve a page of untrusted text (`page`, from the JSON list
in the file `pages.json` of its working directory), and one tool per annotation (`t_*`).
All but the `t_*` tools are annotated read-only, so a job runs them without approval.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, MCPServer, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CreateMessageResult, SamplingMessage, TextContent, ToolAnnotations
from pydantic import BaseModel

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
GRANDCHILD = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # only SIGKILL of the group ends it
    "time.sleep(3600)\n"
)


class Answer(BaseModel):
    answer: str


# Elicitation and sampling through resolvers: the SDK asks mid-call (2025 protocol) or
# through an input-required result (2026 protocol), whichever was negotiated.
def ask_user(question: str) -> Elicit[Answer]:
    return Elicit(question, Answer)


def ask_model(question: str) -> Sample:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=question))
    return Sample([message], max_tokens=50)


def build(page_size: int | None, malformed: str | None) -> MCPServer:
    server = MCPServer("jobrunner-test", version="1.0")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def add(a: int, b: int) -> dict[str, int]:
        """Add two integers (structured result)."""
        return {"sum": a + b}

    @server.tool(annotations=READ_ONLY)
    def fail(message: str) -> str:
        """Always fails with the message (an isError result)."""
        raise ToolError(message)

    @server.tool(annotations=READ_ONLY)
    async def hang(seconds: float = 3600) -> str:
        """Sleep for `seconds` before answering."""
        await anyio.sleep(seconds)
        return "woke up"

    @server.tool(annotations=READ_ONLY)
    def crash(code: int = 3) -> str:
        """Exit the server process at once, mid-call."""
        sys.stderr.write(f"crashing with code {code}\n")
        sys.stderr.flush()
        os._exit(code)

    @server.tool(annotations=READ_ONLY)
    def spawn_grandchild() -> dict[str, int]:
        """Start a process that ignores SIGTERM and sleeps for an hour; return its pid."""
        child = subprocess.Popen([sys.executable, "-c", GRANDCHILD],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        return {"pid": child.pid, "server_pid": os.getpid(), "pgid": os.getpgrp()}

    @server.tool(annotations=READ_ONLY)
    def write_stderr(text: str, repeat: int = 1) -> str:
        """Write `text` to stderr `repeat` times."""
        for _ in range(repeat):
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return "written"

    @server.tool(annotations=READ_ONLY)
    def ask(question: str,
            outcome: Annotated[ElicitationResult[Answer], Resolve(ask_user)]) -> str:
        """Ask the user a question through elicitation; report what came back."""
        return f"action={outcome.action}"

    @server.tool(annotations=READ_ONLY)
    def sample(question: str,
               reply: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
        """Ask the client's model (sampling)."""
        return str(reply.content)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def request_headers(ctx: Context) -> dict[str, str]:
        """The HTTP headers of this request (empty over stdio)."""
        return dict(ctx.headers or {})

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def environment() -> dict[str, Any]:
        """The server's environment and working directory."""
        return {"env": dict(os.environ), "cwd": os.getcwd()}

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    def page(index: int) -> str:
        """Page `index` of an outside site (its text is untrusted)."""
        pages = json.loads(Path("pages.json").read_text(encoding="utf-8"))
        item = pages[index]
        return item if isinstance(item, str) else json.dumps(item)

    annotated = {
        "t_readonly": ToolAnnotations(read_only_hint=True),
        "t_destructive": ToolAnnotations(read_only_hint=False, destructive_hint=True),
        "t_additive": ToolAnnotations(read_only_hint=False, destructive_hint=False),
        "t_idempotent": ToolAnnotations(destructive_hint=False, idempotent_hint=True),
        "t_openworld": ToolAnnotations(read_only_hint=True, open_world_hint=True),
        "t_closedworld": ToolAnnotations(read_only_hint=True, open_world_hint=False),
        "t_none": None,
    }
    for name, hints in annotated.items():
        server.add_tool(lambda: "ok", name=name, description=f"Carries {name[2:]}.",
                        annotations=hints)

    if page_size or malformed:
        server.middleware.append(_listing(page_size, malformed))
    return server


def _listing(page_size: int | None, malformed: str | None):
    """A middleware rewriting the tools/list result after the SDK built it."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/list" and malformed == "hang":
            await anyio.sleep_forever()
        result = await call_next(ctx)
        if ctx.method != "tools/list" or not isinstance(result, dict):
            return result
        tools = list(result["tools"])
        if malformed == "missing-schema":
            tools[0] = {k: v for k, v in tools[0].items() if k != "inputSchema"}
        elif malformed == "bad-schema":
            tools[0] = {**tools[0], "inputSchema": {"type": "object",
                                                    "properties": {"x": {"type": 12}}}}
        if page_size:
            start = int((ctx.params or {}).get("cursor") or 0)
            end = start + page_size
            result = {**result, "nextCursor": str(end) if end < len(tools) else None}
            tools = tools[start:end]
            if result["nextCursor"] is None:
                del result["nextCursor"]
        return {**result, "tools": tools}

    return middleware


async def serve_http(server: MCPServer) -> None:
    """Streamable HTTP on a kernel-chosen port of 127.0.0.1; the URL goes to stdout."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning")
    print(f"URL http://127.0.0.1:{port}/mcp", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--page-size", type=int)
    parser.add_argument("--malformed", choices=["missing-schema", "bad-schema", "hang"])
    options = parser.parse_args()
    # A test that kills the group with SIGTERM should see the server go, not a traceback.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    server = build(options.page_size, options.malformed)
    if options.http:
        anyio.run(serve_http, server)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
