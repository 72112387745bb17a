"""How a run ended, as one value: its status, why, a readable paragraph and the session's
tally. Everything that can end a run makes one; `run.outcome.conclude` maps it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobrunner import errors
from jobrunner.events import Status, StopReason

if TYPE_CHECKING:
    from jobrunner.run.tally import Effect, Tally, Undo

EXIT_BY_STATUS = {
    Status.COMPLETED: errors.EXIT_OK,
    Status.SKIPPED: errors.EXIT_OK,
    Status.FAILED: errors.EXIT_FAILED,
    Status.PARTIAL: errors.EXIT_FAILED,
    Status.ABORTED: errors.EXIT_FAILED,
    Status.CRASHED: errors.EXIT_FAILED,
    Status.LIMIT: errors.EXIT_LIMIT,
    Status.NEEDS_APPROVAL: errors.EXIT_APPROVAL,
    Status.PAUSED: errors.EXIT_TEMPFAIL,
}
# Skips that mean "could not run now" (exit 75), not "another run has it" (exit 0).
NOT_NOW = {StopReason.LOCK_STALE, StopReason.CRASH_HOLD, StopReason.LOCK_ORPHANED,
           StopReason.MAX_COST_USD_PER_DAY}
# Endings that are a lesson for the agent's memory (jobrunner writes the line itself).
LESSONS = {Status.ABORTED, Status.LIMIT, Status.CRASHED}
# Stops that are the operator's to fix (the key, its permissions, the model's name): they
# are recorded and alerted, but they are no lesson for the agent.
OPERATOR_STOPS = {"model_api_error:auth", "model_api_error:permission",
                  "model_api_error:not_found", StopReason.LOCK_LOST,
                  StopReason.STATE_UNWRITABLE}


@dataclass
class Ending:
    """How a run ended: its status, why (`reason` is a StopReason or
    `model_api_error:KIND`), a readable paragraph, and the session's tally if one ran."""

    status: Status
    reason: str
    detail: str
    tally: Tally | None = None
    failed_step: int | None = None
    # Said in the report: what happened around the run (a person edited the memory).
    notes: list[str] = field(default_factory=list)
    # Also said on stderr, even when the run completed: what went wrong keeping the run's
    # record (a memory or trace the disk refused).
    problems: list[str] = field(default_factory=list)
    # Compensation (run/compensation.py): the side effects undone, those not, and why not.
    undone: list[Undo] = field(default_factory=list)
    not_undone: list[Effect] = field(default_factory=list)
    undo_note: str = ""

    def exit_code(self) -> int:
        if self.status == Status.SKIPPED and self.reason in NOT_NOW:
            return errors.EXIT_TEMPFAIL
        return EXIT_BY_STATUS.get(self.status, errors.EXIT_FAILED)

    def lesson(self) -> bool:
        """Whether the agent's failure log gets a line for it."""
        return self.status in LESSONS and self.reason not in OPERATOR_STOPS

    def not_done(self) -> list[str]:
        """The tools the session asked for and did not get run."""
        return [a.tool for a in self.tally.actions if a.outcome == "not_executed"] \
            if self.tally else []
