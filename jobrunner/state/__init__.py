"""The state: what jobrunner remembers outside the project — runs and their slots, the
ledger of side effects, approvals, pauses, alerts and their outbox, day budgets, lock
holders and traces — behind one interface, with one backend per engine.

`open_state(project)` picks the backend the project names (the embedded SQLite one by
default). Nothing outside this package holds SQL.
"""

from __future__ import annotations

from typing import Any

from jobrunner.state.interface import State

__all__ = ["State", "open_state"]


def open_state(project: Any) -> State:
    """The project's state, migrated, with every write redacted by the project's secrets."""
    from jobrunner.state.sqlite import SQLiteState

    return SQLiteState(project.state_dir, project.redactor())
