"""Guards: small typed checks at fixed points of the session loop.

Each returns `None` (go on), a `Go` with what the next call may spend, or a `Stop`
whose reason becomes the run's `stop_reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobrunner.config.jobfile import Limits
from jobrunner.events import Status
from jobrunner.models.pricing import Price, worst_case_cost
from jobrunner.run.tally import Tally
from jobrunner.tokens import estimate_tokens
from jobrunner.tools.dispatch import canonical_args

MIN_OUTPUT_TOKENS = 256
LOOP_REPEATS = 3  # the same call a third time is a loop
ELIDE_AT = 0.8  # elide old tool results once the request nears this share of context_tokens
# ...and then down to this share: eliding in one batch, not one result per call, keeps the
# cached conversation prefix intact for the calls in between (each elision rewrites it).
ELIDE_TO = 0.5


@dataclass
class Stop:
    """Why the session must end: a status, a stop reason, a readable paragraph."""

    status: Status
    reason: str  # a StopReason (or model_api_error:KIND)
    detail: str
    failed_step: int | None = None


@dataclass
class Go:
    max_tokens: int


def estimate_request_tokens(system: Any, messages: Any, tools: Any) -> int:
    return estimate_tokens(system) + estimate_tokens(messages) + estimate_tokens(tools)


def before_model_call(
    limits: Limits,
    tally: Tally,
    price: Price,
    request_tokens: int,
    remaining_seconds: float,
    spent_today_usd: float,
    *,
    step: bool = True,
    cap: int | None = None,
) -> Go | Stop:
    """Steps, time, tokens and money, checked against the worst case of the next call:
    `request_tokens` as the request stands, and the whole reply allowance spent. A helper
    model's call (the semantic gate, a summary) is no step (`step=False`) and may cap its
    own reply (`cap`); its price is its model's."""
    if step and tally.steps >= limits.max_steps:
        return Stop(Status.LIMIT, "max_steps", f"reached max_steps ({limits.max_steps})")
    if remaining_seconds <= 1:
        return Stop(Status.LIMIT, "max_seconds", f"reached max_seconds ({limits.max_seconds:g}s)")
    used_input = tally.usage.prompt_tokens
    if used_input + request_tokens > limits.max_input_tokens:
        return Stop(
            "limit", "max_input_tokens",
            f"the next call (~{request_tokens} input tokens) would pass max_input_tokens "
            f"({limits.max_input_tokens}; {used_input} used)",
        )
    max_tokens = min(limits.max_tokens_per_call, cap or limits.max_tokens_per_call,
                     limits.max_output_tokens - tally.usage.output_tokens)
    if max_tokens < 1:
        return Stop(Status.LIMIT, "max_output_tokens",
                    f"reached max_output_tokens ({limits.max_output_tokens})")
    # Shrink the reply allowance to what the money left can pay for, worst case; stop when
    # not even a useful reply fits.
    floor = min(MIN_OUTPUT_TOKENS, max_tokens)
    for budget, reason, spent in (
        (limits.max_cost_usd, "max_cost_usd", tally.cost_usd),
        (limits.max_cost_usd_per_day, "max_cost_usd_per_day", spent_today_usd + tally.cost_usd),
    ):
        left = budget - spent
        while max_tokens > floor and worst_case_cost(price, request_tokens, max_tokens) > left:
            max_tokens = max(floor, max_tokens // 2)
        worst = worst_case_cost(price, request_tokens, max_tokens)
        if worst > left:
            scope = "today, across runs of this job" if reason.endswith("per_day") else "this run"
            return Stop(
                "limit", reason,
                f"the next model call could cost up to ${worst:.4f} but only "
                f"${max(left, 0):.4f} of {reason} (${budget:.2f}, {scope}) is left; "
                f"${spent:.4f} spent",
            )
    return Go(max_tokens=max_tokens)


def after_model_call(limits: Limits, tally: Tally) -> Stop | None:
    """Token totals as the API reported them (estimates before a call can be short)."""
    if tally.usage.prompt_tokens > limits.max_input_tokens:
        return Stop(Status.LIMIT, "max_input_tokens",
                    f"used {tally.usage.prompt_tokens} input tokens "
                    f"(max_input_tokens {limits.max_input_tokens})")
    if tally.usage.output_tokens > limits.max_output_tokens:
        return Stop(Status.LIMIT, "max_output_tokens",
                    f"used {tally.usage.output_tokens} output tokens "
                    f"(max_output_tokens {limits.max_output_tokens})")
    return None


def before_tool_call(limits: Limits, tally: Tally, name: str, args: dict[str, Any]) -> Stop | None:
    """Tool-call budget and loop detection (same tool, same arguments, a third time)."""
    if tally.tool_calls >= limits.max_tool_calls:
        return Stop(Status.LIMIT, "max_tool_calls",
                    f"reached max_tool_calls ({limits.max_tool_calls})")
    key = name + ":" + canonical_args(args)
    count = tally.call_counts.get(key, 0) + 1
    tally.call_counts[key] = count
    if count >= LOOP_REPEATS:
        # A loop is the model misbehaving, not a budget running out: aborted, like a stall,
        # so jobrunner writes it into the agent's failure log for the next session.
        return Stop(Status.ABORTED, "loop",
                    f"{name} asked for a {_nth(count)} time with the same arguments: a loop")
    return None


def _nth(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


@dataclass
class Elision:
    """What eliding did: the request's token estimate afterwards, and each tool result
    block it elided with the content it had (oldest first; empty when none was)."""

    estimate: int
    elided: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def elide_old_results(
    messages: list[dict[str, Any]], system: Any, tools: Any, limits: Limits, trace: Any
) -> Elision:
    """Near `context_tokens`, replace the oldest tool results with a one-line note (the
    newest stays whole; rules, prompt and memory live in `system` and are never touched).
    Past ELIDE_AT of the budget it elides down to ELIDE_TO in one go. The request's token
    estimate is computed once (it is the costly part of a step) and kept up to date."""
    size_now = estimate_request_tokens(system, messages, tools)
    if size_now <= int(limits.context_tokens * ELIDE_AT):
        return Elision(size_now)
    target = int(limits.context_tokens * ELIDE_TO)
    candidates = [
        block
        for message in messages[:-1]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
        and not str(block.get("content", "")).startswith("[elided")
        and len(str(block.get("content", ""))) > 200
    ]
    elision = Elision(size_now)
    for block in candidates:
        if size_now <= target:
            break
        original = block["content"]
        before = estimate_tokens(original)
        size = len(str(original))
        block["content"] = f"[elided to save context: a tool result of {size} characters]"
        size_now -= before - estimate_tokens(block["content"])
        elision.elided.append((block, str(original)))
    elision.estimate = size_now
    if elision.elided:
        trace.emit("context.elided", results=len(elision.elided), request_tokens=size_now)
    return elision
