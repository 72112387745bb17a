"""`jobrunner memory show/edit/diff/history/restore`, through the installed CLI."""

from __future__ import annotations

import sys
from pathlib import Path

EDITOR = '''
import os, sys
path = sys.argv[1]
with open(os.environ["EDIT_WITH"], "rb") as source:
    content = source.read()
with open(path, "wb") as target:
    target.write(content)
'''
ORIGINAL = "# Memory: ops\n\n## Current objective\n\nOriginal.\n\n## Open items\n\n- one\n"


def setup(project, tmp_path, budget: int = 500):
    project.job("ops", f"[memory]\nbudget_tokens = {budget}\n")
    path = project.root / "memory/ops/MEMORY.md"
    path.parent.mkdir(parents=True)
    path.write_text(ORIGINAL)
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    return path, f"{sys.executable} {editor}"


def test_show_counts_tokens_and_flags_an_over_budget_hand_edit_without_cutting_it(
        project, tmp_path):
    path, _ = setup(project, tmp_path, budget=60)
    shown = project.run("memory", "show", "ops")
    assert shown.code == 0, shown.stderr
    assert shown.stdout.startswith(ORIGINAL.rstrip("\n"))
    assert f"{len(ORIGINAL) // 4 + 1} tokens of a 60-token budget" in shown.stdout
    assert "OVER BUDGET" not in shown.stdout
    big = ORIGINAL + "\n## Notes\n\n" + "A long note a person wrote. " * 20 + "\n"
    path.write_text(big)
    shown = project.run("memory", "show", "ops")
    assert "OVER BUDGET by" in shown.stdout and "never cuts it" in shown.stdout
    data = project.run("memory", "show", "ops", "--json").json()
    assert data["over_budget"] is True and data["budget_tokens"] == 60
    assert data["text"] == big and path.read_text() == big  # flagged, never cut
    assert data["sections"]["current_objective"] == "Original."


def test_edit_validates_then_writes_like_any_version_and_restore_brings_it_back(
        project, tmp_path):
    path, editor = setup(project, tmp_path)
    edited = tmp_path / "edited.md"
    edited.write_text(ORIGINAL.replace("Original.", "Edited by hand."))
    done = project.run("memory", "edit", "ops", env={"EDITOR": editor, "VISUAL": "",
                                                     "EDIT_WITH": str(edited)})
    assert done.code == 0, done.stderr
    assert "saved" in done.stdout
    assert path.read_text() == edited.read_text()
    [version] = project.run("memory", "history", "ops", "--json").json()
    assert version["tag"] == "edit" and version["kind"] == "previous"

    diff = project.run("memory", "diff", "ops")
    assert diff.code == 0, diff.stderr
    assert "-Original.\n+Edited by hand.\n" in diff.stdout
    assert f"--- history/{version['version']}.md" in diff.stdout

    listed = project.run("memory", "history", "ops")
    assert version["version"] in listed.stdout and "replaced" in listed.stdout

    back = project.run("memory", "restore", "ops", version["version"][:20])
    assert back.code == 0, back.stderr
    assert path.read_text() == ORIGINAL
    versions = project.run("memory", "history", "ops", "--json").json()
    assert [v["tag"] for v in versions] == ["restore", "edit"]  # newest first, nothing lost
    assert versions[0]["bytes"] == len(edited.read_bytes())


def test_an_edit_that_is_not_text_is_refused_and_kept(project, tmp_path):
    path, editor = setup(project, tmp_path)
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"# Memory\n\nline two\n\xff\xfe broken\n")
    refused = project.run("memory", "edit", "ops", env={"EDITOR": editor, "VISUAL": "",
                                                        "EDIT_WITH": str(bad)})
    assert refused.code == 2
    assert ":4: memory: not UTF-8 text" in refused.stderr
    assert "your edit is kept in" in refused.stderr
    kept = refused.stderr.split("your edit is kept in ")[1].strip()
    assert Path(kept).read_bytes() == bad.read_bytes()
    assert path.read_text() == ORIGINAL
    assert project.run("memory", "history", "ops", "--json").json() == []


def test_edit_is_refused_at_once_while_a_run_holds_the_agent(project, tmp_path):
    from jobrunner.locks.file import RunLock

    path, editor = setup(project, tmp_path)
    lock = RunLock(project.state / "locks", "agent-ops")
    lock.try_acquire()
    lock.mark_held("20261121T080000-abcdef", "ops")
    try:
        busy = project.run("memory", "edit", "ops", env={"EDITOR": editor, "VISUAL": "",
                                                         "EDIT_WITH": str(path)})
    finally:
        lock.release()
    assert busy.code == 75
    assert "in use by run 20261121T080000-abcdef of job ops" in busy.stderr
    assert project.run("memory", "show", "nobody").code == 2
