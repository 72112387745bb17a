"""The ledger of side effects and the approvals queue, in SQL every backend reads.

Every decision is one compare-and-swap statement (`INSERT ... ON CONFLICT DO NOTHING`,
`UPDATE ... WHERE status = ...`), so two processes, or two hosts, never both win a key
or an approval, whatever the database's isolation level.
"""

from __future__ import annotations

from typing import Any

from jobrunner.clock import iso
from jobrunner.hosts import this_host
from jobrunner.state.base import Backend, Ident
from jobrunner.state.records import (
    APPROVAL_FIELDS,
    LEDGER_FIELDS,
    AlreadyDone,
    Approval,
    Blocked,
    Claimed,
    Entry,
)

RETRYABLE = ("failed", "not_done")


def _entry(row: dict[str, Any]) -> Entry:
    return Entry(**{k: row[k] for k in LEDGER_FIELDS}, run_status=row.get("run_status"))


# Entries with the status of the run that recorded their intent.
_ENTRIES = "SELECT l.*, r.status AS run_status FROM ledger l LEFT JOIN runs r ON r.id = l.run_id"


def _approval(row: dict[str, Any]) -> Approval:
    return Approval(**{k: row[k] for k in APPROVAL_FIELDS})


class EffectsMixin(Backend):
    """Ledger entries (intent before a call, outcome after) and approvals."""

    # -- the ledger -----------------------------------------------------------------------

    def ledger_get(self, key: str) -> Entry | None:
        with self._read() as db:
            row = db.one(f"{_ENTRIES} WHERE l.key = ?", (key,))
        return _entry(row) if row else None

    def ledger_entries(self, job: str | None = None, limit: int = 200) -> list[Entry]:
        """Newest first."""
        where, params = ("WHERE l.job = ?", (job,)) if job else ("", ())
        with self._read() as db:
            rows = db.all(f"{_ENTRIES} {where} ORDER BY l.intent_at DESC, "
                          f"l.{self.insertion} DESC "
                          "LIMIT ?", (*params, limit))
        return [_entry(r) for r in rows]

    def ledger_open(self, job: str) -> list[Entry]:
        """The job's entries whose outcome is not recorded (running or in doubt)."""
        with self._read() as db:
            rows = db.all(f"{_ENTRIES} WHERE l.job = ? AND l.status IN "
                          "('intent', 'in_doubt') ORDER BY l.intent_at", (job,))
        return [_entry(r) for r in rows]

    def ledger_begin(self, key: str, *, job: str, tool: str, args: str, run_id: str,
                     pid: int, approval_id: str | None = None
                     ) -> Claimed | AlreadyDone | Blocked:
        """Record the intent of a call, unless the key is done or its outcome unknown."""
        with self._tx() as db:
            owner = (Ident(run_id), Ident(approval_id) if approval_id else None, pid,
                     Ident(this_host()), iso(self._now(db)))
            row = db.one(
                "INSERT INTO ledger (key, job, tool, args, status, run_id, approval_id, pid, "
                "host, attempts, intent_at) VALUES (?, ?, ?, ?, 'intent', ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (key) DO NOTHING RETURNING *",
                (Ident(key), Ident(job), Ident(tool), args, *owner))
            if row is None:
                row = db.one(
                    "UPDATE ledger SET status = 'intent', args = ?, run_id = ?, "
                    "approval_id = ?, pid = ?, host = ?, intent_at = ?, "
                    "attempts = attempts + 1, outcome_at = NULL, result = NULL, error = NULL "
                    "WHERE key = ? AND status IN (?, ?) RETURNING *",
                    (args, *owner, Ident(key), *RETRYABLE))
            if row is not None:
                return Claimed(_entry(row))
            found = db.one("SELECT * FROM ledger WHERE key = ?", (Ident(key),))
        assert found is not None  # the insert conflicted: the row exists
        entry = _entry(found)
        return AlreadyDone(entry) if entry.status == "done" else Blocked(entry)

    def ledger_record(self, key: str, status: str, result: str | None,
                      error: str | None) -> None:
        """The outcome of a claimed call: done, failed or in_doubt."""
        with self._tx() as db:
            db.run("UPDATE ledger SET status = ?, outcome_at = ?, result = ?, error = ? "
                   "WHERE key = ?", (Ident(status), iso(self._now(db)), result, error,
                                     Ident(key)))

    def ledger_resolve(self, key: str, was: str, status: str, user: str,
                       result: str | None) -> bool:
        """An operator's word on an in-doubt call; False if the entry changed meanwhile."""
        with self._tx() as db:
            now = iso(self._now(db))
            return db.run(
                "UPDATE ledger SET status = ?, resolved_by = ?, resolved_at = ?, result = ?, "
                "outcome_at = COALESCE(outcome_at, ?) WHERE key = ? AND status = ?",
                (Ident(status), user, now, result, now, Ident(key), Ident(was))) == 1

    # -- approvals ------------------------------------------------------------------------

    def approval_insert(self, approval: Approval) -> None:
        idents = ("id", "job", "run_id", "tool", "ledger_key", "status")
        values = [Ident(v) if k in idents else v
                  for k, v in ((k, getattr(approval, k)) for k in APPROVAL_FIELDS)]
        with self._tx() as db:
            db.run(f"INSERT INTO approvals ({', '.join(APPROVAL_FIELDS)}) VALUES "
                   f"({', '.join('?' for _ in APPROVAL_FIELDS)})", values)

    def approvals_matching(self, prefix: str) -> list[Approval]:
        """The approval with this id, else those whose id starts with it (at most 2)."""
        with self._read() as db:
            rows = db.all("SELECT * FROM approvals WHERE id = ?", (prefix,))
            if not rows:
                rows = db.all("SELECT * FROM approvals WHERE id LIKE ? ORDER BY id LIMIT 2",
                              (prefix.replace("%", "#").replace("_", "#") + "%",))
        return [_approval(r) for r in rows]

    def approval_pending_for(self, ledger_key: str) -> Approval | None:
        with self._read() as db:
            row = db.one("SELECT * FROM approvals WHERE ledger_key = ? AND status IN "
                         "('pending', 'approving') ORDER BY created_at DESC LIMIT 1",
                         (ledger_key,))
        return _approval(row) if row else None

    def approvals_list(self, everything: bool = False, limit: int = 200) -> list[Approval]:
        where = "" if everything else "WHERE status IN ('pending', 'approving')"
        with self._read() as db:
            rows = db.all(f"SELECT * FROM approvals {where} ORDER BY created_at DESC, "
                          f"{self.insertion} DESC "
                          "LIMIT ?", (limit,))
        return [_approval(r) for r in rows]

    def approvals_expire(self, now: str) -> list[Approval]:
        """Pending approvals past their TTL become refusals; returns those it expired."""
        with self._tx() as db:
            rows = db.all(
                "UPDATE approvals SET status = 'expired', decided_at = ?, decided_by = 'ttl', "
                "note = 'expired before anyone approved it: denied' "
                "WHERE status = 'pending' AND expires_at <= ? RETURNING *", (now, now))
        return [_approval(r) for r in rows]

    def approval_decide(self, approval_id: str, was: str, status: str, **changes: Any) -> bool:
        """Move an approval from `was` to `status` with `changes`; False if it was not in
        `was` any more (someone else decided first)."""
        unknown = set(changes) - set(APPROVAL_FIELDS)
        if unknown:
            raise ValueError(f"not an approval field: {', '.join(sorted(unknown))}")
        assignments = "".join(f", {k} = ?" for k in changes)
        with self._tx() as db:
            return db.run(f"UPDATE approvals SET status = ?{assignments} "
                          "WHERE id = ? AND status = ?",
                          (Ident(status), *changes.values(), Ident(approval_id),
                           Ident(was))) == 1
