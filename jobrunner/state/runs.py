"""Runs, slots, day budgets and pauses, in SQL every backend reads."""

from __future__ import annotations

from dataclasses import astuple
from datetime import datetime
from typing import Any

from jobrunner.clock import iso
from jobrunner.state.base import Backend, Ident
from jobrunner.state.records import RUN_COLUMNS, Pause, RunRecord

# Runs that never started a session: their slot may still run (after `resume`, say).
NOT_STARTED = ("skipped", "paused")


def _run(row: dict[str, Any]) -> RunRecord:
    return RunRecord(**{k: row[k] for k in RUN_COLUMNS})


class RunsMixin(Backend):
    """Run records, the once-per-slot claim, day budgets and pauses."""

    def insert_run(self, run: RunRecord) -> None:
        names = ("id", "job", "agent", "status", "trigger", "slot", "host", "model")
        values = [Ident(v) if k in names and isinstance(v, str) else v
                  for k, v in zip(RUN_COLUMNS, astuple(run), strict=True)]
        with self._tx() as db:
            db.run(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                   f"({', '.join('?' for _ in RUN_COLUMNS)})", values)

    def update_run(self, run_id: str, *, where_status: str | None = None,
                   **changes: Any) -> bool:
        """Set `changes` of a run (only while its status is `where_status`, if given: two
        processes recording one crash must not both act on it). Returns whether it did."""
        unknown = set(changes) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"not a run field: {', '.join(sorted(unknown))}")
        names = ("status", "stop_reason", "slot")
        values = [Ident(v) if k in names and isinstance(v, str) else v
                  for k, v in changes.items()]
        sql = f"UPDATE runs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?"
        params: list[Any] = [*values, Ident(run_id)]
        if where_status is not None:
            sql += " AND status = ?"
            params.append(Ident(where_status))
        with self._tx() as db:
            return db.run(sql, params) > 0

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as db:
            row = db.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _run(row) if row else None

    def find_run(self, ref: str) -> RunRecord | None:
        """A run by id, or by a prefix that only one run's id starts with."""
        found = self.get_run(ref)
        if found is None:
            matches = self.find_runs(ref, limit=2)
            found = matches[0] if len(matches) == 1 else None
        return found

    def running_runs(self, job: str) -> list[RunRecord]:
        """Runs of `job` recorded `running` (under the job's lock: runs that ended without
        their end being recorded)."""
        with self._read() as db:
            rows = db.all("SELECT * FROM runs WHERE status = 'running' AND job = ? "
                          "ORDER BY started_at", (job,))
        return [_run(r) for r in rows]

    def find_runs(self, prefix: str, limit: int = 5) -> list[RunRecord]:
        """Runs whose id starts with `prefix` (people copy short ids), newest first."""
        with self._read() as db:
            # Run ids hold neither `%` nor `_`: a prefix with them matches nothing.
            rows = db.all("SELECT * FROM runs WHERE id LIKE ? ORDER BY id DESC LIMIT ?",
                          (prefix.replace("%", "#").replace("_", "#") + "%", limit))
        return [_run(r) for r in rows]

    def list_runs(self, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        where, params = ("WHERE job = ?", (job,)) if job else ("", ())
        with self._read() as db:
            rows = db.all(f"SELECT * FROM runs {where} ORDER BY started_at DESC, "
                          f"{self.insertion} DESC LIMIT ?", (*params, limit))
        return [_run(r) for r in rows]

    def last_run(self, job: str) -> RunRecord | None:
        """The job's newest run that started a session (or tried to)."""
        with self._read() as db:
            row = db.one("SELECT * FROM runs WHERE job = ? AND status NOT IN (?, ?) "
                         f"ORDER BY started_at DESC, {self.insertion} DESC LIMIT 1",
                         (job, *NOT_STARTED))
        return _run(row) if row else None

    def slot_run(self, job: str, slot: datetime) -> RunRecord | None:
        """The run that took `slot` of `job`, if any."""
        with self._read() as db:
            row = db.one("SELECT * FROM runs WHERE job = ? AND slot = ? AND status NOT IN "
                         "(?, ?) ORDER BY started_at LIMIT 1", (job, iso(slot), *NOT_STARTED))
        return _run(row) if row else None

    def claim_slot(self, job: str, slot: datetime, run_id: str) -> str | None:
        """Claim `slot` of `job` for `run_id`, once whoever launches it: None when claimed,
        else the id of the run that has it."""
        text = iso(slot)
        with self._tx() as db:
            taken = db.one("SELECT id FROM runs WHERE job = ? AND slot = ? AND status NOT IN "
                           "(?, ?) AND id <> ? LIMIT 1",
                           (Ident(job), Ident(text), *NOT_STARTED, Ident(run_id)))
            if taken:
                return str(taken["id"])
            if db.one("INSERT INTO slots (job, slot, run_id, claimed_at) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (job, slot) DO NOTHING RETURNING run_id",
                      (Ident(job), Ident(text), Ident(run_id), iso(self._now(db)))):
                return None
            holder = db.one("SELECT run_id FROM slots WHERE job = ? AND slot = ?",
                            (Ident(job), Ident(text)))
        return str(holder["run_id"]) if holder else None

    def release_slot(self, job: str, slot: datetime, run_id: str) -> None:
        """Give a claimed slot back (the run did not start after all: paused, say)."""
        with self._tx() as db:
            db.run("DELETE FROM slots WHERE job = ? AND slot = ? AND run_id = ?",
                   (Ident(job), Ident(iso(slot)), Ident(run_id)))

    def cost_since(self, job: str, since: datetime) -> float:
        """What the job's runs started since `since` cost (the day budget's spend)."""
        with self._read() as db:
            row = db.one("SELECT COALESCE(SUM(cost_usd), 0) AS spent FROM runs "
                         "WHERE job = ? AND started_at >= ?", (job, iso(since)))
        return float(row["spent"]) if row else 0.0

    def recent_costs(self, job: str, status: str, limit: int, exclude: str) -> list[float]:
        """What the job's newest `limit` runs with `status` cost (not run `exclude`)."""
        with self._read() as db:
            rows = db.all("SELECT cost_usd FROM runs WHERE job = ? AND status = ? AND id <> ? "
                          f"ORDER BY started_at DESC, {self.insertion} DESC LIMIT ?",
                          (job, status, exclude, limit))
        return [float(r["cost_usd"] or 0.0) for r in rows]

    def statuses(self, job: str, among: tuple[str, ...], since: str, limit: int) -> list[str]:
        """Statuses of the job's newest runs with a status in `among`, started at or after
        `since` (ISO text, "" for all), newest first."""
        marks = ", ".join("?" for _ in among)
        with self._read() as db:
            rows = db.all(f"SELECT status FROM runs WHERE job = ? AND status IN ({marks}) "
                          "AND started_at >= ? ORDER BY started_at DESC, "
                          f"{self.insertion} DESC LIMIT ?",
                          (job, *among, since, limit))
        return [r["status"] for r in rows]

    def first_started(self, job: str) -> str | None:
        with self._read() as db:
            row = db.one("SELECT MIN(started_at) AS first FROM runs WHERE job = ?", (job,))
        return row["first"] if row else None

    def runs_since(self, job: str, since: datetime) -> list[RunRecord]:
        with self._read() as db:
            rows = db.all("SELECT * FROM runs WHERE job = ? AND started_at >= ? "
                          "ORDER BY started_at", (job, iso(since)))
        return [_run(r) for r in rows]

    # -- pauses -------------------------------------------------------------------------

    def pause_of(self, job: str) -> Pause | None:
        """The job's pause record (paused or lifted), if it ever had one."""
        with self._read() as db:
            row = db.one("SELECT * FROM pauses WHERE job = ?", (job,))
        if row is None:
            return None
        return Pause(**{**row, "paused": bool(row["paused"])})

    def pause(self, job: str, reason: str, run_id: str | None) -> bool:
        """Pause `job`; True when it was not paused already (so `job.paused` goes once)."""
        with self._tx() as db:
            return db.one(
                "INSERT INTO pauses (job, paused, paused_at, reason, run_id) "
                "VALUES (?, 1, ?, ?, ?) ON CONFLICT (job) DO UPDATE SET paused = 1, "
                "paused_at = excluded.paused_at, reason = excluded.reason, "
                "run_id = excluded.run_id WHERE pauses.paused = 0 RETURNING job",
                (Ident(job), iso(self._now(db)), reason, Ident(run_id) if run_id else None),
            ) is not None

    def resume(self, job: str) -> bool:
        """Lift the pause; True when the job was paused."""
        with self._tx() as db:
            return db.run("UPDATE pauses SET paused = 0, resumed_at = ? "
                          "WHERE job = ? AND paused = 1", (iso(self._now(db)), Ident(job))) == 1
