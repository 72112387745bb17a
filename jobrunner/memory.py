"""MEMORY.md: a small, hand-editable memory carried between sessions.

Parsing is tolerant (any heading level or case, CRLF, BOM, text before the first
heading, extra sections) and lossless: a file nobody changed renders back byte for byte,
and a rewrite touches only the four known sections' bodies.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from jobrunner.errors import JobrunnerError

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
HISTORY_KEEP = 30


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


def estimate_tokens(text: str) -> int:
    """Token estimate used for the memory budget: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


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
                out.append(re.sub(r"^([-*+]|\d+[.)])\s+", "", line))
        return out

    def tokens(self) -> int:
        return estimate_tokens(self.render())


def parse(text: str) -> Memory:
    """Split text into blocks at headings (outside fenced code), marking known sections."""
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    newline = "\r\n" if "\r\n" in text else "\n"
    memory = Memory(bom=bom, newline=newline)
    current = Block(heading="", body="")
    fenced = False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        if stripped.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else _HEADING.match(stripped)
        if match:
            memory.blocks.append(current)
            key = _MATCH.get(_normalise(match.group(2)))
            if key and any(b.key == key for b in memory.blocks):
                key = None  # a repeated heading is kept as an extra section
            current = Block(heading=line, body="", key=key)
        else:
            current.body += line
    memory.blocks.append(current)
    if memory.blocks and memory.blocks[0].heading == "" and memory.blocks[0].body == "":
        memory.blocks.pop(0)
    return memory


def _section_body(value: str | list[str], newline: str) -> str:
    if isinstance(value, str):
        lines = [value.strip()] if value.strip() else []
    else:
        lines = [f"- {' '.join(item.split())}" for item in value if item.strip()]
    if not lines:
        return newline
    return newline + "".join(line + newline for line in lines) + newline


def apply_update(memory: Memory, update: MemoryUpdate) -> Memory:
    """A copy of `memory` with the four sections replaced; everything else kept in place."""
    nl = memory.newline
    blocks = [Block(b.heading, b.body, b.key) for b in memory.blocks]
    levels = [b.level for b in blocks if b.key]
    level = levels[0] if levels else 2
    values = update.model_dump()
    for key, title in SECTIONS.items():
        body = _section_body(values[key], nl)
        block = next((b for b in blocks if b.key == key), None)
        if block is None:
            if blocks and not blocks[-1].body.endswith(nl + nl) and blocks[-1].body:
                blocks[-1].body = blocks[-1].body.rstrip("\r\n") + nl + nl
            blocks.append(Block(heading=f"{'#' * level} {title}{nl}", body=body, key=key))
        else:
            block.body = body
    if blocks:
        blocks[-1].body = blocks[-1].body.rstrip("\r\n") + nl
    return Memory(blocks=blocks, bom=memory.bom, newline=nl)


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


def load(path: Path) -> tuple[Memory, bytes]:
    """Read and parse; returns the parsed memory and the raw bytes (to detect edits).
    A missing file is an empty memory; a file that is not text is an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return parse(""), b""
    except OSError as exc:
        raise MemoryFileError(f"{path}: cannot read memory: {exc.strerror}") from exc
    if b"\x00" in raw:
        raise MemoryFileError(f"{path}: memory is not a text file (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MemoryFileError(
            f"{path}: memory is not UTF-8 text (byte {exc.start}); fix or restore it with "
            "`jobrunner memory history`"
        ) from exc
    return parse(text), raw


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes) -> None:
    """temp file, fsync, rename, fsync the folder: the old file or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def history_dir(path: Path) -> Path:
    return path.parent / "history"


def save_history(path: Path, content: bytes, run_id: str, suffix: str = "") -> Path:
    """Keep `content` as a dated version in history/, dropping the oldest beyond the bound."""
    folder = history_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{stamp}-{run_id}{suffix}.md"
    write_atomic(target, content)
    versions = sorted(folder.glob("*.md"))
    for old in versions[:-HISTORY_KEEP]:
        old.unlink(missing_ok=True)
    return target


def save(path: Path, memory: Memory, previous: bytes, run_id: str) -> bool:
    """Write `memory` if it differs from `previous`, keeping `previous` in history/.
    Returns whether the file changed."""
    content = memory.render().encode("utf-8")
    if content == previous:
        return False
    if previous:
        save_history(path, previous, run_id)
    write_atomic(path, content)
    return True


_FAILURE_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}\b")


def with_failure_line(memory: Memory, line: str, budget_tokens: int) -> Memory:
    """Append a dated line to the failure log, dropping the oldest dated lines (only
    those jobrunner wrote) while the memory is over budget. Other text is never cut."""
    items = memory.items("what_not_to_do")
    items.append(line)
    updated = _replace_section(memory, "what_not_to_do", items)
    while updated.tokens() > budget_tokens:
        dated = [i for i, item in enumerate(items[:-1]) if _FAILURE_LINE.match(item)]
        if not dated:
            break
        items.pop(dated[0])
        updated = _replace_section(memory, "what_not_to_do", items)
    return updated


def _replace_section(memory: Memory, key: str, items: list[str]) -> Memory:
    nl = memory.newline
    blocks = [Block(b.heading, b.body, b.key) for b in memory.blocks]
    body = _section_body(items, nl)
    block = next((b for b in blocks if b.key == key), None)
    if block is None:
        levels = [b.level for b in blocks if b.key]
        level = levels[0] if levels else 2
        if blocks and blocks[-1].body and not blocks[-1].body.endswith(nl + nl):
            blocks[-1].body = blocks[-1].body.rstrip("\r\n") + nl + nl
        blocks.append(Block(heading=f"{'#' * level} {SECTIONS[key]}{nl}", body=body, key=key))
    else:
        block.body = body
    if blocks:
        blocks[-1].body = blocks[-1].body.rstrip("\r\n") + nl
    return Memory(blocks=blocks, bom=memory.bom, newline=nl)
