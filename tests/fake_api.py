"""A local fake of the Anthropic Messages API, for tests and benchmarks.

It speaks real HTTP on 127.0.0.1 so the official ``anthropic`` SDK can be pointed at it with
``base_url=api.url`` (or ``ANTHROPIC_BASE_URL``) and nothing in the client is mocked.

Responses are scripted: each ``POST /v1/messages`` consumes one queued item (see ``text_turn``,
``tool_turn``, ``turn`` and ``fault``), or asks ``api.responder`` when the queue is empty. Items are
plain JSON-able dicts so a script can also be written to a file and served by the CLI::

    python -m tests.fake_api --script turns.json     # first stdout line is the URL

where ``turns.json`` is ``{"turns": [item, ...], "repeat_last": false}``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Item = dict[str, Any]
Responder = Callable[[dict[str, Any]], Item]

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
NO_SCRIPT_MESSAGE = "fake server: no scripted response left"
# Auto-generated tool ids carry this prefix so the server can tell them from ids a test chose.
AUTO_TOOL_ID_PREFIX = "toolu_fake_"
# A reply good in every way: a trickle fault serves it unless given a body (so only its speed
# is wrong), and tests build replies of the wrong shape from it.
WELL_FORMED_MESSAGE: dict[str, Any] = {
    "id": "msg_fake_trickled", "type": "message", "role": "assistant", "model": "claude-fake",
    "content": [{"type": "text", "text": "fake server: trickled reply"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
# What a stall fault streams unless given a body: its text comes in two deltas, so a stall
# after the fourth event (start, ping, block start, first delta) cuts it mid-sentence.
STALLED_MESSAGE: dict[str, Any] = {
    **WELL_FORMED_MESSAGE, "id": "msg_fake_stalled",
    "content": [{"type": "text",
                 "text": "Monday brought 1,204 signups; next I will email them out"}],
    "stop_reason": "end_turn",
}
# The real API looks for earlier cache hits up to this many blocks before each breakpoint.
CACHE_LOOKBACK_BLOCKS = 20

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DEFAULT_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "fake server: invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "fake server: billing error",
    "permission_error": "fake server: permission denied",
    "not_found_error": "fake server: not found",
    "request_too_large": "fake server: request too large",
    "rate_limit_error": "fake server: rate limited",
    "api_error": "fake server: internal error",
    "timeout_error": "fake server: timeout",
    "overloaded_error": "Overloaded",
}


# --------------------------------------------------------------------------- script items


def _new_tool_id() -> str:
    return AUTO_TOOL_ID_PREFIX + uuid.uuid4().hex[:20]


def turn(
    content_blocks: Sequence[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, int] | None = None,
) -> Item:
    """A successful message made of raw content blocks in Anthropic format."""
    return {
        "kind": "message",
        "content": [dict(block) for block in content_blocks],
        "stop_reason": stop_reason,
        "usage": dict(usage) if usage is not None else None,
    }


def text_turn(
    text: str, stop_reason: str = "end_turn", usage: dict[str, int] | None = None
) -> Item:
    """A successful message holding one text block."""
    return turn([{"type": "text", "text": text}], stop_reason, usage)


def tool_turn(
    calls: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]],
    text: str | None = None,
    usage: dict[str, int] | None = None,
) -> Item:
    """A message asking for tool calls: optional text block, then one ``tool_use`` per call.

    Each call is ``(name, input)`` or ``(name, input, id)``; missing ids are generated.
    """
    blocks: list[dict[str, Any]] = []
    if text is not None:
        blocks.append({"type": "text", "text": text})
    for call in calls:
        if len(call) == 3:
            name, tool_input, tool_id = call  # type: ignore[misc]
        elif len(call) == 2:
            name, tool_input = call  # type: ignore[misc]
            tool_id = _new_tool_id()
        else:
            raise ValueError(f"tool call must be (name, input) or (name, input, id): {call!r}")
        if not isinstance(tool_input, dict):
            raise ValueError(f"tool input must be a dict, got {type(tool_input).__name__}")
        blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
    if not any(block["type"] == "tool_use" for block in blocks):
        raise ValueError("tool_turn needs at least one call")
    return turn(blocks, "tool_use", usage)


def fault(
    status: int | None = None,
    error_type: str | None = None,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    delay: float | None = None,
    drop: bool = False,
    malformed: bool = False,
    body: Any = None,
    trickle: float | None = None,
    trickle_headers: bool = False,
    stall_after: int | None = None,
    ping_every: float | None = None,
) -> Item:
    """A failure to serve instead of a message.

    ``delay`` sleeps first (then answers as the rest of the fault says; a bare delay is a 500),
    ``drop`` closes the socket without a response, ``malformed`` sends HTTP 200 with broken JSON,
    ``body`` sends HTTP 200 with that JSON value verbatim (a reply of the wrong shape).
    ``trickle`` sends a well-formed 200 message (or ``body``) at that many bytes per second
    after the headers; ``trickle=0`` sends the headers and then nothing. With
    ``trickle_headers`` the status line and headers are trickled too (at least 1 byte/s).
    ``stall_after`` answers a streamed request (``stream: true``) with the first that many
    events of a streamed message (``body``, else ``STALLED_MESSAGE``) and then holds the stream
    open mid-response, sending nothing more (or only a ``ping`` every ``ping_every`` seconds)
    until the server stops; a request that did not ask to stream gets the headers, then nothing.
    Otherwise it is an HTTP error (default 500) with the Anthropic error body; ``error_type``
    defaults from the status.
    """
    return {
        "kind": "fault",
        "status": status,
        "error_type": error_type,
        "message": message,
        "headers": dict(headers) if headers else None,
        "delay": delay,
        "drop": drop,
        "malformed": malformed,
        "body": body,
        "trickle": trickle,
        "trickle_headers": trickle_headers,
        "stall_after": stall_after,
        "ping_every": ping_every,
    }


def check_item(item: Any) -> Item:
    """Return ``item`` if it is a well-formed script item, else raise ``ValueError``."""
    if not isinstance(item, dict):
        raise ValueError(f"script item must be a dict, got {type(item).__name__}")
    kind = item.get("kind")
    if kind == "message":
        content = item.get("content")
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            raise ValueError("message item needs 'content': a list of block dicts")
        if not isinstance(item.get("stop_reason"), str):
            raise ValueError("message item needs a 'stop_reason' string")
        if item.get("usage") is not None and not isinstance(item["usage"], dict):
            raise ValueError("message item 'usage' must be a dict or null")
    elif kind == "fault":
        status = item.get("status")
        if status is not None and not isinstance(status, int):
            raise ValueError("fault 'status' must be an int or null")
        rate = item.get("trickle")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or rate < 0):
            raise ValueError("fault 'trickle' must be a number of bytes per second (>= 0)")
        stall = item.get("stall_after")
        if stall is not None and (isinstance(stall, bool) or not isinstance(stall, int)
                                  or stall < 0):
            raise ValueError("fault 'stall_after' must be a number of events (>= 0)")
    else:
        raise ValueError(f"script item 'kind' must be 'message' or 'fault', got {kind!r}")
    return item


# --------------------------------------------------------------------------- token estimates


def _json_len(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _tokens(chars: int) -> int:
    """Roughly four characters per token, as the brief (and Anthropic's rule of thumb) says."""
    return max(1, math.ceil(chars / 4))


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens for a request: ~ len(JSON of system + messages + tools) / 4."""
    prompt = {k: body[k] for k in ("system", "messages", "tools") if k in body}
    return _tokens(_json_len(prompt))


def estimate_output_tokens(content: list[dict[str, Any]]) -> int:
    """Output tokens for a reply: ~ len(JSON of its content) / 4, at least 1."""
    return _tokens(_json_len(content))


def _prompt_segments(body: dict[str, Any]) -> list[Any]:
    """The prompt as cacheable blocks, in the order the API caches them: tools, system, messages."""
    segments: list[Any] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        segments.extend(tools)
    system = body.get("system")
    if isinstance(system, list):
        segments.extend(system)
    elif system:
        segments.append({"type": "text", "text": system})
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            role = message.get("role")
            if isinstance(content, list):
                segments.extend({"role": role, **b} if isinstance(b, dict) else b for b in content)
            else:
                segments.append({"role": role, "type": "text", "text": content})
    return segments


def _strip_cache_control(value: Any) -> Any:
    # The breakpoint marker must not change the key: moving a breakpoint later in a conversation
    # still hits the cache written for the earlier prefix, as on the real API.
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "cache_control"}
    return value


# --------------------------------------------------------------------------- recording


@dataclass
class RecordedRequest:
    """One request as the server saw it (recorded before it was answered)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    method: str = "POST"
    query: str = ""


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks may open many connections at once; the stdlib default backlog of 5 is too small.
    request_queue_size = 128

    def __init__(self, api: FakeMessagesAPI) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up are part of the scenarios; don't spray tracebacks.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; httpx reuses connections
    # Longer than httpx's 5 s keep-alive expiry so the client always drops an idle connection
    # first; otherwise a request could race a server-side close and fail spuriously.
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.api._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.api._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:
        self.server.api._handle(self)

    def do_GET(self) -> None:
        self.server.api._handle(self)

    # -- response helpers used by FakeMessagesAPI._handle

    def read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(
        self,
        status: int,
        payload: bytes,
        request_id: str,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        merged = {"content-type": content_type, "request-id": request_id}
        # A fault's own headers win (e.g. a different request-id), but never content-length.
        merged.update({k.lower(): v for k, v in (headers or {}).items()})
        merged["content-length"] = str(len(payload))
        try:
            self.send_response(status)
            for name, value in merged.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            # The client gave up (e.g. its timeout fired during a delay fault).
            self.close_connection = True

    def trickle(
        self, payload: bytes, request_id: str, rate: float, with_headers: bool,
        stopping: threading.Event,
    ) -> None:
        """A 200 reply whose body (and, with ``with_headers``, head) comes ``rate`` bytes a
        second; ``rate`` 0 stalls after the head. Ends early when the server stops."""
        self.close_connection = True  # the connection is spoilt for reuse either way
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"request-id: {request_id}\r\ncontent-length: {len(payload)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        try:
            if with_headers:
                self._dribble(head, max(rate, 1.0), stopping)
            else:
                self.wfile.write(head)
                self.wfile.flush()
            if rate == 0:
                stopping.wait()
                return
            self._dribble(payload, rate, stopping)
        except OSError:
            pass  # the client gave up, as a client with a deadline should

    def stall(self, events: bytes, request_id: str, ping_every: float | None,
              stopping: threading.Event) -> None:
        """A 200 event stream that sends ``events`` and then holds the connection open
        mid-response (a ``ping`` now and then with ``ping_every``) until the server stops."""
        self.close_connection = True
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            f"request-id: {request_id}\r\nconnection: close\r\n\r\n"
        ).encode()
        ping = b'event: ping\ndata: {"type": "ping"}\n\n'
        try:
            self.wfile.write(head + events)
            self.wfile.flush()
            while not stopping.wait(ping_every if ping_every else None):
                self.wfile.write(ping)
                self.wfile.flush()
        except OSError:
            pass  # the client cut the call, as a client with an idle bound should

    def _dribble(self, data: bytes, rate: float, stopping: threading.Event) -> None:
        for i in range(len(data)):
            if stopping.wait(1 / rate):
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FakeMessagesAPI:
    """Scripted fake of the Anthropic Messages API on 127.0.0.1 (ephemeral port).

    ``require_key``: if a string, requests must carry it as ``x-api-key`` or
    ``Authorization: Bearer``; others get 401 ``authentication_error``.
    ``validate``: reject requests the real API would reject (missing model/max_tokens, empty
    text, ``tool_use`` without matching ``tool_result``...) with 400, without consuming a turn.
    ``cache_min_tokens``: prefixes shorter than this are not cached (the real minimum is
    1024-4096 tokens depending on model; 0 keeps small test prompts cacheable).
    """

    def __init__(
        self,
        require_key: str | None = None,
        *,
        validate: bool = True,
        cache_min_tokens: int = 0,
    ) -> None:
        self.require_key = require_key
        self.validate = validate
        self.cache_min_tokens = cache_min_tokens
        self.responder: Responder | None = None
        # Called (from the handler thread) with each RecordedRequest; the CLI logs with it.
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self._lock = threading.Lock()
        self._queue: deque[Item] = deque()
        self._requests: list[RecordedRequest] = []
        self._cache: set[str] = set()
        self._served_tool_ids: set[str] = set()
        self._request_count = 0
        self._message_count = 0
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeMessagesAPI:
        """Bind 127.0.0.1 on a free port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeMessagesAPI already started")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            # A short poll interval makes stop() prompt.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-anthropic-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; returns promptly even if handlers are sleeping in a delay fault."""
        server = self._server
        if server is None:
            return
        self._stopping.set()  # wakes handlers waiting in a delay
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        # Idle keep-alive handlers block reading the next request; closing their sockets ends them.
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeMessagesAPI not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for the SDK (``ANTHROPIC_BASE_URL``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting and inspection

    def enqueue(self, *items: Item) -> None:
        """Queue scripted responses; each POST /v1/messages consumes one."""
        checked = [check_item(item) for item in items]
        with self._lock:
            self._queue.extend(checked)

    @property
    def pending(self) -> int:
        """How many queued items have not been served yet."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Only the POST /v1/messages requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == MESSAGES_PATH]

    def reset(self) -> None:
        """Forget queued items, recorded requests and the prompt cache."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._cache.clear()

    # -- internals

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _handle(self, h: _Handler) -> None:
        raw = h.read_body()
        split = urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        body: dict[str, Any]
        body_ok = True
        try:
            parsed = json.loads(raw) if raw else {}
            body = parsed if isinstance(parsed, dict) else {"_unparsed": parsed}
            body_ok = isinstance(parsed, dict)
        except ValueError:
            body, body_ok = {"_unparsed": raw.decode("utf-8", "replace")}, False
        record = RecordedRequest(
            path=path,
            headers={k.lower(): v for k, v in h.headers.items()},
            body=body,
            at=time.time(),
            method=h.command,
            query=split.query,
        )
        with self._lock:
            self._requests.append(record)
            self._request_count += 1
            request_id = f"req_fake_{self._request_count}"

        def error(status: int, error_type: str, message: str) -> None:
            h.send(status, _error_body(error_type, message), request_id)

        if self.on_request is not None:
            try:
                self.on_request(record)
            except Exception as exc:  # noqa: BLE001 - a broken hook must fail loudly, not hang
                return error(500, "api_error", f"fake server: on_request hook failed: {exc!r}")

        if self.require_key is not None and not self._authorized(record.headers):
            return error(401, "authentication_error", "invalid x-api-key")
        if h.command != "POST" or path not in (MESSAGES_PATH, COUNT_TOKENS_PATH):
            return error(404, "not_found_error", f"Not found: {h.command} {path}")
        if not body_ok:
            return error(400, "invalid_request_error", "request body is not a JSON object")

        if path == COUNT_TOKENS_PATH:
            problem = self._invalid(record, count_only=True)
            if problem:
                return error(400, "invalid_request_error", problem)
            payload = json.dumps({"input_tokens": estimate_input_tokens(body)}).encode()
            return h.send(200, payload, request_id)

        # A queued fault is served whatever the body says (rate limits come before validation).
        with self._lock:
            head_fault = (
                self._queue.popleft() if self._queue and _is_fault(self._queue[0]) else None
            )
        if head_fault is not None:
            return self._serve_fault(h, head_fault, request_id, body)

        problem = self._invalid(record)
        if problem:
            # Not consuming a turn: the script is written for valid requests.
            return error(400, "invalid_request_error", problem)

        with self._lock:
            item = self._queue.popleft() if self._queue else None
        if item is None:
            responder = self.responder
            if responder is None:
                return error(500, "api_error", NO_SCRIPT_MESSAGE)
            try:
                item = check_item(responder(copy.deepcopy(body)))
            except Exception as exc:  # noqa: BLE001 - reported to the client, loudly
                return error(500, "api_error", f"fake server: responder failed: {exc!r}")
        if _is_fault(item):
            return self._serve_fault(h, item, request_id, body)
        self._serve_message(h, item, body, request_id)

    def _authorized(self, headers: dict[str, str]) -> bool:
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        bearer = auth[7:] if auth[:7].lower() == "bearer " else None
        return self.require_key in (key, bearer)

    def _serve_fault(
        self, h: _Handler, item: Item, request_id: str, body: dict[str, Any]
    ) -> None:
        delay = item.get("delay")
        if delay:
            # Event.wait rather than sleep so stop() can cut the delay short.
            self._stopping.wait(float(delay))
        if item.get("drop"):
            return h.drop()
        headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
        if item.get("trickle") is not None:
            reply = item["body"] if item.get("body") is not None else WELL_FORMED_MESSAGE
            return h.trickle(json.dumps(reply).encode(), request_id, float(item["trickle"]),
                             bool(item.get("trickle_headers")), self._stopping)
        if item.get("stall_after") is not None:
            events = b""
            if body.get("stream") is True:
                reply = item["body"] if item.get("body") is not None else STALLED_MESSAGE
                events = b"".join(_sse_events(reply)[: int(item["stall_after"])])
            return h.stall(events, request_id, item.get("ping_every"), self._stopping)
        if item.get("body") is not None:
            return h.send(200, json.dumps(item["body"]).encode(), request_id, headers=headers)
        if item.get("malformed"):
            payload = b'{"id": "msg_fake_broken", "type": "message", "content": [{"ty'
            return h.send(200, payload, request_id, headers=headers)
        status = int(item.get("status") or 500)
        error_type = item.get("error_type") or ERROR_TYPES.get(status, "api_error")
        message = item.get("message") or _DEFAULT_ERROR_MESSAGES.get(error_type, error_type)
        h.send(status, _error_body(error_type, message), request_id, headers=headers)

    def _serve_message(
        self, h: _Handler, item: Item, body: dict[str, Any], request_id: str
    ) -> None:
        content = copy.deepcopy(item["content"])
        with self._lock:
            self._message_count += 1
            message_id = f"msg_fake_{self._message_count}"
            for block in content:
                # A scripted turn reused by a responder or repeat_last must not repeat ids,
                # which the real API never does; ids a test chose explicitly are left alone.
                tool_id = block.get("id")
                if block.get("type") == "tool_use" and isinstance(tool_id, str):
                    if tool_id.startswith(AUTO_TOOL_ID_PREFIX) and tool_id in self._served_tool_ids:
                        block["id"] = tool_id = _new_tool_id()
                    self._served_tool_ids.add(tool_id)
        usage = self._usage(body, content, item.get("usage"))
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": item["stop_reason"],
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("stream") is True:
            h.send(200, _sse_body(message), request_id, content_type="text/event-stream")
        else:
            h.send(200, json.dumps(message).encode(), request_id)

    def _usage(
        self, body: dict[str, Any], content: list[dict[str, Any]], given: dict[str, int] | None
    ) -> dict[str, int]:
        total = estimate_input_tokens(body)
        created, read, cached_prefix = self._simulate_cache(body)
        usage = {
            "input_tokens": max(total - cached_prefix, 0),
            "output_tokens": estimate_output_tokens(content),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
        }
        if given is not None:
            # Scripted usage is exact: no simulated cache split, missing counts are estimated.
            usage.update(
                input_tokens=total, cache_creation_input_tokens=0, cache_read_input_tokens=0
            )
            usage.update({k: int(v) for k, v in given.items()})
        return usage

    def _simulate_cache(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """Return (cache_creation, cache_read, tokens in the cached prefix) for a request.

        Blocks marked with ``cache_control`` are breakpoints. The longest earlier-cached prefix
        ending within the look-back window of a breakpoint is read; the prefix up to the last
        breakpoint beyond that is written.
        """
        segments = _prompt_segments(body)
        breakpoints = [
            i
            for i, seg in enumerate(segments)
            if isinstance(seg, dict) and seg.get("cache_control")
        ]
        if body.get("cache_control") and segments:  # top-level automatic caching
            breakpoints.append(len(segments) - 1)
        if not breakpoints:
            return 0, 0, 0
        # Incremental hash and length so long agent conversations stay O(n) per request.
        hasher = hashlib.sha256(json.dumps(body.get("model")).encode())
        keys: list[str] = []
        tokens: list[int] = []
        chars = 0
        for seg in segments:
            text = json.dumps(_strip_cache_control(seg), sort_keys=True, ensure_ascii=False)
            hasher.update(text.encode() + b"\x00")
            keys.append(hasher.hexdigest())
            chars += len(text) + 1
            tokens.append(_tokens(chars))
        last = max(breakpoints)
        window = {
            p for b in breakpoints for p in range(max(0, b - CACHE_LOOKBACK_BLOCKS + 1), b + 1)
        }
        with self._lock:
            hits = [p for p in window if keys[p] in self._cache]
            hit = max(hits) if hits else -1
            for b in breakpoints:
                if tokens[b] >= self.cache_min_tokens:
                    self._cache.add(keys[b])
        read = tokens[hit] if hit >= 0 else 0
        if tokens[last] < self.cache_min_tokens:
            return 0, read, read
        created = tokens[last] - read if last > hit else 0
        return created, read, tokens[last]

    def _invalid(self, record: RecordedRequest, count_only: bool = False) -> str | None:
        """Why the real API would reject this request with 400, or None."""
        if not self.validate:
            return None
        body = record.body
        if "anthropic-version" not in record.headers:
            return "anthropic-version: header is required"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if not count_only:
            max_tokens = body.get("max_tokens")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                return "max_tokens: Field required (a positive integer)"
        return _invalid_messages(body.get("messages"))

    # -- CLI helpers

    def load_script(self, script: dict[str, Any]) -> None:
        """Queue ``script["turns"]``; with ``repeat_last`` the last turn is served forever."""
        turns = script.get("turns", [])
        if not isinstance(turns, list):
            raise ValueError("script 'turns' must be a list")
        self.enqueue(*turns)
        if script.get("repeat_last") and turns:
            last = turns[-1]
            self.responder = lambda _body: last


def _is_fault(item: Item) -> bool:
    return item.get("kind") == "fault"


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


def _invalid_messages(messages: Any) -> str | None:
    """Check the message list against the API's documented structural rules."""
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    prev_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        is_final_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if isinstance(content, str):
            blocks: list[Any] = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = content
        else:
            return f"messages.{i}.content: Input should be a valid string or list"
        if not blocks and not is_final_assistant:
            return (
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        results: set[str] = set()
        tool_ids: set[str] = set()
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                return f"messages.{i}.content.{j}: content blocks must be objects with a 'type'"
            kind = block["type"]
            if kind == "text" and not block.get("text"):
                return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if kind == "tool_use":
                tool_ids.add(str(block.get("id")))
            if kind == "tool_result":
                tool_use_id = block.get("tool_use_id")
                if message["role"] != "user" or tool_use_id not in prev_tool_ids:
                    return (
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {tool_use_id}. Each `tool_result` block must "
                        "have a corresponding `tool_use` block in the previous message."
                    )
                results.add(tool_use_id)
        if prev_tool_ids - results:
            missing = ", ".join(sorted(prev_tool_ids - results))
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {missing}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        prev_tool_ids = tool_ids if message["role"] == "assistant" else set()
    return None


def _sse_body(message: dict[str, Any]) -> bytes:
    """The same message as the event stream the API sends for ``stream: true``."""
    return b"".join(_sse_events(message))


def _sse_events(message: dict[str, Any]) -> list[bytes]:
    """The events of ``_sse_body``, each encoded as it goes on the wire."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            start = {**block, "text": ""}
            text = block.get("text", "")
            half = len(text) // 2
            deltas = [{"type": "text_delta", "text": part} for part in (text[:half], text[half:])]
        elif kind == "tool_use":
            start = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        elif kind == "thinking":
            start = {**block, "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                {"type": "signature_delta", "signature": block.get("signature", "")},
            ]
        else:
            start = block
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a script file until killed; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_api", description=__doc__)
    parser.add_argument("--script", help='JSON file: {"turns": [item, ...], "repeat_last": bool}')
    parser.add_argument("--require-key", help="reject requests without this API key (401)")
    parser.add_argument("--record", help="append each request to this file as a JSON line")
    parser.add_argument("--no-validate", action="store_true", help="accept malformed requests")
    args = parser.parse_args(argv)

    api = FakeMessagesAPI(require_key=args.require_key, validate=not args.no_validate)
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            api.load_script(json.load(f))
    if args.record:
        record_lock = threading.Lock()
        record_path: str = args.record

        def log_request(record: RecordedRequest) -> None:
            with record_lock, open(record_path, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(record)) + "\n")

        api.on_request = log_request

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    api.start()
    print(api.url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
