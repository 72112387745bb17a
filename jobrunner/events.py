"""The vocabulary every module shares: run statuses, stop reasons, alert events, model
error kinds. StrEnums: they are written to records and JSON as their plain values."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """How a run ended (or that it runs)."""

    COMPLETED = "completed"
    FAILED = "failed"  # the agent's own verdict, through finish
    PARTIAL = "partial"  # the agent's own verdict: some of it was not done
    ABORTED = "aborted"  # stopped by jobrunner
    LIMIT = "limit"  # a hard limit
    NEEDS_APPROVAL = "needs_approval"
    SKIPPED = "skipped"
    PAUSED = "paused"
    CRASHED = "crashed"
    RUNNING = "running"


STATUSES = tuple(Status)
# Statuses that count towards an auto-pause; `completed` resets the count.
UNFINISHED = (Status.FAILED, Status.PARTIAL, Status.ABORTED, Status.LIMIT, Status.CRASHED)


class ModelErrorKind(StrEnum):
    """Why a model call produced no usable message."""

    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MALFORMED = "malformed"
    AUTH = "auth"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    TOO_LARGE = "too_large"
    CONFLICT = "conflict"
    CLIENT = "client"  # another 4xx
    IDLE_TIMEOUT = "idle_timeout"  # a streamed reply stopped arriving (model_idle_timeout)
    DEADLINE = "deadline"  # the run's time ran out before or during the call
    REPLAY_EXHAUSTED = "replay_exhausted"


class StopReason(StrEnum):
    """Why a run ended: the record's `stop_reason`."""

    FINISH = "finish"
    # refusals: the run did not start a session
    LOCK_HELD = "lock_held"
    SLOT_TAKEN = "slot_taken"
    LOCK_STALE = "lock_stale"
    LOCK_ORPHANED = "lock_orphaned"  # the holder died; a process it left keeps the lock
    CRASH_HOLD = "crash_hold"
    PAUSED = "paused"
    # stops before or around the session
    AGENT_BUSY = "agent_busy"
    MEMORY_UNREADABLE = "memory_unreadable"
    LEDGER_IN_DOUBT = "ledger_in_doubt"
    MCP_SERVER_FAILED = "mcp_server_failed"  # an MCP server did not start or list its tools
    TERMINATED = "terminated"
    LOCK_LOST = "lock_lost"  # the lock's database connection died mid-run
    INTERRUPTED = "interrupted"
    INTERNAL_ERROR = "internal_error"
    STATE_UNWRITABLE = "state_unwritable"  # the state disk refused a write mid-run
    # guards inside the session
    TOOL_FAILED = "tool_failed"
    TOOL_TIMEOUT = "tool_timeout"
    MAX_INVALID_CALLS = "max_invalid_calls"
    LOOP = "loop"
    STALLED = "stalled"
    SEMANTIC_GATE = "semantic_gate"  # the gate's model judged a step off the job's intent
    MAX_STEPS = "max_steps"
    MAX_TOOL_CALLS = "max_tool_calls"
    MAX_SECONDS = "max_seconds"
    MAX_INPUT_TOKENS = "max_input_tokens"
    MAX_OUTPUT_TOKENS = "max_output_tokens"
    MAX_COST_USD = "max_cost_usd"
    MAX_COST_USD_PER_DAY = "max_cost_usd_per_day"
    # recorded for a run by another process
    PROCESS_DIED = "process_died"
    STALE_TERMINATED = "stale_terminated"
    END_NOT_RECORDED = "end_not_recorded"  # it ended; neither the state nor its lock knew how


def model_api_error(kind: ModelErrorKind | str) -> str:
    """The stop reason of a run a model API error ended: `model_api_error:KIND`."""
    return f"model_api_error:{kind}"


class AlertEvent(StrEnum):
    """Every alert's `event` (SPEC §9)."""

    RUN_ABORTED = "run.aborted"
    RUN_FAILED = "run.failed"
    RUN_LIMIT = "run.limit"
    RUN_CRASHED = "run.crashed"
    RUN_COMPENSATION_FAILED = "run.compensation_failed"  # an undo failed: a person must act
    LOCK_STALE = "lock.stale"
    JOB_PAUSED = "job.paused"
    JOB_MISSED = "job.missed"
    APPROVAL_PENDING = "approval.pending"
    MEMORY_CONFLICT = "memory.conflict"
    RUN_RECOVERED = "run.recovered"
    RUN_COST_SPIKE = "run.cost_spike"  # a run cost several times the job's usual
    JOB_DEGRADED = "job.degraded"  # most of the job's recent runs did not complete
    JOB_INVALID = "job.invalid"
    ALERT_TEST = "alert.test"


ALERT_EVENTS = tuple(AlertEvent)
