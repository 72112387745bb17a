"""The SDK's async client on an asyncio loop in a thread of its own: the half of an
`McpConnection` that speaks to the server. The thread opens the transport (a stdio
server spawned through `mcp_guard`, or a streamable HTTP session), completes the
handshake, then waits until it is cancelled; requests are coroutines submitted to its
loop and waited for with a bound."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from jobrunner.formats.mcp import McpServerConfig
from jobrunner.tools import mcp_process
from jobrunner.tools.mcp_config import McpListError, McpStartError

GRACE = 1.0  # on top of a call's budget, for the loop to deliver the SDK's own timeout
MAX_PAGES = 100  # a tools/list that pages on past this is broken


class NotSent(Exception):
    """A request that never reached the server (no connection)."""


class ClientThread:
    """One server's SDK client. `ready` is set once the handshake is done or failed
    (`client` set, or `failure`); `stop()` cancels it, and the transport closes."""

    def __init__(self, name: str, config: McpServerConfig, spawn: Any,
                 headers: dict[str, str],
                 on_elicitation: Callable[[Any], Awaitable[Any]]) -> None:
        self.name = name
        self.config = config
        self.spawn = spawn  # StdioServerParameters, or None for HTTP
        self.headers = headers
        self.on_elicitation = on_elicitation
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.client: Any = None
        self.stderr: mcp_process.StderrTap | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: Any = None  # the anyio CancelScope around the whole client
        self._thread = threading.Thread(target=self._thread_main, name=f"mcp-{name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: float) -> bool:
        """Cancel the client and wait up to `wait` for its thread; whether it ended."""
        loop, scope = self._loop, self._scope
        if loop is not None and scope is not None and not loop.is_closed():
            # RuntimeError: the loop ended on its own between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(scope.cancel)
        self._thread.join(wait)
        return not self._thread.is_alive()

    def join(self, wait: float) -> None:
        self._thread.join(wait)

    @property
    def usable(self) -> bool:
        return self.failure is None and self.client is not None

    # -- requests --

    def submit(self, coro: Any, budget: float, closed: bool = False) -> Any:
        """Run `coro` on the loop; TimeoutError after `budget` (and a grace)."""
        loop, client = self._loop, self.client
        if loop is None or client is None or loop.is_closed() or closed:
            coro.close()
            raise NotSent("the server is not running (the connection ended or was closed)")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=budget + GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None
        except concurrent.futures.CancelledError:
            raise McpStartError(self.name, "the connection was closed") from None

    async def list_all(self, budget: float) -> list[Any]:
        """Every page of tools/list, within `budget`."""
        import anyio

        tools: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        with anyio.fail_after(budget):
            for _ in range(MAX_PAGES):
                page = await self.client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return tools
                if cursor in seen:
                    raise McpListError(self.name, f"tools/list repeats cursor {cursor!r}")
                seen.add(cursor)
        raise McpListError(self.name, f"tools/list is still paging after {MAX_PAGES} pages")

    async def call(self, tool: str, args: dict[str, Any], budget: float) -> Any:
        import anyio

        # The SDK's own timeout cancels the request on the server; this one is the bound
        # on everything (input-required rounds, a blocked write).
        with anyio.fail_after(budget + GRACE / 2):
            return await self.client.call_tool(tool, args, read_timeout_seconds=budget)

    # -- the thread --

    def _thread_main(self) -> None:
        import anyio

        try:
            anyio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - reported through start()/calls
            self.failure = self.failure or exc
        finally:
            self.client = None
            self.ready.set()

    async def _main(self) -> None:
        import anyio
        from mcp import Client
        from mcp_types import Implementation

        from jobrunner.version import __version__

        self._loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                async with self._transport() as transport, Client(
                    transport, cache=None, read_timeout_seconds=self.config.timeout,
                    elicitation_callback=self._elicitation,
                    client_info=Implementation(name="jobrunner", version=__version__),
                ) as client:
                    self.client = client
                    self.ready.set()
                    await anyio.sleep_forever()
            except Exception as exc:  # noqa: BLE001 - start() reports it
                self.failure = exc
            finally:
                self.client = None
                self.ready.set()

    async def _elicitation(self, _context: Any, params: Any) -> Any:
        return await self.on_elicitation(params)

    def _transport(self) -> Any:
        """An async context manager that yields the SDK transport for this server."""
        @contextlib.asynccontextmanager
        async def stdio():  # type: ignore[no-untyped-def]
            from mcp.client.stdio import stdio_client

            self.stderr = mcp_process.StderrTap()
            try:
                yield stdio_client(self.spawn, errlog=self.stderr.writer)
            finally:
                self.stderr.writer.close()

        @contextlib.asynccontextmanager
        async def http():  # type: ignore[no-untyped-def]
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            timeout = httpx2.Timeout(min(30.0, self.config.timeout),
                                     read=max(300.0, self.config.timeout + 5))
            async with httpx2.AsyncClient(headers=self.headers, timeout=timeout) as client:
                yield streamable_http_client(self.config.url, http_client=client)

        return stdio() if self.spawn is not None else http()
