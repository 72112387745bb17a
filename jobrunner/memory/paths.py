"""Where an agent's memory may be read and written: never through a symlink.

Kept apart from `memory.format` (whose models need pydantic): a run checks this before
anything else, including on a held lock, where no model is built."""

from __future__ import annotations

import os
from pathlib import Path

from jobrunner.errors import ConfigError


def symlink_problem(memory_dir: Path, agent: str) -> str | None:
    """Why the agent's memory may not be used, if memory/, memory/AGENT, its MEMORY.md or
    its history/ is a symlink: what MEMORY.md holds goes to the model, and what is
    written there lands wherever the link points (another file, the project's .env)."""
    folder = memory_dir / agent
    for path in (memory_dir, folder, folder / "MEMORY.md", folder / "history"):
        if path.is_symlink():
            return (f"{path}: memory: is a symlink (to {os.readlink(path)}); jobrunner reads "
                    "and writes only a real file and folder here: replace the link with a "
                    "copy of what it should hold")
    return None


def refuse_symlinks(memory_dir: Path, agent: str) -> None:
    """Raise a located ConfigError (exit 2, nothing run or written) for a symlinked
    memory (see `symlink_problem`)."""
    problem = symlink_problem(memory_dir, agent)
    if problem:
        raise ConfigError(problem)
