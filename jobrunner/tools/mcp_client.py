"""A synchronous connection to one MCP server: start, list tools, call, close.

A server is declared in `jobrunner.toml` as `[mcp.NAME]` (`mcp_config.McpServerConfig`,
with the tool policy and model-facing names). The session loop is plain synchronous code,
so `McpConnection` runs the SDK's async client on an asyncio loop in a background thread
of its own and hands out plain results:

    with McpConnection("files", config, project_root) as conn:
        tools = conn.list_tools()                 # McpListError/McpStartError: stop-and-report
        result = conn.call("read", {"path": "a"}, deadline=run_deadline)   # never raises

The `mcp` package is imported only when a connection starts (`pip install 'jobrunner[mcp]'`).
A stdio server never outlives the run: see `McpConnection.close` and `mcp_guard.py`.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import select
import shutil
import signal
import sys
import termios
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.redact import Redactor
from jobrunner.tools import mcp_guard
from jobrunner.tools.mcp_config import (
    SAFE_ENV,
    McpListError,
    McpServerConfig,
    McpServerError,
    McpStartError,
    McpTool,
    assign_model_names,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'jobrunner[mcp]'"

STDERR_LIMIT = 64 * 1024  # bytes of a server's stderr kept for the trace (head and tail)
_STDERR_HEAD = 8 * 1024
_MAX_PAGES = 100  # a tools/list that pages on past this is broken
_GRACE = 1.0  # on top of a call's budget, for the loop to deliver the SDK's own timeout
_STOP_WAIT = 2.0  # the SDK closes stdin and waits this long for the server to exit...
_TERM_WAIT = 1.0  # ...then SIGTERMs the group; after this much more, SIGKILL from here
_GONE_WAIT = 5.0  # after SIGKILL, how long close() waits to see the group gone


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


# --- the connection --------------------------------------------------------------------

_OPEN: weakref.WeakSet[McpConnection] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """No server outlives the interpreter (kill -9 is the watchdog's: see mcp_guard.py)."""
    for conn in list(_OPEN):
        conn.close()


class McpConnection:
    """One server, driven synchronously. Thread-safe; `close()` is idempotent.

    The SDK client lives in a background thread running an asyncio loop: `start()` spawns
    it and waits for the handshake; each request is submitted to that loop and waited for
    with a bound, so a hung server costs at most its budget. Server-initiated requests are
    answered without a human: elicitation is declined (and recorded, and passed to
    `on_elicitation`, which runs on the connection's thread), sampling and roots are
    refused (the SDK's defaults: the client declares neither capability).
    """

    def __init__(self, name: str, config: McpServerConfig, root: Path, *,
                 environ: Mapping[str, str] | None = None,
                 on_elicitation: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.name = name
        self.config = config
        self.root = Path(root)
        self.environ = dict(os.environ if environ is None else environ)
        self.on_elicitation = on_elicitation
        self.elicitations: list[dict[str, Any]] = []  # what servers asked, for the trace
        self.secrets = config.secret_values(self.environ)
        self.redactor = Redactor(self.secrets)
        self.pgid: int | None = None  # the stdio server's process group, once known
        self._lock = threading.RLock()  # one start at a time; close() does not wait for it
        self._close_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: Any = None  # the anyio CancelScope around the whole client
        self._client: Any = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._start_error: McpStartError | None = None  # a failed start stays failed
        self._stderr: _StderrTap | None = None
        self._tools: dict[str, McpTool] | None = None
        self._validators: dict[str, Any] = {}
        self._lost = False  # the server closed the connection: later calls fail fast
        self._closed = False

    def __enter__(self) -> McpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle --

    def start(self, deadline: float | None = None, timeout: float | None = None) -> None:
        """Start the server and complete the handshake within `timeout` (default: the
        server's) and before `deadline`, a `time.monotonic()` value. Raises `McpStartError`
        (or `ConfigError` for a variable missing from jobrunner's environment)."""
        with self._lock:
            if self._start_error is not None:
                raise self._start_error
            if self._closed:
                raise McpStartError(self.name, "the connection is closed")
            if self._thread is not None:
                if self._failure is not None or self._client is None:
                    raise McpStartError(self.name, self._start_problem())
                return
            _import_mcp()
            budget = self.config.timeout if timeout is None else timeout
            if deadline is not None:
                budget = min(budget, deadline - time.monotonic())
            if budget <= 0:
                raise McpStartError(self.name, "no time left in the run to start it")
            # Configuration problems (a missing variable, a missing program) surface here,
            # before any thread or process exists.
            spawn = self._spawn_args() if self.config.command is not None else None
            headers = self._headers() if spawn is None else {}
            _OPEN.add(self)
            self._thread = threading.Thread(target=self._thread_main, args=(spawn, headers),
                                            name=f"mcp-{self.name}", daemon=True)
            self._thread.start()
            answered = self._ready.wait(budget)
            if self._closed:
                problem = "the connection was closed while the server was starting"
            elif not answered or (self._client is None and self._failure is None):
                problem = f"no answer to the handshake within {budget:g}s"
                problem += self._stderr_hint()
            elif self._failure is not None or self._client is None:
                problem = self._start_problem()
            else:
                problem = None
            if problem is not None:
                self._start_error = McpStartError(self.name, problem)
                self.close()
                raise self._start_error
            if self._stderr is not None:
                # Written before the server was exec'd, so it is in the pipe by now.
                self.pgid = self._stderr.wait_marker(1.0)

    def close(self) -> None:
        """Stop the client and make sure no process of a stdio server is left: the SDK
        closes its stdin and waits, then SIGTERMs its group; we SIGKILL the group after a
        bounded wait and once more at the end (what the server left running, and the
        watchdog), then wait until the group is gone."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        thread = self._thread
        if thread is not None:
            loop, scope = self._loop, self._scope
            if loop is not None and scope is not None and not loop.is_closed():
                # RuntimeError: the loop ended on its own between the check and the call.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(scope.cancel)
            thread.join(_STOP_WAIT + _TERM_WAIT)
            if thread.is_alive():
                self._kill_group()  # a server that will not exit: unblock the SDK's wait
                thread.join(_STOP_WAIT + _TERM_WAIT)
        self._kill_group()
        self._wait_group_gone()
        if self._stderr is not None:
            self._stderr.close()
        _OPEN.discard(self)

    # -- requests --

    def list_tools(self, taken: Collection[str] = (),
                   deadline: float | None = None) -> list[McpTool]:
        """Every tool of the server (paging through `next_cursor`), with model names that
        clash with nothing in `taken`. Raises `McpStartError` or `McpListError`."""
        self.start(deadline)
        budget = self._budget(None, deadline)
        if budget <= 0:
            raise McpListError(self.name, "no time left in the run to list its tools")
        try:
            listed = self._submit(self._list_all(budget), budget)
        except McpServerError:
            raise
        except TimeoutError as exc:
            raise McpListError(self.name, f"no answer to tools/list within {budget:g}s"
                               + self._stderr_hint()) from exc
        except Exception as exc:  # every failure of the request is the same stop-and-report
            raise McpListError(self.name, f"tools/list failed: {_describe(exc)}"
                               + self._stderr_hint()) from exc
        tools = self._adopt_listing(listed, taken)
        with self._lock:
            self._tools = {t.name: t for t in tools}
            self._validators.clear()
        return tools

    def validate(self, tool: str, args: Any) -> str | None:
        """None if `args` fit the tool's input schema, else feedback for the model that
        quotes the schema (the tool must have been listed)."""
        spec = (self._tools or {}).get(tool)
        if spec is None:
            return f"{self.name} has no tool {tool!r}"
        schema_text = json.dumps(spec.input_schema, separators=(",", ":"))
        if not isinstance(args, dict):
            return f"arguments must be a JSON object; schema: {schema_text}"
        validator = self._validators.get(tool)
        if validator is None:
            from jsonschema.validators import validator_for

            validator = validator_for(spec.input_schema)(spec.input_schema)
            self._validators[tool] = validator
        problems = [f"{'.'.join(map(str, e.absolute_path)) or '(arguments)'}: {e.message}"
                    for e in sorted(validator.iter_errors(args),
                                    key=lambda e: [str(p) for p in e.path])]
        if not problems:
            return None
        return (f"invalid arguments for {spec.model_name}: {'; '.join(problems[:5])}. "
                f"Valid schema: {schema_text}")

    def call(self, tool: str, args: Any, timeout: float | None = None,
             deadline: float | None = None) -> McpCallResult:
        """Call a tool, bounded by min(server timeout, `timeout`, time to `deadline`).
        Never raises: every failure is a failed result naming the server and the tool."""
        started = time.monotonic()
        where = f"{self.name}.{tool}"

        def failed(error: str, **flags: bool) -> McpCallResult:
            return McpCallResult(ok=False, error=self.redactor.text(f"{where}: {error}"),
                                 duration=time.monotonic() - started, **flags)

        if self._lost:
            return failed("the server is gone (it exited or closed the connection earlier)")
        if self._tools is None:
            try:
                self.list_tools(deadline=deadline)
            except McpServerError as exc:
                return failed(exc.problem)
            except ConfigError as exc:
                return failed(str(exc))
        if (feedback := self.validate(tool, args)) is not None:
            return failed(feedback, invalid_arguments=True)
        budget = self._budget(timeout, deadline)
        if budget <= 0:
            return failed("timed out after 0s (no time left in the run)", timed_out=True)
        try:
            result = self._submit(self._call(tool, args, budget), budget)
        except TimeoutError:
            return failed(f"timed out after {budget:g}s", timed_out=True)
        except _NotSent as exc:
            return failed(str(exc))
        except Exception as exc:  # every failure of the request becomes a result
            return self._call_failure(exc, budget, failed)
        data = self.redactor.data(_content_data(result))
        if result.is_error:
            return McpCallResult(ok=False, data=data, error=self.redactor.text(
                f"{where}: {_error_text(result)}"), duration=time.monotonic() - started)
        return McpCallResult(ok=True, data=data, duration=time.monotonic() - started)

    def stderr_text(self) -> str:
        """The server's stderr as captured (bounded, head and tail), secrets redacted."""
        return self.redactor.text(self._stderr.text()) if self._stderr is not None else ""

    # -- internals: the loop thread --

    def _thread_main(self, spawn: Any, headers: dict[str, str]) -> None:
        import anyio

        try:
            anyio.run(self._main, spawn, headers)
        except BaseException as exc:  # noqa: BLE001 - reported through start()/calls
            self._failure = self._failure or exc
        finally:
            self._client = None
            self._ready.set()

    async def _main(self, spawn: Any, headers: dict[str, str]) -> None:
        import anyio
        from mcp import Client
        from mcp_types import Implementation

        from jobrunner import __version__

        self._loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                async with self._transport(spawn, headers) as transport, Client(
                    transport, cache=None, read_timeout_seconds=self.config.timeout,
                    elicitation_callback=self._decline_elicitation,
                    client_info=Implementation(name="jobrunner", version=__version__),
                ) as client:
                    self._client = client
                    self._ready.set()
                    await anyio.sleep_forever()
            except Exception as exc:  # noqa: BLE001 - start() reports it
                self._failure = exc
            finally:
                self._client = None
                self._ready.set()

    def _transport(self, spawn: Any, headers: dict[str, str]) -> Any:
        """An async context manager that yields the SDK transport for this server."""
        @contextlib.asynccontextmanager
        async def stdio():  # type: ignore[no-untyped-def]
            from mcp.client.stdio import stdio_client

            self._stderr = _StderrTap()
            try:
                yield stdio_client(spawn, errlog=self._stderr.writer)
            finally:
                self._stderr.writer.close()

        @contextlib.asynccontextmanager
        async def http():  # type: ignore[no-untyped-def]
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            timeout = httpx2.Timeout(min(30.0, self.config.timeout),
                                     read=max(300.0, self.config.timeout + 5))
            async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http_client:
                yield streamable_http_client(self.config.url, http_client=http_client)

        return stdio() if spawn is not None else http()

    async def _decline_elicitation(self, context: Any, params: Any) -> Any:
        import mcp_types

        asked = {"server": self.name, "mode": getattr(params, "mode", "form"),
                 "message": self.redactor.text(getattr(params, "message", "")),
                 "answer": "decline"}
        self.elicitations.append(asked)
        if self.on_elicitation is not None:
            try:
                self.on_elicitation(dict(asked))
            except Exception:  # the server still gets its answer; the trace loses one event
                log.exception("on_elicitation callback failed for server %s", self.name)
        return mcp_types.ElicitResult(action="decline")

    async def _list_all(self, budget: float) -> list[Any]:
        import anyio

        tools: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        with anyio.fail_after(budget):
            for _ in range(_MAX_PAGES):
                page = await self._client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return tools
                if cursor in seen:
                    raise McpListError(self.name, f"tools/list repeats cursor {cursor!r}")
                seen.add(cursor)
        raise McpListError(self.name, f"tools/list is still paging after {_MAX_PAGES} pages")

    async def _call(self, tool: str, args: dict[str, Any], budget: float) -> Any:
        import anyio

        # The SDK's own timeout cancels the request on the server; this one is the bound
        # on everything (input-required rounds, a blocked write).
        with anyio.fail_after(budget + _GRACE / 2):
            return await self._client.call_tool(tool, args, read_timeout_seconds=budget)

    def _submit(self, coro: Any, budget: float) -> Any:
        loop, client = self._loop, self._client
        if loop is None or client is None or loop.is_closed() or self._closed:
            coro.close()
            raise _NotSent("the server is not running (the connection ended or was closed)")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=budget + _GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None
        except concurrent.futures.CancelledError:
            raise McpStartError(self.name, "the connection was closed") from None

    # -- internals: interpretation --

    def _adopt_listing(self, listed: list[Any], taken: Collection[str]) -> list[McpTool]:
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        names = assign_model_names(self.name, [t.name for t in listed], taken)
        tools = []
        for raw in listed:
            schema = raw.input_schema
            if schema.get("type") != "object":
                raise McpListError(self.name, f"tool {raw.name!r}: the input schema must "
                                   "be of type 'object'")
            try:
                validator_for(schema).check_schema(schema)
            except SchemaError as exc:
                raise McpListError(self.name, f"tool {raw.name!r}: invalid input schema: "
                                   f"{exc.message}") from exc
            hints = None
            if raw.annotations is not None:
                hints = raw.annotations.model_dump(exclude_none=True)
            tools.append(McpTool(
                server=self.name, name=raw.name, model_name=names[raw.name],
                description=self.redactor.text(raw.description or raw.title or raw.name),
                input_schema=schema, annotations=hints,
            ))
        return tools

    def _call_failure(self, exc: Exception, budget: float,
                      failed: Callable[..., McpCallResult]) -> McpCallResult:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        if isinstance(exc, MCPError) and exc.code == REQUEST_TIMEOUT:
            return failed(f"timed out after {budget:g}s", timed_out=True)
        if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
            self._lost = True
            return failed("the server closed the connection mid-call (it exited or "
                          "crashed)" + self._stderr_hint(), raised=True)
        if isinstance(exc, McpServerError):
            self._lost = True
            return failed(exc.problem, raised=True)
        if isinstance(exc, MCPError):
            return failed(f"protocol error {exc.code}: {exc}")
        return failed(f"unusable answer: {_describe(exc)}", raised=True)

    # -- internals: processes --

    def _spawn_args(self) -> Any:
        """StdioServerParameters for the guard that becomes the server (see mcp_guard)."""
        from mcp import StdioServerParameters

        assert self.config.command is not None
        env = {k: self.environ[k] for k in SAFE_ENV if k in self.environ}
        env.update(self.config.env)
        for var in self.config.secrets_env:
            if var not in self.environ:
                raise ConfigError(f"mcp.{self.name}.secrets_env: {var} is not set in "
                                  "jobrunner's environment")
            env[var] = self.environ[var]
        program = self.config.command[0]
        if "/" in program:
            found = (self.root / program).is_file() and os.access(self.root / program, os.X_OK)
        else:
            found = shutil.which(program, path=env.get("PATH", os.defpath)) is not None
        if not found:
            raise McpStartError(self.name, f"command not found: {program!r} (looked in "
                                + ("the project" if "/" in program else "the server's PATH")
                                + ")")
        guard = [sys.executable, "-I", "-S", mcp_guard.__file__, str(os.getpid())]
        return StdioServerParameters(command=guard[0], args=[*guard[1:], *self.config.command],
                                     env=env, cwd=str(self.root))

    def _headers(self) -> dict[str, str]:
        """The HTTP headers of `headers_env`, from jobrunner's environment."""
        headers = {}
        for header, var in self.config.headers_env.items():
            if var not in self.environ:
                raise ConfigError(f"mcp.{self.name}.headers_env.{header}: {var} is not set in "
                                  "jobrunner's environment")
            headers[header] = self.environ[var]
        return headers

    def _kill_group(self) -> None:
        pgid = self._stderr.pgid if self._stderr is not None else None
        self.pgid = pgid
        if pgid is None:
            return  # never started, or over HTTP: no process of ours
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is already gone
        except PermissionError:
            log.warning("cannot signal process group %d of MCP server %s", pgid, self.name)

    def _wait_group_gone(self) -> None:
        if self.pgid is None:
            return
        end = time.monotonic() + _GONE_WAIT
        while group_alive(self.pgid) and time.monotonic() < end:
            time.sleep(0.01)

    # -- internals: small things --

    def _budget(self, timeout: float | None, deadline: float | None) -> float:
        budget = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
        return budget

    def _start_problem(self) -> str:
        exc = self._failure
        if exc is None:
            return "the server stopped" + self._stderr_hint()
        leaf = _leaf(exc)
        if isinstance(leaf, McpServerError | ConfigError):
            return str(getattr(leaf, "problem", leaf))
        if isinstance(leaf, OSError):
            return f"cannot start: {leaf.strerror or leaf}" + self._stderr_hint()
        return f"the handshake failed: {_describe(leaf)}" + self._stderr_hint()

    def _stderr_hint(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.settle()
        lines = [line for line in self.stderr_text().splitlines() if line.strip()]
        return f"; its stderr ends: {lines[-1][:300]}" if lines else ""


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in process group `pgid`. Reads /proc
    where there is one (a zombie still answers signal 0), else probes with signal 0."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


class _StderrTap:
    """A pipe for a server's stderr, drained by a thread into a bounded buffer: the first
    `_STDERR_HEAD` bytes and the last ones, up to `STDERR_LIMIT` in all. It also picks up
    the guard's marker line (the process group id) ahead of the server's own output.
    Each read and its bookkeeping happen under the lock, so `settle` can tell when all that
    was written so far is in the buffer."""

    def __init__(self) -> None:
        self._fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
        self.pgid: int | None = None
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self._pending = b""  # until the marker line is complete
        self._marker_done = False
        self._marker_seen = threading.Event()
        self._eof = False
        self._thread = threading.Thread(target=self._drain, name="mcp-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._eof:
            select.select([self._fd], [], [])
            with self._lock:
                chunk = os.read(self._fd, 65536)  # readable, and only this thread reads
                if not chunk:
                    self._eof = True
                    break
                if not self._marker_done:
                    chunk = self._take_marker(chunk)
                self._keep(chunk)
        os.close(self._fd)

    def _take_marker(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        prefix = mcp_guard.MARKER.encode()
        if not data.startswith(prefix[:len(data)]):
            self._marker_done = True
            return data
        if b"\n" not in data:
            self._pending = data
            return b""
        line, rest = data.split(b"\n", 1)
        self._marker_done = True
        self._pending = b""
        if line.startswith(prefix):
            self.pgid = int(line[len(prefix):].strip())
            self._marker_seen.set()
            return rest
        return data

    def wait_marker(self, timeout: float) -> int | None:
        self._marker_seen.wait(timeout)
        return self.pgid

    def _keep(self, chunk: bytes) -> None:
        room = _STDERR_HEAD - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        excess = len(self._tail) - (STDERR_LIMIT - _STDERR_HEAD)
        if excess > 0:
            del self._tail[:excess]
            self._dropped += excess

    def settle(self, wait: float = 0.5) -> None:
        """Wait (a little) until what is already in the pipe is in the buffer."""
        end = time.monotonic() + wait
        while time.monotonic() < end:
            with self._lock:
                if self._eof or _unread(self._fd) == 0:
                    return
            time.sleep(0.01)

    def text(self) -> str:
        with self._lock:
            head, tail, dropped = bytes(self._head), bytes(self._tail), self._dropped
        gap = f"\n[... {dropped} bytes of stderr dropped ...]\n" if dropped else ""
        return head.decode(errors="replace") + gap + tail.decode(errors="replace")

    def close(self) -> None:
        """After the server group is gone: the writers are closed, the drain ends."""
        if not self.writer.closed:
            self.writer.close()
        self._thread.join(1.0)


class _NotSent(Exception):
    """A request that never reached the server (no connection)."""


def _unread(fd: int) -> int:
    """Bytes waiting in a pipe."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def _import_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"MCP servers need the mcp package: {INSTALL_HINT}") from exc


def _leaf(exc: BaseException) -> BaseException:
    """The first real cause inside the SDK's (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _leaf(exc)
    text = str(leaf).strip().splitlines()
    return f"{type(leaf).__name__}: {text[0][:300]}" if text else type(leaf).__name__


def _content_data(result: Any) -> Any:
    """What a tool returned, as jobrunner's result data: the structured content when there
    is some, else the text of its content blocks (media and blobs summarised, not inlined)."""
    if result.structured_content is not None:
        return result.structured_content
    parts: list[Any] = []
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind == "resource":
            inner = block.resource
            text = getattr(inner, "text", None)
            parts.append(text if text is not None else f"[resource {inner.uri}, binary]")
        else:
            parts.append(f"[{kind} content]")
    if len(parts) == 1:
        return parts[0]
    return "\n".join(parts) if parts else None


def _error_text(result: Any) -> str:
    texts = [b.text for b in result.content if getattr(b, "type", None) == "text"]
    return " ".join(texts).strip()[:2000] or "the tool reported an error (no message)"
