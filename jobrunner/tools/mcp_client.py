"""A synchronous connection to one MCP server: start, list tools, call, close.

A server is declared in `jobrunner.toml` as `[mcp.NAME]` (`config.mcp.McpServerConfig`;
tool policy and model-facing names are `mcp_config`). The session loop is plain
synchronous code, so `McpConnection` runs the SDK's async client on an asyncio loop in a
background thread of its own and hands out plain results:

    with McpConnection("files", config, project_root) as conn:
        tools = conn.list_tools()                 # McpListError/McpStartError: stop-and-report
        result = conn.call("read", {"path": "a"}, deadline=run_deadline)   # never raises

The `mcp` package is imported only when a connection starts (`pip install 'jobrunner[mcp]'`).
A stdio server never outlives the run: see `McpConnection.close` and `mcp_guard.py`; its
processes are `mcp_process`, the meaning of its answers `mcp_results`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.redact import Redactor
from jobrunner.tools import mcp_process
from jobrunner.tools import schema as json_schema
from jobrunner.tools.mcp_config import (
    McpListError,
    McpServerConfig,
    McpServerError,
    McpStartError,
    McpTool,
)
from jobrunner.tools.mcp_loop import ClientThread, NotSent
from jobrunner.tools.mcp_process import STDERR_LIMIT, group_alive  # noqa: F401 - its API
from jobrunner.tools.mcp_results import (
    McpCallResult,
    adopt_listing,
    call_exception,
    content_data,
    describe,
    start_problem,
)
from jobrunner.tools.mcp_results import error_text as result_error_text

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'jobrunner[mcp]'"

_STOP_WAIT = 2.0  # the SDK closes stdin and waits this long for the server to exit...
_TERM_WAIT = 1.0  # ...then SIGTERMs the group; after this much more, SIGKILL from here

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
        self._side: ClientThread | None = None  # the SDK client's thread, once started
        self._start_error: McpStartError | None = None  # a failed start stays failed
        self._tools: dict[str, McpTool] | None = None
        self._lost = ""  # why the server went away: later calls fail fast, saying so
        self._closed = False

    def __enter__(self) -> McpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle --

    def start(self, deadline: float | None = None, timeout: float | None = None) -> None:
        """Start the server and complete the handshake within `timeout` (default: its
        `start_timeout`) and before `deadline`. Raises `McpStartError` (the run stops and reports)
        (or `ConfigError` for a variable missing from jobrunner's environment)."""
        with self._lock:
            if self._start_error is not None:
                raise self._start_error
            if self._closed:
                raise McpStartError(self.name, "the connection is closed")
            if self._side is not None:
                if not self._side.usable:
                    raise McpStartError(self.name, self._start_problem())
                return
            _import_mcp()
            budget = self.config.start_timeout if timeout is None else timeout
            if deadline is not None:
                budget = min(budget, deadline - time.monotonic())
            if budget <= 0:
                raise McpStartError(self.name, "no time left in the run to start it")
            side = self._launch()
            problem = self._handshake_problem(budget, side.ready.wait(budget))
            if problem is not None:
                self._start_error = McpStartError(self.name, problem)
                self.close()
                raise self._start_error
            if side.stderr is not None:
                # Written before the server was exec'd, so it is in the pipe by now.
                self.pgid = side.stderr.wait_marker(1.0)

    def _launch(self) -> ClientThread:
        """The loop thread, which spawns the server (or opens the HTTP session). What can
        be refused before that (a missing variable, a missing program) raises here,
        before any thread or process exists."""
        if self.config.command is not None:
            spawn = mcp_process.spawn_parameters(self.name, self.config, self.root,
                                                 self.environ)
            headers: dict[str, str] = {}
        else:
            spawn, headers = None, mcp_process.http_headers(self.name, self.config,
                                                            self.environ)
        _OPEN.add(self)
        self._side = ClientThread(self.name, self.config, spawn, headers,
                                  self._decline_elicitation)
        self._side.start()
        return self._side

    def _handshake_problem(self, budget: float, answered: bool) -> str | None:
        if self._closed:
            return "the connection was closed while the server was starting"
        assert self._side is not None
        if not answered or (self._side.client is None and self._side.failure is None):
            return f"no answer to the handshake within {budget:g}s" + self._stderr_hint()
        if not self._side.usable:
            return self._start_problem()
        return None

    def close(self) -> None:
        """Stop the client and make sure no process of a stdio server is left: the SDK
        closes its stdin and waits, then SIGTERMs its group; we SIGKILL the group after a
        bounded wait and once more at the end (what the server left running, and the
        watchdog), then wait until the group is gone."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        side = self._side
        if side is not None and not side.stop(_STOP_WAIT + _TERM_WAIT):
            self._kill_group()  # a server that will not exit: unblock the SDK's wait
            side.join(_STOP_WAIT + _TERM_WAIT)
        self._kill_group()
        mcp_process.wait_group_gone(self.pgid)
        if side is not None and side.stderr is not None:
            side.stderr.close()
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
            listed = self._send(lambda side: side.list_all(budget), budget)
        except McpServerError:
            raise
        except TimeoutError as exc:
            raise McpListError(self.name, f"no answer to tools/list within {budget:g}s"
                               + self._stderr_hint()) from exc
        except Exception as exc:  # every failure of the request is the same stop-and-report
            raise McpListError(self.name, f"tools/list failed: {describe(exc)}"
                               + self._stderr_hint()) from exc
        tools = adopt_listing(self.name, listed, taken, self.redactor)
        with self._lock:
            self._tools = {t.name: t for t in tools}
        return tools

    def validate(self, tool: str, args: Any) -> str | None:
        """None if `args` fit the tool's input schema, else feedback for the model that
        quotes the schema (the tool must have been listed)."""
        spec = (self._tools or {}).get(tool)
        if spec is None:
            return f"{self.name} has no tool {tool!r}"
        return json_schema.feedback(spec.model_name, spec.input_schema, args)

    def call(self, tool: str, args: Any, timeout: float | None = None,
             deadline: float | None = None) -> McpCallResult:
        """Call a tool, bounded by min(server timeout, `timeout`, time to `deadline`).
        Never raises: every failure is a failed result naming the server and the tool."""
        started = time.monotonic()

        def failed(error: str, **flags: bool) -> McpCallResult:
            return McpCallResult(ok=False, error=self._where(tool, error),
                                 duration=time.monotonic() - started, **flags)

        refused = self._refusal(tool, args, deadline)
        if refused is not None:
            error, invalid = refused
            return failed(error, invalid_arguments=invalid)
        budget = self._budget(timeout, deadline)
        if budget <= 0:
            return failed("timed out after 0s (no time left in the run)", timed_out=True)
        try:
            result = self._send(lambda side: side.call(tool, args, budget), budget)
        except TimeoutError:
            return failed(f"timed out after {budget:g}s", timed_out=True)
        except NotSent as exc:
            return failed(str(exc))
        except Exception as exc:  # every failure of the request becomes a result
            error, timed_out, raised, lost = call_exception(exc, budget)
            if lost:
                error += self._stderr_hint()
                self._lost = self._lost or error
            return failed(error, timed_out=timed_out, raised=raised)
        data = self.redactor.data(content_data(result))
        if result.is_error:
            return McpCallResult(ok=False, data=data,
                                 error=self._where(tool, result_error_text(result)),
                                 duration=time.monotonic() - started)
        return McpCallResult(ok=True, data=data, duration=time.monotonic() - started)

    def _refusal(self, tool: str, args: Any,
                 deadline: float | None) -> tuple[str, bool] | None:
        """Why the call cannot be sent, and whether it is the arguments' fault; or None."""
        if self._lost:
            return f"the server is gone since an earlier call: {self._lost}", False
        if self._tools is None:
            try:
                self.list_tools(deadline=deadline)
            except McpServerError as exc:
                return exc.problem, False
            except ConfigError as exc:
                return str(exc), False
        if (feedback := self.validate(tool, args)) is not None:
            return feedback, True
        return None

    def stderr_text(self) -> str:
        """The server's stderr as captured (bounded, head and tail), secrets redacted."""
        tap = self._side.stderr if self._side is not None else None
        return self.redactor.text(tap.text()) if tap is not None else ""

    def _send(self, request: Callable[[ClientThread], Any], budget: float) -> Any:
        if self._side is None:
            raise NotSent("the server is not running (it was never started)")
        return self._side.submit(request(self._side), budget, closed=self._closed)

    # -- internals --

    async def _decline_elicitation(self, params: Any) -> Any:
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

    # -- internals: interpretation --

    def _where(self, tool: str, error: str) -> str:
        """An error as reported: what went wrong, then which server and tool, redacted."""
        return self.redactor.text(f"{error} (MCP server {self.name!r}, tool {tool!r})")

    def _kill_group(self) -> None:
        tap = self._side.stderr if self._side is not None else None
        self.pgid = tap.pgid if tap is not None else None
        mcp_process.kill_group(self.pgid, self.name)

    def _budget(self, timeout: float | None, deadline: float | None) -> float:
        budget = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
        return budget

    def _start_problem(self) -> str:
        failure = self._side.failure if self._side is not None else None
        return start_problem(failure, self._stderr_hint())

    def _stderr_hint(self) -> str:
        tap = self._side.stderr if self._side is not None else None
        if tap is None:
            return ""
        tap.settle()
        lines = [line for line in self.stderr_text().splitlines() if line.strip()]
        return f"; its stderr ends: {lines[-1][:300]}" if lines else ""


def _import_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"MCP servers need the mcp package: {INSTALL_HINT}") from exc
