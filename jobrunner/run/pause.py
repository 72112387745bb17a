"""Auto-pause: after `pause_after` consecutive runs that did not complete, a job is
paused until `jobrunner resume NAME`, so cron cannot burn money in a loop."""

from __future__ import annotations

from typing import Any

from jobrunner.store import Store, iso, utcnow

# Statuses that count towards a pause; `completed` resets the count. Skipped, paused,
# running and needs_approval runs are neither (the job did not fail, nor succeed).
FAILED = ("failed", "partial", "aborted", "limit", "crashed")
COUNTED = (*FAILED, "completed")


def is_paused(store: Store, job: str) -> dict[str, Any] | None:
    """The pause record of `job`, or None when it is not paused."""
    with store.connect() as conn:
        row = conn.execute("SELECT * FROM pauses WHERE job = ? AND paused = 1", (job,)).fetchone()
    return dict(row) if row else None


def pause(store: Store, job: str, reason: str, run_id: str | None) -> bool:
    """Pause `job`; True when it was not paused already (so `job.paused` is sent once)."""
    now = iso(utcnow())
    with store.transaction() as conn:
        row = conn.execute("SELECT paused FROM pauses WHERE job = ?", (job,)).fetchone()
        if row and row["paused"]:
            return False
        conn.execute(
            "INSERT INTO pauses (job, paused, paused_at, reason, run_id) VALUES (?, 1, ?, ?, ?) "
            "ON CONFLICT (job) DO UPDATE SET paused = 1, paused_at = excluded.paused_at, "
            "reason = excluded.reason, run_id = excluded.run_id",
            (job, now, reason, run_id),
        )
    return True


def resume(store: Store, job: str) -> bool:
    """Lift the pause; True when the job was paused. Failures before now stop counting."""
    with store.transaction() as conn:
        cursor = conn.execute("UPDATE pauses SET paused = 0, resumed_at = ? "
                              "WHERE job = ? AND paused = 1", (iso(utcnow()), job))
        return cursor.rowcount == 1


def recent_outcomes(store: Store, job: str, limit: int, since_resume: bool = True) -> list[str]:
    """Statuses of the job's last `limit` finished runs that count (newest first), since
    the last `resume` unless `since_resume` is False."""
    with store.connect() as conn:
        row = conn.execute("SELECT resumed_at FROM pauses WHERE job = ?", (job,)).fetchone()
        since = (row["resumed_at"] if row and since_resume else None) or ""
        marks = ", ".join("?" for _ in COUNTED)
        rows = conn.execute(
            f"SELECT status FROM runs WHERE job = ? AND status IN ({marks}) AND started_at >= ? "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?", (job, *COUNTED, since, limit),
        ).fetchall()
    return [r["status"] for r in rows]


def consecutive_failures(store: Store, job: str, limit: int) -> int:
    """How many of the newest counted runs (up to `limit`) did not complete, in a row."""
    count = 0
    for status in recent_outcomes(store, job, limit):
        if status == "completed":
            break
        count += 1
    return count
