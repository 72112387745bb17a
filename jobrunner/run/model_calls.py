"""One model call at a time, with jobrunner's own retry policy (the SDK's is off): every
attempt traced, rate limits and server errors retried with backoff and jitter (or as the
server's retry-after asks), never past the run's time; every call bounded by wall-clock
time; usage and cost accounted from what the API reported.

The agent's turns are steps. A helper model's calls (the semantic gate, context summaries)
take the same path, traced under their own prefix (`gate.request`, ...): they are no
steps, but their tokens and cost count in the tally like the agent's, so every limit sees
them."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from jobrunner.config.jobfile import Job
from jobrunner.events import ModelErrorKind
from jobrunner.models import ModelClient, ModelError, ModelRequest, ModelTurn, request_within
from jobrunner.models.pricing import Price, cost_usd
from jobrunner.redact import Redactor
from jobrunner.run.prompt import mark_cache_point
from jobrunner.run.tally import Tally
from jobrunner.state.traces import Trace

RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0  # backoff ceiling; a server's retry-after is bounded by the run's time


@dataclass(frozen=True)
class Helper:
    """A model that helps the run without being its agent, with its client and price."""

    purpose: str  # "gate" or "summary": the prefix of its calls' trace events
    model: str
    client: ModelClient
    price: Price


@dataclass
class ModelCalls:
    """The model calls of one session (the agent's, or one helper's)."""

    client: ModelClient
    job: Job
    price: Price
    trace: Trace
    redactor: Redactor
    tally: Tally
    deadline: float  # time.monotonic() at which the run's max_seconds are up
    helper: str = ""  # a helper's purpose; "" for the agent's own turns
    model: str = ""  # a helper's model; the agent's is the job's

    @classmethod
    def of_helper(cls, helper: Helper, agent: ModelCalls) -> ModelCalls:
        """The calls of a helper model, under the agent's run: same tally and deadline."""
        return cls(helper.client, agent.job, helper.price, agent.trace, agent.redactor,
                   agent.tally, agent.deadline, helper.purpose, helper.model)

    def __post_init__(self) -> None:
        self.model = self.model or self.job.spec.model
        self._events = self.helper or "model"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def call(self, system: list[dict[str, Any]], tools: list[dict[str, Any]],
             messages: list[dict[str, Any]], max_tokens: int, *,
             tool_choice: dict[str, Any] | None = None,
             estimate: int | None = None) -> ModelTurn | ModelError:
        """One model turn, retried under the policy; a `deadline` error when the run's
        time runs out first. `estimate`: the request's estimated tokens (the agent's
        is the tally's)."""
        limits, tally = self.job.limits, self.tally
        estimate = tally.last_estimate if estimate is None else estimate
        # A helper's call happens within the agent's current step.
        step = tally.steps if self.helper else tally.steps + 1
        sent = mark_cache_point(messages)
        self.client.prepare()
        attempt = 0
        while True:
            attempt += 1
            remaining = self.remaining()
            if remaining <= 1:
                return ModelError(ModelErrorKind.DEADLINE, "the run's time ran out",
                                  retryable=False)
            timeout = min(limits.model_timeout, remaining)
            self.trace.emit(f"{self._events}.request", step=step, attempt=attempt,
                            messages=len(messages), max_tokens=max_tokens,
                            timeout=round(timeout, 1), estimated_input_tokens=estimate,
                            **({"model": self.model} if self.helper else {}))
            started = time.monotonic()
            # Bounded by wall-clock time, not per read: see request_within.
            result = request_within(self.client, ModelRequest(
                model=self.model, system=system, messages=sent, tools=tools,
                max_tokens=max_tokens, timeout=timeout,
                idle_timeout=limits.model_idle_timeout or None, tool_choice=tool_choice))
            duration = round(time.monotonic() - started, 3)
            if isinstance(result, ModelTurn):
                self._account(result, duration, estimate)
                return result
            cut = self.redactor.text(result.extra.get("partial_text") or "")
            if cut and not self.helper:
                tally.cut_text = cut  # kept for the report should no reply come whole
            self.trace.emit(f"{self._events}.error", step=step, attempt=attempt,
                            kind=result.kind, status=result.status, message=result.message,
                            retryable=result.retryable, retry_after=result.retry_after,
                            request_id=result.request_id, duration_s=duration,
                            partial_text=cut or None)
            if not result.retryable:
                return result
            if attempt > limits.max_model_retries:
                result.message += (f" (gave up after {attempt} attempts; "
                                   f"limits.max_model_retries = {limits.max_model_retries})")
                return result
            delay = self._delay(result, attempt)
            if delay >= self.remaining() - 1:
                return ModelError(
                    ModelErrorKind.DEADLINE,
                    f"{result.message}; waiting {delay:.1f}s to retry would pass the run's "
                    f"time limit (max_seconds {limits.max_seconds:g})", retryable=False)
            self.trace.emit(f"{self._events}.retry", attempt=attempt, delay_s=round(delay, 3),
                            reason=result.kind)
            time.sleep(delay)

    @staticmethod
    def _delay(error: ModelError, attempt: int) -> float:
        if error.retry_after is not None:
            return error.retry_after  # the server knows best; the run's time bounds it
        delay = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
        return delay * random.uniform(0.75, 1.0)

    def _account(self, turn: ModelTurn, duration: float, estimate: int) -> None:
        tally = self.tally
        usage = turn.usage
        tally.usage = tally.usage + usage
        if estimate and usage.prompt_tokens > estimate:
            # Also from a helper's calls: every worst-case check scales by it.
            tally.token_ratio = max(tally.token_ratio, usage.prompt_tokens / estimate)
        call_cost = cost_usd(self.price, usage)
        tally.cost_usd += call_cost
        if self.helper:
            tally.helper_calls[self.helper] = tally.helper_calls.get(self.helper, 0) + 1
            tally.helper_cost_usd[self.helper] = \
                tally.helper_cost_usd.get(self.helper, 0.0) + call_cost
        else:
            tally.steps += 1
            tally.cut_text = ""
            texts = [b.get("text", "") for b in turn.content if b.get("type") == "text"]
            if any(texts):
                # Kept as the run's partial output when a limit ends it before `finish`.
                tally.last_text = self.redactor.text("\n".join(t for t in texts if t))
        self.trace.emit(
            f"{self._events}.response", step=tally.steps, stop_reason=turn.stop_reason,
            request_id=turn.request_id, duration_s=duration,
            usage={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                   "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                   "cache_read_input_tokens": usage.cache_read_input_tokens},
            cost_usd=round(call_cost, 6), total_cost_usd=round(tally.cost_usd, 6),
            content=turn.content)
