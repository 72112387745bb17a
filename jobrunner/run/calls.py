"""One tool call of a model turn: validated, guarded, passed through the call gate, run,
and answered; `update_memory` and `finish` are handled here too. A call that fails, or a
guard that trips, comes back as a `Stop` for the session to end the run with."""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from jobrunner.config.jobfile import Job
from jobrunner.effects.gate import Called, CallGate, CallRequest, Proceed, Queued, Refused
from jobrunner.events import Status, StopReason
from jobrunner.memory.format import (
    Memory,
    MemoryUpdate,
    apply_update,
    effective_budget,
    fixed_tokens,
)
from jobrunner.redact import Redactor
from jobrunner.run import guards
from jobrunner.run.guards import Stop
from jobrunner.run.prompt import FinishArgs, session_tool_definitions, wrap_output
from jobrunner.run.semantic_gate import SemanticGate
from jobrunner.run.tally import Action, Effect, Tally
from jobrunner.state.traces import Trace
from jobrunner.tools import dispatch
from jobrunner.tools.api import ToolSpec

MAX_MEMORY_REWRITES = 3
# How much of each tool result the trace keeps, so `show` can say what a tool returned:
# enough to recognise it, bounded, never the whole of a large or private result.
RESULT_EXCERPT = 300
Answer = tuple[dict[str, Any], Stop | None]


def _excerpt(data: Any, redactor: Redactor) -> tuple[int, str, bool]:
    """A tool result's size as text, its first RESULT_EXCERPT characters and whether it
    was cut. The excerpt is redacted before it is cut (a secret cut in two would escape
    the mask): redacting a prefix many times its length is enough for any secret that
    starts in the excerpt, and bounds the cost for a large result."""
    text = data if isinstance(data, str) else json.dumps(data, default=str,
                                                          ensure_ascii=False)
    masked = redactor.text(text[: RESULT_EXCERPT * 16])
    return len(text), masked[:RESULT_EXCERPT], len(masked) > RESULT_EXCERPT \
        or len(text) > RESULT_EXCERPT * 16


@dataclass
class Calls:
    """The tool calls of one session."""

    job: Job
    tools: dict[str, ToolSpec]
    memory: Memory
    tally: Tally
    trace: Trace
    redactor: Redactor
    nonce: str
    deadline: float  # time.monotonic() at which the run's time is up
    gate: CallGate | None = None
    semantic: SemanticGate | None = None  # `[gate]`: asked before consequential steps

    def handle(self, block: dict[str, Any], reason: str) -> Answer:
        """Answer one `tool_use` block; `reason` is the agent's text in that turn."""
        name = block.get("name", "")
        if name == "finish":
            return self._finish(block)
        if name == "update_memory":
            return self._update_memory(block)
        if name not in self.tools:  # the job's tools, as resolved for this run
            return self._invalid(block, self._unknown(str(name)))
        spec = self.tools[name]
        args, problem = dispatch.validate_args(spec, block.get("input"))
        if problem or args is None:
            return self._invalid(block, problem or "invalid arguments")
        tally = self.tally
        limit = guards.before_tool_call(self.job.limits, tally, name, args)
        if limit:
            tally.actions.append(Action(tally.steps, name, args, "not_executed", limit.detail))
            self.trace.emit("guard.stop", reason=limit.reason, tool=name, input=args)
            limit.failed_step = tally.steps
            return self._result(block, f"Not executed: {limit.detail}", error=True), limit
        if self.semantic is not None:
            stop = self.semantic.before_call(spec, args, reason)
            if stop is not None:
                return self._not_taken(block, name, args, stop)
        tally.tool_calls += 1
        return self._call(block, spec, args, reason)

    def _not_taken(self, block: dict[str, Any], name: str, args: dict[str, Any],
                   stop: Stop) -> Answer:
        """A step the semantic gate stopped: not executed, and the run ends."""
        tally = self.tally
        tally.actions.append(Action(tally.steps, name, args, "not_executed", stop.detail))
        stop.failed_step = tally.steps
        return self._result(block, f"Not executed: {stop.detail}", error=True), stop

    def _call(self, block: dict[str, Any], spec: ToolSpec, args: dict[str, Any],
              reason: str) -> Answer:
        """A call that passed the guards: the gate, the tool, its result."""
        tally, name = self.tally, spec.name
        self.trace.emit("tool.call", step=tally.steps, tool=name, input=args,
                        tool_use_id=block.get("id"), risk=spec.risk, timeout=spec.timeout)
        decision = self.gate(CallRequest(
            spec=spec, args=args, call_id=block.get("id"), step=tally.steps,
            untrusted=tally.untrusted,
            waiting_for_approval=tally.needs_approval
            and not self.job.spec.continue_after_approval,
            reason=reason, deadline=self.deadline)) if self.gate else Proceed()
        if isinstance(decision, Queued):
            return self._queued(block, spec, args, decision)
        if isinstance(decision, Refused):
            return self.not_executed(block, decision.why), None
        if isinstance(decision, Called):
            outcome, deduplicated = decision.outcome, decision.deduplicated
        else:
            outcome, deduplicated = dispatch.execute(
                spec, args, spec.timeout, spec.retries, self.deadline,
                on_retry=lambda n, o, d: self.trace.emit(
                    "tool.retry", tool=name, attempt=n, error=o.error,
                    delay_s=round(d, 2))), False
        size, excerpt, cut = _excerpt(outcome.data, self.redactor) if outcome.ok \
            else (None, None, False)
        self.trace.emit(
            "tool.result", step=tally.steps, tool=name, ok=outcome.ok, error=outcome.error,
            attempts=outcome.attempts, duration_s=round(outcome.duration, 3),
            data_chars=size, excerpt=excerpt, excerpt_cut=cut)
        if not outcome.ok:
            tally.actions.append(Action(tally.steps, name, args, "failed", outcome.error or ""))
            stop = self._failure(name, outcome)
            if isinstance(decision, Called) and decision.stop_reason:
                stop.reason = decision.stop_reason
            return self._result(block, f"Failed: {outcome.error}. The run is stopped.",
                                error=True), stop
        if spec.untrusted_output:
            tally.untrusted = True
        if (spec.side_effect or spec.compensate) and not deduplicated:
            tally.effects.append(Effect(
                tally.steps, name, args, outcome.data,
                decision.key if isinstance(decision, Called) else None, spec.compensate))
        tally.actions.append(Action(tally.steps, name, args,
                                    "deduplicated" if deduplicated else "ok",
                                    "medium risk" if spec.risk == "medium" else ""))
        return self._result(block, wrap_output(outcome.data, self.nonce,
                                               self.job.limits.max_tool_result_chars,
                                               self.redactor)), None

    def not_executed(self, block: dict[str, Any], why: str) -> dict[str, Any]:
        """A call the run did not make (stopped before it, after `finish`, refused)."""
        tally = self.tally
        tally.actions.append(Action(tally.steps, block.get("name", "?"),
                                    block.get("input") or {}, "not_executed", why))
        self.trace.emit("tool.skipped", step=tally.steps, tool=block.get("name"),
                        tool_use_id=block.get("id"), reason=why)
        return self._result(block, f"Not executed: {why}.", error=True)

    # -- the parts -------------------------------------------------------------------------

    @staticmethod
    def _result(block: dict[str, Any], content: str, error: bool = False) -> dict[str, Any]:
        result = {"type": "tool_result", "tool_use_id": block.get("id"), "content": content}
        return {**result, "is_error": True} if error else result

    def _unknown(self, name: str) -> str:
        valid = ", ".join([*self.tools, "update_memory", "finish"])
        message = f"unknown tool {name!r}; the tools are: {valid}"
        close = difflib.get_close_matches(name, list(self.tools), n=1)
        if close:
            schema = json.dumps(self.tools[close[0]].input_schema(), separators=(",", ":"))
            message += f". Did you mean {close[0]!r}? Its schema: {schema}"
        return message

    def _invalid(self, block: dict[str, Any], message: str) -> Answer:
        """A call that never reached a tool: the model is told, with the valid schema;
        the `max_invalid_calls`-th such call stops the run."""
        tally = self.tally
        tally.invalid_calls += 1
        tally.actions.append(Action(tally.steps, block.get("name", "?"),
                                    block.get("input") or {}, "invalid", message))
        self.trace.emit("tool.invalid", step=tally.steps, tool=block.get("name"),
                        input=block.get("input"), error=message,
                        invalid_calls=tally.invalid_calls)
        limit = self.job.limits.max_invalid_calls
        stop = Stop(Status.ABORTED, StopReason.MAX_INVALID_CALLS,
                    f"{tally.invalid_calls} invalid tool calls (limit {limit}); last: {message}",
                    failed_step=tally.steps) if tally.invalid_calls >= limit else None
        return self._result(block, message, error=True), stop

    def _failure(self, name: str, outcome: dispatch.CallOutcome) -> Stop:
        """Stop-and-report: a failed call ends the run, whatever the model would do."""
        step = self.tally.steps
        if not outcome.timed_out:
            return Stop(Status.ABORTED, StopReason.TOOL_FAILED,
                        f"tool {name} failed: {outcome.error}", failed_step=step)
        if self.deadline - time.monotonic() <= 1:
            return Stop(Status.LIMIT, StopReason.MAX_SECONDS,
                        f"the run's time (max_seconds {self.job.limits.max_seconds:g}) ran out "
                        f"during tool {name}; it was abandoned, its result unknown",
                        failed_step=step)
        return Stop(Status.ABORTED, StopReason.TOOL_TIMEOUT,
                    f"tool {name} {outcome.error}; it was abandoned, its result unknown",
                    failed_step=step)

    def _queued(self, block: dict[str, Any], spec: ToolSpec, args: dict[str, Any],
                queued: Queued) -> Answer:
        tally = self.tally
        tally.actions.append(Action(tally.steps, spec.name, args, "queued", queued.note,
                                    approval_id=queued.approval_id))
        self.trace.emit("tool.queued", step=tally.steps, tool=spec.name, input=args,
                        approval_id=queued.approval_id)
        tally.needs_approval = True
        then = ("Go on with the parts of the task that do not depend on it."
                if self.job.spec.continue_after_approval else
                "Do not retry it or call other tools; call update_memory, then finish.")
        return self._result(block, (
            f"Queued for human approval ({queued.approval_id}): {spec.name} was NOT executed "
            f"and will run only if a person approves it. {then}")), None

    def _update_memory(self, block: dict[str, Any]) -> Answer:
        tally = self.tally
        try:
            # Memory outlives the run: nothing secret goes into it.
            update = MemoryUpdate.model_validate(self.redactor.data(block.get("input") or {}))
        except ValidationError as exc:
            schema = json.dumps(session_tool_definitions()[0]["input_schema"])
            return self._invalid(block, f"invalid update_memory arguments: "
                                 f"{exc.errors()[0]['msg']}. Valid schema: {schema}")
        budget = self.job.spec.memory.budget_tokens
        tokens = apply_update(self.memory, update).tokens()
        limit = effective_budget(self.memory, budget)
        if tokens <= limit:
            tally.memory_update = update
            self.trace.emit("memory.update", tokens=tokens, budget=budget)
            return self._result(block, f"Memory saved for the end of the run "
                                f"({tokens}/{budget} tokens)."), None
        fixed = fixed_tokens(self.memory)
        tally.memory_rejections += 1
        self.trace.emit("memory.over_budget", tokens=tokens, budget=budget,
                        fixed_tokens=fixed, attempt=tally.memory_rejections)
        if tally.memory_rejections >= MAX_MEMORY_REWRITES:
            tally.actions.append(Action(tally.steps, "update_memory", {}, "failed",
                                        f"over budget {MAX_MEMORY_REWRITES} times"))
            tally.finish_reminded = True  # "call finish now" must not be answered back
            return self._result(block, f"Memory still over budget ({tokens} > {limit} "
                                "tokens); the previous memory is kept. Call finish now.",
                                error=True), None
        if limit > budget:  # a person's sections already fill the budget
            allowed = limit - fixed
            size = (f"Your four sections take {tokens - fixed} tokens; the parts of the "
                    f"file you cannot change take {fixed} of the {budget}-token budget, "
                    f"so yours must fit in {allowed} (about {allowed * 4} characters).")
        else:
            size = (f"Memory is {tokens} tokens, over the budget of {budget} (about "
                    f"{budget * 4} characters in all).")
        return self._result(block, size + " Send a compact version: merge items, drop stale "
                            "ones, shorten wording.", error=True), None

    def _finish(self, block: dict[str, Any]) -> Answer:
        tally = self.tally
        try:
            args = FinishArgs.model_validate(self.redactor.data(block.get("input") or {}))
        except ValidationError as exc:
            schema = json.dumps(session_tool_definitions()[1]["input_schema"])
            return self._invalid(block, f"invalid finish arguments: {exc.errors()[0]['msg']}. "
                                 f"Valid schema: {schema}")
        if tally.memory_update is None and not tally.finish_reminded:
            tally.finish_reminded = True
            self.trace.emit("guard.nudge", reason="finish_without_memory", step=tally.steps)
            return self._result(block, "Call update_memory first, then call finish again.",
                                error=True), None
        if self.semantic is not None:
            stop = self.semantic.before_finish(args.model_dump())
            if stop is not None:
                return self._not_taken(block, "finish", args.model_dump(), stop)
        tally.finish = args
        self.trace.emit("session.finish", **args.model_dump())
        return self._result(block, "Run finished."), None
