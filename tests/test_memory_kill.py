"""Killed at any instant, MEMORY.md is the old version or the new one, never a mix."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from jobrunner.memory.format import parse
from jobrunner.memory.store import save
from jobrunner.redact import Redactor


def version(i: int) -> bytes:
    items = "".join(f"- item {i}.{j} " + "x" * 300 + "\n" for j in range(300))
    return (f"# Memory: k\n\n## Current objective\n\nversion {i}\n\n## Open items\n\n{items}"
            ).encode()


def which_version(content: bytes) -> int:
    """The version number `content` is exactly, or fail."""
    memory = parse(content.decode("utf-8"))
    number = int(memory.section_text("current_objective").removeprefix("version "))
    assert content == version(number), "a mix of two versions"
    return number


def start_writer(path: Path, first: int) -> int:
    """A child process looping real writes through jobrunner's own `save` until killed
    (forked, so each of the many kills does not pay for interpreter start-up). It says
    when its first write is done: from then on, any instant is one in the write loop,
    however slow the disk's syncs are while other tests run."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)
            previous, i = path.read_bytes(), first
            while True:
                content = version(i)
                save(path, content, previous, f"run-{i}", Redactor([]))
                if i == first:
                    os.write(ready_w, b"r")
                previous, i = content, i + 1
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"r"
    os.close(ready_r)
    return pid


def test_kill_9_during_memory_writes_leaves_old_or_new(tmp_path: Path):
    path = tmp_path / "memory" / "k" / "MEMORY.md"
    path.parent.mkdir(parents=True)
    path.write_bytes(version(0))
    rng = random.Random(5)
    seen: set[int] = set()
    kills = 0
    started = time.monotonic()
    while kills < 50 and time.monotonic() - started < 30:  # bounded on a slow machine
        pid = start_writer(path, kills * 10_000 + 1)
        time.sleep(rng.uniform(0, 0.05))  # a random instant in the write loop
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        kills += 1
        seen.add(which_version(path.read_bytes()))
        for old in (path.parent / "history").glob("*.md"):
            which_version(old.read_bytes())
    assert kills >= 20
    assert len(seen) >= 10  # the kills landed among real writes, not before them
    assert len(list((path.parent / "history").glob("*.md"))) <= 30  # bounded
