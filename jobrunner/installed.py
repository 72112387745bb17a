"""What is installed: a stamp of jobrunner's own code and of the libraries beside it.

A run remembered by its fingerprint (`config.checked`) and the daemon's fork server
(`scheduling.forkserver`) both hold something computed by the code that was installed
when they started; when this stamp changes, they start again from the new code."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def files_under(folder: Path | str, suffix: str = "") -> list[tuple[str, os.stat_result]]:
    """Every file under `folder` whose name ends with `suffix` (sorted; bytecode caches
    and symlinked folders left out), with its stat."""
    found: list[tuple[str, os.stat_result]] = []
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # absent or unreadable: nothing under it counts
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    stack.append(entry.path)
            elif entry.name.endswith(suffix):
                try:
                    found.append((entry.path, entry.stat()))
                except OSError:
                    continue  # gone since the folder was read
    return sorted(found, key=lambda item: item[0])


def code_stamp() -> str:
    """jobrunner's version and the size and time of each of its modules (an upgrade, or
    an edit of an editable install), the Python version, and the time of each library
    folder on sys.path (a library installed, upgraded or removed there changes it; the
    script's or working folder, also on sys.path, is not one)."""
    import jobrunner

    digest = hashlib.sha256(f"{jobrunner.__version__} {sys.version}\n".encode())
    for path, info in files_under(Path(jobrunner.__file__).parent, ".py"):
        digest.update(f"{path} {info.st_size} {info.st_mtime_ns}\n".encode())
    for entry in sys.path:
        if "-packages" not in Path(entry).name:
            continue
        try:
            digest.update(f"{entry} {os.stat(entry or '.').st_mtime_ns}\n".encode())
        except OSError:
            continue  # a sys.path entry that does not exist holds nothing
    return digest.hexdigest()
