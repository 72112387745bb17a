"""Calling a tool: validate arguments, run under a timeout, retry only if idempotent,
and always come back with a structured outcome, whatever the tool did."""

from __future__ import annotations

import contextvars
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from jobrunner.tools.api import ToolResult, ToolSpec

# Threads of timed-out tools still running; the CLI exits hard if any remain at the end.
_ORPHANS: list[threading.Thread] = []


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
    """(validated arguments, None) or (None, an error quoting the valid schema)."""
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
        outcome = _run_once(spec, args, budget)
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
