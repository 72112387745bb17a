"""The agent session: model turns and tool calls in a plain loop, under the guards.

The runner, not the model, decides when a run stops: a failed tool result, an invalid
call too many, a limit, a loop or a stall each end the session with an `Ending`; the
model is only ever told.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobrunner.config.jobfile import Job
from jobrunner.effects.gate import CallGate
from jobrunner.events import ModelErrorKind, Status, StopReason, model_api_error
from jobrunner.memory.format import Memory
from jobrunner.models import ModelClient, ModelError, ModelTurn
from jobrunner.models.pricing import Price
from jobrunner.redact import Redactor
from jobrunner.run import guards, prompt
from jobrunner.run.calls import Calls
from jobrunner.run.ending import Ending
from jobrunner.run.model_calls import Helper, ModelCalls
from jobrunner.run.semantic_gate import SemanticGate
from jobrunner.run.summaries import Summaries
from jobrunner.run.tally import Tally
from jobrunner.state.traces import Trace
from jobrunner.tools.api import ToolSpec


@dataclass
class Session:
    """One run's conversation. Build it, then call `run()` once."""

    job: Job
    run_id: str
    client: ModelClient
    tools: dict[str, ToolSpec]
    memory: Memory
    price: Price
    trace: Trace
    redactor: Redactor
    started_monotonic: float
    now: datetime
    slot: datetime | None = None
    spent_today_usd: float = 0.0
    gate: CallGate | None = None
    helpers: dict[str, Helper] = field(default_factory=dict)  # by purpose: gate, summary
    tally: Tally = field(default_factory=Tally)
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))
    messages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        deadline = self.started_monotonic + self.job.limits.max_seconds
        self.model = ModelCalls(self.client, self.job, self.price, self.trace, self.redactor,
                                self.tally, deadline)
        semantic = None
        if self.job.spec.gate is not None and "gate" in self.helpers:
            semantic = SemanticGate(
                self.job.spec.gate, self.job,
                ModelCalls.of_helper(self.helpers["gate"], self.model), self.nonce,
                self.spent_today_usd, lambda: self.messages)
        self.calls = Calls(self.job, self.tools, self.memory, self.tally, self.trace,
                           self.redactor, self.nonce, deadline, self.gate, semantic)
        self.summaries = Summaries(
            ModelCalls.of_helper(self.helpers["summary"], self.model), self.nonce,
            self.redactor, self.spent_today_usd) if "summary" in self.helpers else None

    def run(self) -> Ending:
        job, tally = self.job, self.tally
        self.messages = [{"role": "user", "content": prompt.opening_message(
            job, self.run_id, self.now, self.slot)}]
        system = prompt.system_blocks(job, self.memory, self.nonce, self.redactor)
        tool_defs = prompt.tool_definitions(self.tools)
        self.trace.emit("session.start", nonce_set=True, tools=[t["name"] for t in tool_defs],
                        memory_tokens=self.memory.tokens())
        while True:
            elision = guards.elide_old_results(self.messages, system, tool_defs, job.limits,
                                               self.trace)
            estimate = elision.estimate if self.summaries is None else \
                self.summaries.after_elision(self.messages, elision)
            tally.last_estimate = estimate
            check = guards.before_model_call(
                job.limits, tally, self.price, math.ceil(estimate * tally.token_ratio),
                self.model.remaining(), self.spent_today_usd)
            if isinstance(check, guards.Stop):
                if check.reason == StopReason.MAX_COST_USD_PER_DAY and tally.steps == 0:
                    # The day's money was gone before this run's first call: it could not
                    # run now (exit 75), which is not a failure to count, alert or learn.
                    check.status = Status.SKIPPED
                return self.end(check)
            turn = self.model.call(system, tool_defs, self.messages, check.max_tokens)
            if isinstance(turn, ModelError):
                return self.end(self._model_stop(turn))
            self.messages.append({"role": "assistant", "content": turn.content})
            after = guards.after_model_call(job.limits, tally)
            if after:
                return self.end(after)
            stop = self._handle_turn(turn)
            if stop:
                return self.end(stop)

    def end(self, stop: guards.Stop) -> Ending:
        """The session's one exit: a queued approval turns a good ending into waiting."""
        status = stop.status
        if self.tally.needs_approval and status in (Status.COMPLETED, Status.PARTIAL) \
                and not self.job.spec.continue_after_approval:
            status = Status.NEEDS_APPROVAL
        return Ending(status, stop.reason, self.redactor.text(stop.detail), self.tally,
                      stop.failed_step)

    @staticmethod
    def _model_stop(error: ModelError) -> guards.Stop:
        if error.kind == ModelErrorKind.DEADLINE:
            return guards.Stop(Status.LIMIT, StopReason.MAX_SECONDS, error.message)
        return guards.Stop(Status.ABORTED, model_api_error(error.kind),
                           error.message + (f". {error.advice}" if error.advice else ""))

    def _handle_turn(self, turn: ModelTurn) -> guards.Stop | None:
        """Stalls and nudges, then every call of the turn; the model gets the results."""
        tally = self.tally
        uses = [b for b in turn.content if b.get("type") == "tool_use"]
        signature = json.dumps([{k: v for k, v in b.items() if k != "id"}
                                for b in turn.content], sort_keys=True)
        repeated = signature == tally.last_turn_signature
        tally.last_turn_signature = signature
        if not uses:
            return self._no_calls(repeated)
        if repeated:
            if tally.stall_nudged:
                return guards.Stop(Status.ABORTED, StopReason.STALLED,
                                   "two identical turns in a row after a nudge: no progress")
            tally.stall_nudged = True
            self.trace.emit("guard.nudge", reason="repeated_turn", step=tally.steps)
        reason = "\n".join(b.get("text", "") for b in turn.content
                           if b.get("type") == "text" and b.get("text", "").strip()).strip()
        results: list[dict[str, Any]] = []
        stop: guards.Stop | None = None
        for block in uses:
            if stop is not None:
                results.append(self.calls.not_executed(block, "the run was stopped before it"))
            elif tally.finish is not None:
                results.append(self.calls.not_executed(block, "asked for after finish"))
            else:
                result, stop = self.calls.handle(block, reason)
                results.append(result)
        if stop is not None:
            return stop
        if tally.finish is not None:
            return guards.Stop(Status(tally.finish.status), StopReason.FINISH,
                               tally.finish.summary)
        # Everything jobrunner tells the model passes the redactor: tool output, errors,
        # refusals (a tool's error text may quote a secret).
        content: list[dict[str, Any]] = self.redactor.data(results)
        if repeated:
            content.append({"type": "text", "text": (
                "Your last two turns were identical. Make progress or call `finish`.")})
        self.messages.append({"role": "user", "content": content})
        return None

    def _no_calls(self, repeated: bool) -> guards.Stop | None:
        """A turn with no tool call: one reminder that runs end through `finish`."""
        tally = self.tally
        if tally.end_reminded:
            why = ("the model repeated itself without calling finish" if repeated else
                   "the model ended its turn twice without calling finish")
            return guards.Stop(Status.ABORTED, StopReason.STALLED, why)
        tally.end_reminded = True
        self.trace.emit("guard.nudge", reason="no_finish", step=tally.steps)
        self.messages.append({"role": "user", "content": (
            "You ended your turn without calling `finish`. The run only ends through "
            "`finish`: call `update_memory` if you have not, then `finish`.")})
        return None

