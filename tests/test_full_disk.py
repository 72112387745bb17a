"""A full state disk, for real: a small tmpfs as the state dir, filled to a sweep of levels
from full to nearly full, the example job run at each. Every run ends in a reported, honest
state: no traceback, a documented exit code, and once there is room again, no run that had
completed is ever recorded crashed or noted as a crash in the memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

EXIT_CODES = {0, 1, 2, 3, 4, 75}
LEVELS = [kib * 1024 for kib in range(0, 96, 8)]  # bytes left free: 0 to 88 KiB, 12 levels


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of the test's own (tests run as root here and in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        # Memory folders bound onto the disk (see `memory_on`) first, then the disk.
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(tmp_path)) and target != str(disk):
                subprocess.run(["umount", target], check=True)
        subprocess.run(["umount", str(disk)], check=True)


def memory_on(disk: Path, root: Path) -> None:
    """The project's memory folder on `disk`, through a bind mount (jobrunner refuses a
    memory folder that is a symlink): its writes fail like the state's."""
    shutil.move(root / "memory", disk / "memory")
    (root / "memory").mkdir()
    subprocess.run(["mount", "--bind", str(disk / "memory"), str(root / "memory")],
                   check=True)


def fill(disk: Path, leave: int) -> Path:
    """A filler file taking all of `disk` but `leave` bytes."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def _vary_the_memory(root: Path, text: str) -> None:
    """Each session rewrites the memory with something new, so the memory is written."""
    path = root / "jobs/daily-email.replay.json"
    script = json.loads(path.read_text())
    for turn in script["turns"]:
        for block in turn["content"]:
            if block.get("name") == "update_memory":
                block["input"]["open_items"] = [text]
    path.write_text(json.dumps(script))


def test_a_full_state_disk_ends_every_run_in_an_honest_reported_state(example_project,
                                                                    tmpfs, tmp_path):
    project = example_project
    settings = project.root / "jobrunner.toml"
    text = settings.read_text().splitlines()
    settings.write_text("\n".join([f'state_dir = "{tmpfs / "state"}"', *text[1:]]) + "\n")
    project.state = tmpfs / "state"
    memory_on(tmpfs, project.root)  # the memory on the full disk too
    first = project.run("run", "daily-email")
    assert first.code == 0, first.stderr
    template = tmp_path / "template"  # state and memory after one completed run
    shutil.copytree(tmpfs, template, symlinks=True)

    seen = []
    for level in LEVELS:
        for item in [*tmpfs.iterdir(), *(tmpfs / "memory").iterdir()]:
            if item.name == "memory" and item.parent == tmpfs:
                continue  # the bind mount's source: emptied, never removed
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        shutil.copytree(template, tmpfs, dirs_exist_ok=True)
        _vary_the_memory(project.root, f"check the numbers again ({level} bytes free)")
        filler = fill(tmpfs, level)
        ran = project.run("run", "daily-email")
        filler.unlink()
        where = f"{level} bytes free: exit {ran.code}: {ran.stderr}"
        assert "Traceback" not in ran.stderr, where
        assert ran.code in EXIT_CODES, where
        assert ran.code == 0 or ran.stderr.strip(), where  # a failure is always reported

        after = project.run("run", "daily-email")
        assert after.code == 0 and "Traceback" not in after.stderr, (where, after.stderr)
        runs = project.runs("daily-email")[::-1]  # oldest first
        assert [r["status"] for r in runs[:1] + runs[-1:]] == ["completed"] * 2, where
        middle = runs[1:-1]
        statuses = [r["status"] for r in middle]
        assert "crashed" not in statuses and "running" not in statuses, (where, middle)
        if ran.code == 0:
            assert statuses == ["completed"], (where, middle)
        if not middle:
            assert "did not start" in ran.stderr, where
        assert "crashed" not in project.memory("daily-email"), where
        assert "run.crashed" not in [a["event"] for a in project.alerts()], where
        assert project.run("locks", "--json").json()[0]["state"] == "free", where
        seen.append("not started" if not middle else
                    "recorded later" if "recorded afterwards" in (middle[0]["report"] or "")
                    else statuses[0])
    # The sweep crossed every stage: runs that could not start, runs whose end the full
    # database refused (recorded by the next run), and runs the disk did not disturb.
    assert {"not started", "recorded later", "completed"} <= set(seen), seen


def test_a_memory_the_disk_refuses_is_a_note_in_the_report_not_a_failed_run(example_project,
                                                                          tmpfs):
    project = example_project
    memory_on(tmpfs, project.root)
    _vary_the_memory(project.root, "check the numbers again")
    before = project.memory("daily-email")
    fill(tmpfs, 0)
    ran = project.run("run", "daily-email")
    assert ran.code == 0, ran.stderr
    assert "memory not written" in ran.stderr and "Traceback" not in ran.stderr
    [record] = project.runs()
    assert record["status"] == "completed"
    assert "memory not written" in record["report"]
    assert project.memory("daily-email") == before
