"""MEMORY.md as a file format: a small, hand-editable memory carried between sessions.

Parsing is tolerant (any heading level or case, CRLF, BOM, text before the first
heading, extra sections) and lossless: a file nobody changed renders back byte for byte,
and a rewrite touches only the bodies of the known sections whose content changed.
Anything else in the file is only ever appended to, never cut or reformatted.
Writing, history and conflicts live in `memory_store`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from jobrunner.errors import JobrunnerError
from jobrunner.markers import neutralise_markers
from jobrunner.memory.paths import (  # noqa: F401 - re-exported; checked before any model
    refuse_symlinks,
    symlink_problem,
)
from jobrunner.tokens import estimate_tokens

SECTIONS: dict[str, str] = {
    "current_objective": "Current objective",
    "key_decisions": "Key decisions made",
    "what_not_to_do": "What NOT to do (failure log)",
    "open_items": "Open items",
}
_MATCH = {
    "current objective": "current_objective",
    "objective": "current_objective",
    "key decisions made": "key_decisions",
    "key decisions": "key_decisions",
    "what not to do failure log": "what_not_to_do",
    "what not to do": "what_not_to_do",
    "failure log": "what_not_to_do",
    "open items": "open_items",
}
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")
_BULLET = re.compile(r"^([-*+]|\d+[.)])\s+")
# A failure-log line written by jobrunner: "- 2026-11-21 run RUN_ID ..." (any bullet).
_JOBRUNNER_LINE = re.compile(r"^\s*([-*+]|\d+[.)])\s+\d{4}-\d{2}-\d{2} run \S+ ")
FAILURE_LINE_MAX = 300


class MemoryFileError(JobrunnerError):
    """MEMORY.md cannot be read as text: the run stops before any model call."""


class MemoryUpdate(BaseModel):
    """Arguments of the built-in `update_memory` tool: the four sections as fields."""

    model_config = ConfigDict(extra="forbid")
    current_objective: str = Field(description="One or two sentences: what this agent is for now.")
    key_decisions: list[str] = Field(
        default_factory=list, description="Decisions made that later sessions must keep."
    )
    what_not_to_do: list[str] = Field(
        default_factory=list, description="Failures and mistakes not to repeat."
    )
    open_items: list[str] = Field(
        default_factory=list, description="Things left to do or to check next time."
    )


def _normalise(title: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", title.lower()).split())


@dataclass
class Block:
    """A heading and the text under it, kept exactly as written."""

    heading: str  # the heading line with its newline, "" for text before the first heading
    body: str
    key: str | None = None  # a known section's field name

    @property
    def title(self) -> str:
        match = _HEADING.match(self.heading.rstrip("\r\n"))
        return match.group(2) if match else ""

    @property
    def level(self) -> int:
        match = _HEADING.match(self.heading.rstrip("\r\n"))
        return len(match.group(1)) if match else 0


@dataclass
class Memory:
    """A parsed MEMORY.md."""

    blocks: list[Block] = field(default_factory=list)
    bom: bool = False
    newline: str = "\n"

    def render(self) -> str:
        text = "".join(b.heading + b.body for b in self.blocks)
        return ("\ufeff" if self.bom else "") + text

    def section(self, key: str) -> Block | None:
        return next((b for b in self.blocks if b.key == key), None)

    def section_text(self, key: str) -> str:
        block = self.section(key)
        return block.body.strip() if block else ""

    def items(self, key: str) -> list[str]:
        """A section's bullet items (or its non-empty lines)."""
        out = []
        for line in self.section_text(key).splitlines():
            line = line.strip()
            if line:
                out.append(_BULLET.sub("", line))
        return out

    def tokens(self) -> int:
        return estimate_tokens(self.render())

    def copy(self) -> Memory:
        return Memory([Block(b.heading, b.body, b.key) for b in self.blocks], self.bom,
                      self.newline)


def parse(text: str) -> Memory:
    """Split text into blocks at headings (outside fenced code), marking known sections."""
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    newline = "\r\n" if "\r\n" in text else "\n"
    memory = Memory(bom=bom, newline=newline)
    lines = text.splitlines(keepends=True)
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith(("```", "~~~"))]
    if len(fences) % 2:
        fences.pop()  # an unclosed fence does not hide the rest of the file
    fence_lines = set(fences)
    fenced = False
    # Bodies are collected as lists and joined once: `body += line` is quadratic on a
    # large hand-edited file (seconds before the first model call).
    heading, body, key = "", [], None
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if index in fence_lines:
            fenced = not fenced
        match = None if fenced or not line.startswith("#") else \
            _HEADING.match(line.rstrip("\r\n"))
        if match:
            memory.blocks.append(Block(heading, "".join(body), key))
            key = _MATCH.get(_normalise(match.group(2)))
            if key in seen:
                key = None  # a repeated heading is kept as an extra section
            if key:
                seen.add(key)
            heading, body = line, []
        else:
            body.append(line)
    memory.blocks.append(Block(heading, "".join(body), key))
    if memory.blocks and memory.blocks[0].heading == "" and memory.blocks[0].body == "":
        memory.blocks.pop(0)
    return memory


def decode(raw: bytes, where: Path | str) -> Memory:
    """Parse raw file bytes; raise MemoryFileError (with the line) if they are not text."""
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise MemoryFileError(f"{where}:{line}: memory: not a text file (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MemoryFileError(
            f"{where}:{line}: memory: not UTF-8 text (byte {exc.start}); fix it or restore a "
            "version listed by `jobrunner memory history`"
        ) from exc
    return parse(text)


def load(path: Path) -> tuple[Memory, bytes]:
    """Read and parse; returns the parsed memory and the raw bytes (to detect edits).
    A missing file is a new agent's template; a file that is not text, or a symlinked
    memory, is an error (the symlink is checked again here, and the file is opened
    without following one, in case it was swapped after the run's first check)."""
    problem = symlink_problem(path.parent.parent, path.parent.name)
    if problem:
        raise MemoryFileError(problem)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return parse(template(path.parent.name)), b""
    except OSError as exc:
        raise MemoryFileError(f"{path}: cannot read memory: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read()
    return decode(raw, path), raw


def _section_body(value: str | list[str], newline: str) -> str:
    if isinstance(value, str):
        line = " ".join(value.split())
        if line.startswith(("#", "```", "~~~")):
            line = "\\" + line  # the agent's text never becomes a heading or a fence
        lines = [line] if line else []
    else:
        lines = [f"- {' '.join(item.split())}" for item in value if item.strip()]
    if not lines:
        return newline
    return newline + "".join(line + newline for line in lines) + newline


def _same(memory: Memory, key: str, value: str | list[str]) -> bool:
    """Whether `value` says what the section already says (so its bytes can stay)."""
    if memory.section(key) is None:
        return False
    if isinstance(value, str):
        return " ".join(value.split()) == " ".join(memory.section_text(key).split())
    wanted = [" ".join(item.split()) for item in value if item.strip()]
    return wanted == [" ".join(item.split()) for item in memory.items(key)]


def _with_bodies(memory: Memory, bodies: dict[str, str]) -> Memory:
    """A copy with the given known sections' bodies replaced (missing ones appended).
    Text outside those bodies is only ever appended to (a line break), never changed."""
    nl = memory.newline
    out = memory.copy()
    level = next((b.level for b in out.blocks if b.key), 2)
    for key, body in bodies.items():
        block = out.section(key)
        if block is not None:
            block.body = body
            continue
        if out.blocks:
            last = out.blocks[-1]
            if not (last.heading + last.body).endswith(("\n", "\r")):
                last.body += nl
            whole = last.heading + last.body
            if whole.strip() and not whole.endswith(nl + nl):
                last.body += nl  # a blank line before the new heading
        out.blocks.append(Block(heading=f"{'#' * level} {SECTIONS[key]}{nl}", body=body, key=key))
    if out.blocks and out.blocks[-1].key in bodies:
        # Our own section ends the file: no trailing blank line.
        last = out.blocks[-1]
        last.body = last.body.rstrip("\r\n")
        last.body = last.body + nl if last.body else ""
    return out


def apply_update(memory: Memory, update: MemoryUpdate) -> Memory:
    """A copy of `memory` with the four sections rewritten; sections whose content did not
    change keep their bytes, and everything else stays in place, verbatim."""
    values = update.model_dump()
    bodies = {
        key: _section_body(values[key], memory.newline)
        for key in SECTIONS
        if not _same(memory, key, values[key])
    }
    return _with_bodies(memory, bodies) if bodies else memory.copy()


def fixed_tokens(memory: Memory) -> int:
    """Tokens of what `update_memory` cannot change: text before the first heading, the
    headings, and a person's extra sections (kept verbatim)."""
    return apply_update(memory, MemoryUpdate(current_objective="")).tokens()


def effective_budget(memory: Memory, budget: int) -> int:
    """The size the file may reach: the budget, unless the parts the agent cannot change
    already fill it; then those parts plus a quarter of the budget for the agent's four
    sections. A person's long section must not leave the agent unable to save anything
    (it is flagged by `memory show` for the person to trim)."""
    return max(budget, fixed_tokens(memory) + budget // 4)


def failure_line(day: str, run_id: str, what: str, step: int | None, detail: str,
                 not_done: list[str]) -> str:
    """jobrunner's own failure-log entry: dated, what failed, at which step, what was not
    done. One line, bounded. The detail often quotes a tool's error, which is external
    data: its markers are made inert, as the memory sits outside any fence."""
    at = f" at step {step}" if step else ""
    line = f"{day} run {run_id} {what}{at}: {neutralise_markers(' '.join(detail.split()))}"
    if not_done:
        line += f"; not done: {', '.join(not_done)}"
    if len(line) > FAILURE_LINE_MAX:
        line = line[: FAILURE_LINE_MAX - 3] + "..."
    return line


def _append_item(body: str, item: str, nl: str) -> str:
    core = body.rstrip("\r\n")
    return (core + nl if core else nl) + f"- {item}{nl}{nl}"


def with_failure_line(memory: Memory, line: str, budget_tokens: int) -> Memory:
    """Append a line to the failure log, then drop the oldest lines jobrunner wrote (never
    anything a person or the agent wrote otherwise) while the memory is over budget."""
    block = memory.section("what_not_to_do")
    body = _append_item(block.body if block else "", line, memory.newline)
    updated = _with_bodies(memory, {"what_not_to_do": body})
    limit = effective_budget(memory, budget_tokens)
    while updated.tokens() > limit:
        lines = body.splitlines(keepends=True)
        ours = [i for i, text in enumerate(lines) if _JOBRUNNER_LINE.match(text)]
        if len(ours) < 2:  # only the new line is left: keep it
            break
        del lines[ours[0]]
        body = "".join(lines)
        updated = _with_bodies(memory, {"what_not_to_do": body})
    return updated


def keep_failure_lines(before: Memory, after: Memory, budget_tokens: int) -> Memory:
    """`after` with jobrunner's failure-log lines from `before` that a rewrite dropped put
    back: the agent may reword its memory, not forget what failed (budget permitting)."""
    kept = set(after.items("what_not_to_do"))
    for item in before.items("what_not_to_do"):
        if item not in kept and _JOBRUNNER_LINE.match(f"- {item}"):
            after = with_failure_line(after, item, budget_tokens)
    return after


def template(agent: str) -> str:
    """A new agent's memory."""
    return (
        f"# Memory: {agent}\n\n"
        "## Current objective\n\n(not set yet)\n\n"
        "## Key decisions made\n\n"
        "## What NOT to do (failure log)\n\n"
        "## Open items\n"
    )


def memory_path(memory_dir: Path, agent: str) -> Path:
    return memory_dir / agent / "MEMORY.md"
