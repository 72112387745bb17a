"""Calling a tool: validate arguments, run under a timeout, retry only if idempotent,
and always come back with a structured outcome, whatever the tool did."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from jobrunner.tools.api import ToolResult, ToolSpec

# Threads of timed-out tools still running; the CLI exits hard if any remain at the end.
_ORPHANS: list[threading.Thread] = []

# The process's own exit, kept before any run can replace it (see `exit_guarded`).
real_exit = os._exit
_GUARD = {"depth": 0, "pid": 0}
_GUARD_LOCK = threading.Lock()


class ExitRefused(BaseException):
    """A tool (or a thread it left) called os._exit while a run was live. A BaseException,
    so a tool's own `except Exception` does not swallow it and carry on."""


def _refuse_exit(status: int) -> NoReturn:
    if os.getpid() != _GUARD["pid"]:
        real_exit(status)  # a child the tool forked: its exit is its own
    raise ExitRefused(f"os._exit({status}) was called during the run; the process was "
                      "not ended")


@contextlib.contextmanager
def exit_guarded() -> Iterator[None]:
    """While a run is live, os._exit in its process raises ExitRefused instead: a tool
    that calls it fails like any tool that raises (stop-and-report), and the run is
    recorded, never left `running` by its own process vanishing."""
    with _GUARD_LOCK:
        _GUARD["depth"] += 1
        if _GUARD["depth"] == 1:
            _GUARD["pid"] = os.getpid()
            os._exit = _refuse_exit
    try:
        yield
    finally:
        with _GUARD_LOCK:
            _GUARD["depth"] -= 1
            if _GUARD["depth"] == 0:
                os._exit = real_exit


@dataclass
class CallOutcome:
    """The structured result of one tool call."""

    ok: bool
    data: Any = None
    error: str | None = None
    attempts: int = 1
    duration: float = 0.0
    timed_out: bool = False
    raised: bool = False  # the tool raised: it may have acted before it failed


def canonical_args(args: dict[str, Any]) -> str:
    """Arguments as a stable string: the identity of a call for loops and the ledger."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)


def validate_args(spec: ToolSpec, args: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(validated arguments, None) or (None, an error quoting the valid schema). A tool
    with a schema of its own is checked against it; a `@tool`, against its type hints."""
    if spec.schema is not None:
        from jobrunner.tools import schema

        problem = schema.feedback(spec.name, spec.schema, args)
        return (None, problem) if problem else (dict(args), None)
    from pydantic import ValidationError

    if not isinstance(args, dict):
        return None, f"arguments must be a JSON object; schema: {json.dumps(spec.input_schema())}"
    try:
        model = spec.args_model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in exc.errors()
        )
        schema = json.dumps(spec.input_schema(), separators=(",", ":"))
        return None, f"invalid arguments for {spec.name}: {problems}. Valid schema: {schema}"
    return model.model_dump(mode="json"), None


def _run_once(spec: ToolSpec, args: dict[str, Any], timeout: float) -> CallOutcome:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = spec.fn(**args)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a result
            box["error"] = exc

    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(target,), name=f"tool-{spec.name}", daemon=True
    )
    started = time.monotonic()
    thread.start()
    thread.join(timeout)
    duration = time.monotonic() - started
    if thread.is_alive():
        _ORPHANS.append(thread)
        return CallOutcome(
            ok=False, error=f"timed out after {timeout:g}s", duration=duration, timed_out=True
        )
    if "error" in box:
        exc = box["error"]
        return CallOutcome(ok=False, error=f"{type(exc).__name__}: {exc}", duration=duration,
                           raised=True)
    value = box.get("value")
    if isinstance(value, ToolResult):
        if not value.ok:
            return CallOutcome(
                ok=False, data=value.data, error=value.error or "tool reported failure",
                duration=duration,
            )
        return CallOutcome(ok=True, data=value.data, duration=duration)
    return CallOutcome(ok=True, data=value, duration=duration)


def execute(
    spec: ToolSpec,
    args: dict[str, Any],
    timeout: float,
    retries: int,
    deadline: float | None = None,
    on_retry: Any = None,
) -> CallOutcome:
    """Run the tool; retry (exponential backoff with jitter, capped) only if it is
    idempotent, never past the run's deadline (a `time.monotonic()` value)."""
    retries = retries if spec.idempotent else 0
    attempt = 0
    while True:
        attempt += 1
        budget = timeout
        if deadline is not None:
            budget = min(timeout, deadline - time.monotonic())
            if budget <= 0:
                # Starting the tool now would only leave a thread behind: it never runs.
                return CallOutcome(ok=False, error="timed out after 0s (no time left in the "
                                   "run)", attempts=attempt, timed_out=True)
        # A source that bounds its own calls (an MCP server) is not run in a thread.
        outcome = spec.call(args, budget) if spec.call is not None \
            else _run_once(spec, args, budget)
        outcome.attempts = attempt
        if outcome.ok or attempt > retries:
            return outcome
        delay = min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.75, 1.0)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return outcome
        if on_retry:
            on_retry(attempt, outcome, delay)
        time.sleep(delay)


def orphaned_tools() -> list[threading.Thread]:
    """Timed-out tool threads that are still running."""
    return [t for t in _ORPHANS if t.is_alive()]


def left_running() -> bool:
    """Whether something a tool left would keep the process from exiting (or must not
    be waited for): a timed-out tool thread, a non-daemon thread, a multiprocessing child
    (joined at exit)."""
    main = threading.main_thread()
    if orphaned_tools() or any(t is not main and t is not threading.current_thread()
                               and not t.daemon and t.is_alive()
                               for t in threading.enumerate()):
        return True
    children = sys.modules.get("multiprocessing")
    return bool(children is not None and children.active_children())
