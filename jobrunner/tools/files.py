"""Confined file access for `read_file` and `write_file`.

A path is relative to the project and must lie inside one of the job's allowed folders.
`..`, absolute paths and symlinks cannot escape: the path is checked by name, then walked
one component at a time from the allowed folder with `O_NOFOLLOW` on every step (openat
style, so a symlink swapped in between a check and the open cannot redirect it either).
Symlinks inside the folders are therefore not followed at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path, PurePosixPath

from jobrunner.tools.api import ToolResult

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Refused(Exception):
    """The path is not one this job may use."""


def _split(folders: list[str], path: str) -> tuple[str, list[str]]:
    """(allowed folder, components below it) or Refused."""
    if not path or "\x00" in path or "\\" in path:
        raise Refused(f"{path!r} is not a usable path")
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        raise Refused(f"{path!r} is absolute; give a path relative to the project")
    parts = [p for p in PurePosixPath(path).parts if p != "."]
    if ".." in parts:
        raise Refused(f"{path!r} contains '..'")
    for folder in folders:
        base = [p for p in PurePosixPath(folder).parts if p != "."]
        if parts[:len(base)] == base and len(parts) > len(base):
            return folder, parts[len(base):]
    allowed = ", ".join(folders) or "none"
    raise Refused(f"{path!r} is outside the folders this job allows ({allowed})")


def _open_dir(root: Path, folder: str, inner: list[str], create: bool) -> int:
    """A descriptor of the directory holding the last component, walked without
    following any symlink below the allowed folder."""
    if create:  # the folder the job allows writing to is the operator's: make it
        (root / folder).mkdir(parents=True, exist_ok=True)
    fd = os.open(root / folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in inner[:-1]:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise Refused(f"{part!r}: not a plain folder ({exc.strerror})") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text(where: tuple[Path, list[str]], path: str, max_bytes: int) -> ToolResult:
    """The text of a file inside the allowed folders (cut at `max_bytes`)."""
    root, folders = where
    try:
        folder, inner = _split(folders, path)
        dir_fd = _open_dir(root, folder, inner, create=False)
        try:
            try:
                fd = os.open(inner[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                             dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # the last component is a symlink
                    raise Refused(f"{path!r} is a symlink; symlinks are not followed") from exc
                raise
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise Refused(f"{path!r} is not a regular file")
            raw = handle.read(max_bytes + 1)
    except Refused as exc:
        return ToolResult(ok=False, error=f"refused: {exc}")
    except OSError as exc:
        return ToolResult(ok=False, error=f"cannot read {path!r}: {exc.strerror or exc}")
    try:
        text = raw[:max_bytes].decode("utf-8")
    except UnicodeDecodeError:
        return ToolResult(ok=False, error=f"{path!r} is not UTF-8 text")
    data = {"path": path, "bytes": len(raw[:max_bytes]), "content": text}
    if len(raw) > max_bytes:
        data["note"] = f"the file is larger; only the first {max_bytes} bytes are shown"
    return ToolResult(data=data)


def write_text(where: tuple[Path, list[str]], path: str, content: str) -> ToolResult:
    """Create or replace a file inside the allowed folders, atomically (temp file,
    fsync, rename in the same folder): a crash leaves the old file or the new one."""
    root, folders = where
    data = content.encode("utf-8")
    try:
        folder, inner = _split(folders, path)
        dir_fd = _open_dir(root, folder, inner, create=True)
        try:
            name = inner[-1]
            try:
                if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                    raise Refused(f"{path!r} is a symlink; symlinks are not followed")
            except FileNotFoundError:
                pass
            temp = f".{name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                         dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                # rename replaces a name, never writes through a link placed there.
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except Refused as exc:
        return ToolResult(ok=False, error=f"refused: {exc}")
    except OSError as exc:
        return ToolResult(ok=False, error=f"cannot write {path!r}: {exc.strerror or exc}")
    return ToolResult(data={"path": path, "bytes": len(data)})
