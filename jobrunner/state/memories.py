"""Agents' memories as numbered versions, for hosts that share a state: the newest is the
memory, and a new one is written only on top of the version its writer read."""

from __future__ import annotations

from jobrunner.clock import iso, utcnow
from jobrunner.state.base import Backend, Ident


class MemoriesMixin(Backend):
    """memory_versions: (agent, version) -> content, written by compare-and-swap."""

    def memory_latest(self, agent: str) -> tuple[int, str] | None:
        """The agent's newest version and its text, or None before the first."""
        with self._read() as db:
            row = db.one("SELECT version, content FROM memory_versions WHERE agent = ? "
                         "ORDER BY version DESC LIMIT 1", (agent,))
        return (int(row["version"]), row["content"]) if row else None

    def memory_put(self, agent: str, expected: int, content: str, source: str) -> bool:
        """Write version `expected + 1`; False when another writer already did (its
        version stays: the caller keeps this one as a proposal)."""
        with self._tx() as db:
            return db.one(
                "INSERT INTO memory_versions (agent, version, content, source, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent, version) DO NOTHING "
                "RETURNING version",
                (Ident(agent), expected + 1, content, Ident(source), iso(utcnow()))) is not None
