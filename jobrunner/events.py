"""Names of alert events and run statuses: the vocabulary shared by every module."""

from __future__ import annotations

ALERT_EVENTS = (
    "run.aborted",
    "run.failed",
    "run.limit",
    "run.crashed",
    "lock.stale",
    "job.paused",
    "job.missed",
    "approval.pending",
    "memory.conflict",
    "run.recovered",
    "job.invalid",
    "alert.test",
)

STATUSES = (
    "completed",
    "failed",
    "partial",
    "aborted",
    "limit",
    "needs_approval",
    "skipped",
    "paused",
    "crashed",
    "running",
)
