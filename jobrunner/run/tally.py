"""What a session counts while it runs, and each tool call as it happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobrunner.models.pricing import Usage

if TYPE_CHECKING:
    from jobrunner.memory.format import MemoryUpdate
    from jobrunner.run.prompt import FinishArgs


@dataclass
class Action:
    """One tool call as it happened, for the report."""

    step: int
    tool: str
    args: dict[str, Any]
    outcome: str  # ok, failed, invalid, not_executed, queued, deduplicated
    detail: str = ""
    approval_id: str = ""  # a queued call's approval (a person approves or rejects it)


@dataclass
class Effect:
    """A side effect this run made (not one answered from the ledger): what undoing it
    needs."""

    step: int
    tool: str
    args: dict[str, Any]
    result: Any  # what the call returned
    key: str | None  # its ledger key, if it went through the ledger
    compensate: str | None  # the tool that undoes it, if its tool declares one


@dataclass
class Tally:
    """Everything the session counts while it runs (the guards read it)."""

    steps: int = 0
    tool_calls: int = 0
    invalid_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    actions: list[Action] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)  # oldest first
    call_counts: dict[str, int] = field(default_factory=dict)
    memory_update: MemoryUpdate | None = None
    memory_rejections: int = 0
    finish: FinishArgs | None = None
    finish_reminded: bool = False
    end_reminded: bool = False
    stall_nudged: bool = False
    last_turn_signature: str | None = None
    untrusted: bool = False  # content from outside (http_get, ...) entered the session
    needs_approval: bool = False  # a call was queued for a person
    last_text: str = ""  # the model's last words (the partial output of a stopped run)
    cut_text: str = ""  # what a reply cut off mid-stream had said, until a reply comes whole
    # How far the API's token counts ran above our estimate (never below 1): worst-case
    # checks scale the next request's estimate by it, so a cost limit cannot be overrun.
    token_ratio: float = 1.0
    last_estimate: int = 0
    # Calls and cost of the helper models (the semantic gate, summaries), by purpose; their
    # tokens and cost are in `usage` and `cost_usd` too.
    helper_calls: dict[str, int] = field(default_factory=dict)
    helper_cost_usd: dict[str, float] = field(default_factory=dict)


@dataclass
class Undo:
    """One compensation as it went."""

    effect: Effect
    tool: str  # the compensating tool
    key: str  # its ledger key
    ok: bool
    error: str = ""
    already: bool = False  # the ledger says it was done already
