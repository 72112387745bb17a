"""Trace events as lines a person reads: `show`, `logs`, `run -v` and `test` share them,
so a step reads the same in a terminal, a cron mail and a test's output."""

from __future__ import annotations

import json
from typing import Any

# Events that read as one line with their own fields filled in.
_PLAIN = {
    "run.start": "run started: job {job}, trigger {trigger}, model {model}",
    "session.start": "session: tools {tools}; memory {memory_tokens} tokens",
    "model.request": "model request (step {step}, attempt {attempt}, up to {max_tokens} "
                     "tokens out)",
    "model.error": "model error (attempt {attempt}): {kind} {status}: {message}",
    "model.retry": "retrying the model call in {delay_s}s (attempt {attempt}: {reason})",
    "tool.retry": "retrying tool {tool} in {delay_s}s (attempt {attempt}: {error})",
    "tool.skipped": "not executed: {tool}: {reason}",
    "tool.invalid": "invalid call {tool}: {error} ({invalid_calls} so far)",
    "tool.medium_risk": "medium risk: {tool}",
    "guard.nudge": "guard: nudged the model ({reason}) at step {step}",
    "guard.stop": "guard: stopped {tool} before it ran ({reason})",
    "context.elided": "guard: {results} old tool result(s) elided (request ~{request_tokens} "
                      "tokens)",
    "ledger.outcome": "ledger: {tool} key {key}: {status} (attempt {attempt})",
    "ledger.deduplicated": "ledger: {tool} key {key} already done by run {done_by_run}: not "
                           "repeated",
    "memory.update": "memory update accepted ({tokens}/{budget} tokens)",
    "memory.over_budget": "memory update refused: {tokens} tokens, over the budget of "
                          "{budget} (attempt {attempt})",
    "memory.write": "memory written (changed: {changed}; {tokens}/{budget} tokens)",
    "memory.failure_line": "failure log: {line}",
    "memory.not_written": "memory NOT written: {reason}",
    "memory.waiting": "waiting for agent {agent}'s memory",
    "run.end": "run ended {status} ({stop_reason})",
    "session.finish": "finish: {status}: {summary}",
}
ARGS_SHOWN = 160
RESULT_SHOWN = 160


def describe(event: dict[str, Any]) -> str:
    """One trace event as a line a person can read."""
    kind = event.get("event", "?")
    if kind in _PLAIN:
        fields = _Missing({k: "" if v is None else ", ".join(map(str, v))
                           if isinstance(v, list) else v for k, v in event.items()})
        return " ".join(_PLAIN[kind].format_map(fields).split())
    if kind == "heartbeat.ping":
        return (f"heartbeat ping {event.get('kind')}: "
                + ("ok" if event.get("ok") else f"failed: {event.get('error')}"))
    if kind == "model.response":
        return _response(event)
    if kind == "tool.call":
        return (f"tool call {event.get('tool')}({_args(event.get('input'))}) "
                f"[risk {event.get('risk')}]")
    if kind == "tool.result":
        return _result(event)
    if kind == "tool.dry_run":
        what = (f"would wait for approval ({event.get('why')}); nothing queued"
                if event.get("would_queue") else "not executed; answered with a stand-in")
        return f"dry run: {event.get('tool')}({_args(event.get('input'))}) {what}"
    if kind == "tool.queued":
        which = f"approval {event['approval_id']}" if event.get("approval_id") else "dry run"
        return f"queued for approval: {event.get('tool')} ({which})"
    if kind in ("approval.approved", "approval.rejected", "approval.expired"):
        return _decision(event, kind.split(".")[1])
    if kind == "ledger.in_doubt":
        return f"ledger: in doubt: {event.get('key') or ', '.join(event.get('keys') or [])}"
    skip = {"seq", "at", "event", "run_id"}
    rest = ", ".join(f"{k}={json.dumps(v, default=str)[:80]}" for k, v in event.items()
                     if k not in skip)
    return f"{kind} {rest}".strip()


def timed(event: dict[str, Any], prefix: str = "") -> str:
    """`08:00:01  <the event>`: the time (UTC) of day, then the line."""
    return f"{prefix}{str(event.get('at', ''))[11:19]}  {describe(event)}"


class _Missing(dict):
    """An event's fields for `format_map`; a field it lacks reads as nothing."""

    def __missing__(self, key: str) -> str:
        return ""


def _args(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= ARGS_SHOWN else text[: ARGS_SHOWN - 3] + "..."


def _result(event: dict[str, Any]) -> str:
    tool = event.get("tool")
    if not event.get("ok"):
        return f"tool result {tool}: FAILED: {event.get('error')}"
    line = f"tool result {tool}: ok ({event.get('data_chars')} chars, {event.get('duration_s')}s)"
    excerpt = event.get("excerpt")
    if excerpt:
        text = " ".join(str(excerpt).split())
        more = "..." if len(text) > RESULT_SHOWN or event.get("excerpt_cut") else ""
        line += f": {text[:RESULT_SHOWN]}{more}"
    return line


def _response(event: dict[str, Any]) -> str:
    usage = event.get("usage", {})
    parts = []
    for block in event.get("content", []):
        if block.get("type") == "text" and block.get("text", "").strip():
            text = " ".join(block["text"].split())
            parts.append(f'says "{text[:100]}{"..." if len(text) > 100 else ""}"')
        elif block.get("type") == "tool_use":
            args = json.dumps(block.get("input"), default=str)
            parts.append(f"calls {block.get('name')}({args[:100]})")
    return (f"model response: {'; '.join(parts) or '(empty)'} "
            f"[{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out, "
            f"${event.get('cost_usd', 0):.4f}, {event.get('duration_s', 0)}s]")


def _decision(event: dict[str, Any], verb: str) -> str:
    line = f"approval {event.get('approval_id')} ({event.get('tool')}) {verb}"
    line += f" by {event.get('by')}" if event.get("by") != "ttl" else " (nobody decided)"
    if event.get("outcome"):
        line += f": {event['outcome']}"
    if event.get("error") or event.get("reason"):
        line += f": {event.get('error') or event.get('reason')}"
    return line
