"""The state: what jobrunner remembers outside the project — runs and their slots, the
ledger of side effects, approvals, pauses, alerts and their outbox, day budgets, lock
holders and traces — behind one interface, with one backend per engine.

`open_state(project)` picks the backend the project names: PostgreSQL when
`JOBRUNNER_STATE_URL` or `state_url` is set (several hosts share it), else the embedded
SQLite state in the project's state folder. Nothing outside this package holds SQL.
"""

from __future__ import annotations

import os
from typing import Any

from jobrunner.state.interface import State

__all__ = ["State", "open_state", "state_url"]

URL_VARIABLE = "JOBRUNNER_STATE_URL"


def state_url(project: Any) -> tuple[str, str]:
    """The shared state's URL and where it was set ("" when the state is embedded)."""
    if os.environ.get(URL_VARIABLE):
        return os.environ[URL_VARIABLE], URL_VARIABLE
    return project.setting("state_url"), f"{project.settings_path}: state_url"


def open_state(project: Any) -> State:
    """The project's state, migrated, with every write redacted by the project's secrets."""
    url, where = state_url(project)
    if url:
        from jobrunner.state.postgres import PostgresState, project_identity

        return PostgresState(url, project.redactor(), project_identity(url),
                             password_env=project.setting("state_password_env") or None,
                             where=where)
    from jobrunner.state.sqlite import SQLiteState

    return SQLiteState(project.state_dir, project.redactor())
