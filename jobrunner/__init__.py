"""jobrunner: run LLM agent jobs on cron schedules, safely."""

from __future__ import annotations

from typing import Any

__all__ = ["ToolResult", "tool", "__version__"]
from jobrunner.version import __version__


def __getattr__(name: str) -> Any:
    # `from jobrunner import tool` in a tool file; imported on first use, so a command
    # that loads no tool file (a run skipped on a held lock) does not pay for it.
    if name in ("tool", "ToolResult"):
        from jobrunner.tools import api

        return getattr(api, name)
    raise AttributeError(f"module 'jobrunner' has no attribute {name!r}")
