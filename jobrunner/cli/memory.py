"""Commands about agents' memory: show, edit, diff, history, restore."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from jobrunner.cli.app import app, print_json, project, table
from jobrunner.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from jobrunner.config.project import Project

memory_app = typer.Typer(
    help="Read and hand-edit agents' memory (MEMORY.md) safely.", no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(memory_app, name="memory")


def _agent(proj: Project, agent: str) -> tuple[Path, int]:
    """The agent's MEMORY.md and its budget: the smallest `memory.budget_tokens` of the
    jobs that name it (so the file fits every one of them)."""
    from jobrunner.config.jobfile import MemoryPolicy
    from jobrunner.config.jobs import load_all
    from jobrunner.formats.names import JOB_NAME
    from jobrunner.memory.format import memory_path, refuse_symlinks

    if not JOB_NAME.match(agent):
        raise ConfigError(f"{agent!r}: agent names match [a-z0-9][a-z0-9_-]{{0,63}}")
    refuse_symlinks(proj.memory_dir, agent)  # never show, edit or restore through a link
    jobs, _problems = load_all(proj)
    budgets = [j.spec.memory.budget_tokens for j in jobs if j.agent == agent]
    path = memory_path(proj.memory_dir, agent)
    if not budgets and not path.parent.is_dir():
        known = sorted({j.agent for j in jobs} | {
            p.name for p in proj.memory_dir.glob("*") if p.is_dir()})
        raise NotFoundError(f"{agent}: no such agent (agents: {', '.join(known) or 'none'})")
    return path, min(budgets) if budgets else MemoryPolicy().budget_tokens


def _budget_line(path: Path, memory: Any, budget: int) -> str:
    from jobrunner.memory.format import fixed_tokens

    tokens = memory.tokens()
    line = f"{path}: {tokens} tokens of a {budget}-token budget (one token per 4 characters)"
    if tokens <= budget:
        return line
    line += (f"\nOVER BUDGET by {tokens - budget} tokens: kept as written (jobrunner never "
             "cuts it); ")
    fixed = fixed_tokens(memory)
    if fixed + budget // 4 > budget:
        return line + (
            f"it is mostly outside the agent's four sections ({fixed} tokens it cannot "
            f"rewrite): trim them by hand; until then the agent's sections get "
            f"{budget // 4} tokens")
    return line + "the agent must compact it at its next memory update"


def _hold(proj: Project, agent: str, what: str):
    from jobrunner.locks.file import RunLock
    from jobrunner.memory.store import MemoryBusy, busy_message, hold_agent

    lock = hold_agent(proj, agent, what, "-", wait=0)
    if not isinstance(lock, RunLock):
        raise MemoryBusy(busy_message(agent, lock) + "; try again when it ends")
    return lock


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


@memory_app.command("show")
def show(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent (a job's `agent`, else its name)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Print an agent's memory with its token count and budget (an over-budget hand edit
    is flagged, never cut)."""
    from jobrunner.memory.format import SECTIONS, decode, fixed_tokens

    path, budget = _agent(project(ctx), agent)
    raw = _read(path)
    memory = decode(raw, path)
    tokens = memory.tokens()
    if as_json:
        print_json({
            "agent": agent, "path": str(path), "exists": path.exists(), "tokens": tokens,
            "budget_tokens": budget, "over_budget": tokens > budget,
            "fixed_tokens": fixed_tokens(memory), "text": memory.render(),
            "sections": {key: memory.section_text(key) for key in SECTIONS},
        })
        return
    text = memory.render().removeprefix("\ufeff")
    if text:
        typer.echo(text.rstrip("\r\n").replace("\r\n", "\n"))
        typer.echo("--")
    else:
        typer.echo(f"(no memory yet: {path} is empty or missing)")
    typer.echo(_budget_line(path, memory, budget))


def _sync(proj: Project, agent: str, path: Path, step: str) -> None:
    """On a state several hosts share, a hand edit starts from the newest version and
    becomes the next one (see memory.shared); elsewhere MEMORY.md alone is the memory."""
    store = proj.store()
    if not store.shares_memory:
        return
    from jobrunner.config.jobs import agent_history
    from jobrunner.hosts import this_host
    from jobrunner.memory import shared

    keep = functools.partial(agent_history, proj, agent)
    note = shared.pull(proj, store, agent, path, keep) if step == "pull" else \
        shared.push(proj, store, agent, path, f"edit@{this_host()}", keep)
    if note:
        typer.echo(note, err=True)


@memory_app.command("edit")
def edit(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent whose memory to edit."),
) -> None:
    """Open $VISUAL or $EDITOR on a copy, under the agent's lock (runs of the agent wait);
    on save, check it is text and write it like any other version."""
    from jobrunner.config.jobs import agent_history
    from jobrunner.memory.format import MemoryFileError, decode, template
    from jobrunner.memory.store import save

    proj = project(ctx)
    path, budget = _agent(proj, agent)
    lock = _hold(proj, agent, "edit")
    try:
        _sync(proj, agent, path, "pull")
        current = _read(path)
        import shlex  # here, not at the top: `jobrunner --help` builds this module too
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=f"jobrunner-memory-{agent}-"))
        copy = folder / "MEMORY.md"
        copy.write_bytes(current or template(agent).encode("utf-8"))
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            code = subprocess.run([*shlex.split(editor), str(copy)]).returncode
        except FileNotFoundError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ConfigError(f"editor {editor!r} not found: set $EDITOR") from exc
        if code != 0:
            raise ConfigError(f"the editor exited with status {code}: nothing was written "
                              f"(your copy is {copy})")
        edited = copy.read_bytes()
        try:
            memory = decode(edited, copy)
        except MemoryFileError as exc:
            raise ConfigError(f"{exc}\nnothing was written; your edit is kept in {copy}") from exc
        if edited == current:
            typer.echo(f"no changes to {path}")
        else:
            save(path, edited, current, "edit", proj.redactor(), keep=agent_history(proj, agent))
            _sync(proj, agent, path, "push")
            typer.echo(f"saved {path}" + ("; the previous version is in history/"
                                          if current else ""))
        shutil.rmtree(folder, ignore_errors=True)
        typer.echo(_budget_line(path, memory, budget))
    finally:
        lock.release()


@memory_app.command("history")
def history(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Earlier versions of an agent's memory, newest first."""
    from jobrunner.memory.store import list_history
    from jobrunner.tokens import estimate_tokens

    path, _budget = _agent(project(ctx), agent)
    versions = list(reversed(list_history(path)))
    if as_json:
        print_json([v.as_json() for v in versions])
        return
    if not versions:
        typer.echo(f"no earlier versions of {path}")
        return
    rows = []
    for v in versions:
        text = v.path.read_bytes().decode("utf-8", errors="replace")
        kind = "proposal (not written)" if v.kind == "proposal" else "replaced"
        rows.append([v.name, v.at, v.tag, kind, str(estimate_tokens(text))])
    typer.echo(table(rows, ["VERSION", "AT", "BY", "KIND", "TOKENS"]))


@memory_app.command("diff")
def diff(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent."),
    version: str | None = typer.Argument(None, help="A version (default: the newest)."),
) -> None:
    """What changed between a version in history/ and the current MEMORY.md."""
    import difflib

    from jobrunner.memory.store import find_version

    path, _budget = _agent(project(ctx), agent)
    found = find_version(path, version)
    old = found.path.read_bytes().decode("utf-8", errors="replace")
    new = _read(path).decode("utf-8", errors="replace")
    lines = list(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"history/{found.name}.md", tofile="MEMORY.md",
    ))
    if not lines:
        typer.echo(f"no differences between history/{found.name}.md and MEMORY.md")
        return
    typer.echo("".join(line if line.endswith("\n") else line + "\n" for line in lines), nl=False)


@memory_app.command("restore")
def restore(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent."),
    version: str = typer.Argument(..., help="The version to bring back (see `history`)."),
) -> None:
    """Make a version from history/ the current memory (the replaced one is kept)."""
    from jobrunner.config.jobs import agent_history
    from jobrunner.memory.format import MemoryFileError, decode
    from jobrunner.memory.store import find_version, save

    proj = project(ctx)
    path, budget = _agent(proj, agent)
    lock = _hold(proj, agent, "restore")
    try:
        _sync(proj, agent, path, "pull")
        found = find_version(path, version)
        content = found.path.read_bytes()
        try:
            memory = decode(content, found.path)
        except MemoryFileError as exc:
            raise ConfigError(f"{exc}\nnothing was restored") from exc
        current = _read(path)
        if not save(path, content, current, "restore", proj.redactor(),
                    keep=agent_history(proj, agent)):
            typer.echo(f"{path} already is version {found.name}")
            return
        _sync(proj, agent, path, "push")
        typer.echo(f"restored {found.name} as {path}; the replaced version is in history/")
        typer.echo(_budget_line(path, memory, budget))
    finally:
        lock.release()
