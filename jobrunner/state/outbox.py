"""Alerts, their cooldowns and the outbox of deliveries, in SQL every backend reads.

A delivery's claim is a lease: `updated_at` is written by the state's clock (`_now`) and
another process, maybe on another host, takes the delivery over once it is older than
`stale_claim`. An alert's `at` and `repeat_after` are the caller's, as are approvals'
times: both ends of those comparisons come from the host that calls.
"""

from __future__ import annotations

from typing import Any

from jobrunner.clock import iso
from jobrunner.state.base import Backend, Ident
from jobrunner.state.records import AlertRow, Delivery

_ALERT_FIELDS = ("id", "event", "job", "run_id", "cause", "message", "at", "body", "repeats",
                 "last_repeat_at")
_DELIVERY_FIELDS = ("alert_id", "channel", "status", "attempts", "last_error", "updated_at",
                    "delivered_at")


def _alert(row: dict[str, Any]) -> AlertRow:
    return AlertRow(**{k: row[k] for k in _ALERT_FIELDS})


def _delivery(row: dict[str, Any]) -> Delivery:
    return Delivery(**{k: row[k] for k in _DELIVERY_FIELDS}, body=row.get("body") or "")


def _same_job(job: str | None) -> tuple[str, tuple[Any, ...]]:
    """`job = ?`, or `job IS NULL` for alerts about no job (`? IS NULL` has no type for
    PostgreSQL to infer)."""
    return ("job = ?", (Ident(job),)) if job else ("job IS NULL", ())


class OutboxMixin(Backend):
    """An alert is recorded once per cause and cooldown; each channel's delivery is a row
    that stays `pending` until it is delivered."""

    def alert_record(self, *, event: str, job: str | None, run_id: str | None, cause: str,
                     message: str, at: str, body: str, channels: list[str],
                     repeat_after: str | None) -> int | None:
        """Insert the alert with a pending delivery per channel, or count it as a repeat
        (None) when one with the same event, job and cause was raised after
        `repeat_after` (ISO text; None: ever)."""
        job_is, job_params = _same_job(job)
        with self._tx() as db:
            # Two processes raising the same alert at once: one inserts, one counts a repeat.
            self._serialize(db, f"alert {event} {job or ''} {cause}")
            last = db.one(f"SELECT id, at FROM alerts WHERE event = ? AND {job_is} AND "
                          "cause = ? ORDER BY id DESC LIMIT 1",
                          (Ident(event), *job_params, Ident(cause)))
            if last and (repeat_after is None or last["at"] >= repeat_after):
                db.run("UPDATE alerts SET repeats = repeats + 1, last_repeat_at = ? "
                       "WHERE id = ?", (at, last["id"]))
                return None
            row = db.one("INSERT INTO alerts (event, job, run_id, cause, message, at, body) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                         (Ident(event), Ident(job) if job else None,
                          Ident(run_id) if run_id else None, Ident(cause), message, at, body))
            assert row is not None
            alert_id = int(row["id"])
            for channel in channels:
                db.run("INSERT INTO alert_deliveries (alert_id, channel, status, updated_at) "
                       "VALUES (?, ?, 'pending', ?)", (alert_id, Ident(channel), at))
        return alert_id

    def alert_raised(self, event: str, job: str | None, cause: str) -> bool:
        """Whether an alert for this event, job and cause was ever raised."""
        job_is, job_params = _same_job(job)
        with self._read() as db:
            return db.one(f"SELECT 1 AS found FROM alerts WHERE event = ? AND {job_is} AND "
                          "cause = ?", (event, *job_params, cause)) is not None

    def last_cause(self, event: str, job: str) -> str | None:
        """The greatest cause of `event` alerts for `job` (slots are causes of job.missed)."""
        with self._read() as db:
            row = db.one("SELECT MAX(cause) AS cause FROM alerts WHERE event = ? AND job = ?",
                         (event, job))
        return row["cause"] if row else None

    def deliveries_due(self, alert_ids: list[int] | None, stale_claim: str) -> list[Delivery]:
        """Pending deliveries (and ones claimed before `stale_claim` by a process that
        died mid-send), with their alert's body, oldest alert first."""
        sql = ("SELECT d.*, a.body FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
               "WHERE (d.status = 'pending' OR (d.status = 'sending' AND d.updated_at < ?))")
        params: list[Any] = [stale_claim]
        if alert_ids is not None:
            sql += f" AND d.alert_id IN ({', '.join('?' for _ in alert_ids) or 'NULL'})"
            params += alert_ids
        with self._read() as db:
            return [_delivery(r) for r in db.all(sql + " ORDER BY d.alert_id, d.channel",
                                                  params)]

    def delivery_claim(self, delivery: Delivery) -> bool:
        """Take a delivery for this process, so two processes never send it twice."""
        with self._tx() as db:
            return db.run(
                "UPDATE alert_deliveries SET status = 'sending', updated_at = ? WHERE "
                "alert_id = ? AND channel = ? AND status = ? AND updated_at = ?",
                (iso(self._now(db)), delivery.alert_id, Ident(delivery.channel),
                 Ident(delivery.status), Ident(delivery.updated_at))) == 1

    def delivery_set(self, alert_id: int, channel: str, status: str,
                     error: str | None) -> None:
        """Record a delivery attempt's end: delivered, pending again, or abandoned."""
        with self._tx() as db:
            now = iso(self._now(db))
            db.run("UPDATE alert_deliveries SET status = ?, attempts = attempts + ?, "
                   "last_error = ?, updated_at = ?, delivered_at = ? "
                   "WHERE alert_id = ? AND channel = ?",
                   (Ident(status), 0 if status == "abandoned" else 1, error, now,
                    now if status == "delivered" else None, alert_id, Ident(channel)))

    def deliveries_of(self, alert_id: int) -> list[Delivery]:
        with self._read() as db:
            return [_delivery(r) for r in db.all(
                "SELECT * FROM alert_deliveries WHERE alert_id = ? ORDER BY channel",
                (alert_id,))]

    def alerts_recent(self, limit: int = 20) -> list[AlertRow]:
        with self._read() as db:
            return [_alert(r) for r in db.all("SELECT * FROM alerts ORDER BY id DESC LIMIT ?",
                                               (limit,))]

    def undelivered(self) -> int:
        """How many deliveries are still waiting in the outbox."""
        with self._read() as db:
            row = db.one("SELECT COUNT(*) AS waiting FROM alert_deliveries "
                         "WHERE status IN ('pending', 'sending')")
        return int(row["waiting"]) if row else 0

    # -- channel backoff ------------------------------------------------------------------

    def channels_resting(self) -> dict[str, str]:
        """Channels backing off after failures, with when they may be tried again."""
        with self._read() as db:
            return {r["channel"]: r["retry_at"] for r in db.all(
                "SELECT channel, retry_at FROM channel_backoff WHERE retry_at > ?",
                (iso(self._now(db)),))}

    def channel_failed(self, channel: str, error: str, first_delay: float,
                       max_delay: float) -> None:
        """One more consecutive failure: the next sweep waits `first_delay`, doubling per
        failure up to `max_delay`."""
        from datetime import timedelta

        with self._tx() as db:
            # Two senders failing at once both count: the read and the write are one step.
            self._serialize(db, f"backoff {channel}")
            row = db.one("SELECT failures FROM channel_backoff WHERE channel = ?",
                         (Ident(channel),))
            failures = (row["failures"] if row else 0) + 1
            delay = min(first_delay * 2 ** min(failures - 1, 20), max(first_delay, max_delay))
            db.run("INSERT INTO channel_backoff (channel, failures, retry_at, last_error) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET failures = "
                   "excluded.failures, retry_at = excluded.retry_at, "
                   "last_error = excluded.last_error",
                   (Ident(channel), failures, iso(self._now(db) + timedelta(seconds=delay)),
                    error))

    def channel_ok(self, channel: str) -> None:
        with self._tx() as db:
            db.run("DELETE FROM channel_backoff WHERE channel = ?", (Ident(channel),))
