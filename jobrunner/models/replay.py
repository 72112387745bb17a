"""Offline model: plays a recorded script of assistant turns through the same session.

Script format (JSON; every field in README, "Replay scripts"):
{"description": "...", "turns": [{"content": [...blocks...], "stop_reason": "tool_use",
"usage": {"input_tokens": N, "output_tokens": N}}, ...]}. A block is
{"type": "text", "text": "..."} or {"type": "tool_use", "id": "...", "name": "...",
"input": {...}}. `jobrunner replay RUN_ID` writes one from a recorded run.

The session answers a script as it answers a model: each turn gets what a live model
would get back (tool results, the reminder to call `update_memory` before `finish`, ...),
and the next turn is played whatever that answer was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobrunner.errors import ConfigError
from jobrunner.models import ModelError, ModelRequest, ModelTurn
from jobrunner.models.pricing import Usage

STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                "model_context_window_exceeded")


class ReplayUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cache_creation_input_tokens: int = Field(0, ge=0)
    cache_read_input_tokens: int = Field(0, ge=0)


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="allow")  # a recorded block may carry citations
    type: Literal["text"]
    text: str


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ThinkingBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["thinking", "redacted_thinking"]


BLOCKS = {"text": TextBlock, "tool_use": ToolUseBlock, "thinking": ThinkingBlock,
          "redacted_thinking": ThinkingBlock}


class ReplayTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Plain dicts: the blocks are played back as recorded (see `block_problems`).
    content: list[dict[str, Any]]
    stop_reason: Literal[STOP_REASONS] = "end_turn"  # type: ignore[valid-type]
    usage: ReplayUsage = Field(default_factory=ReplayUsage)


class ReplayScript(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    turns: list[ReplayTurn] = Field(min_length=1)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def block_problems(raw: Any) -> list[tuple[tuple[str, ...], str]]:
    """Each content block of a script (as read, valid or not otherwise) of a kind the
    session reads, with the fields it needs."""
    problems = []
    turns = raw.get("turns") if isinstance(raw, dict) else None
    for t, turn in enumerate(turns if isinstance(turns, list) else []):
        content = turn.get("content") if isinstance(turn, dict) else None
        for b, block in enumerate(content if isinstance(content, list) else []):
            where = ("turns", str(t), "content", str(b))
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in BLOCKS:
                problems.append(((*where, "type"), f"one of {', '.join(BLOCKS)} (got {kind!r})"))
                continue
            try:
                BLOCKS[kind].model_validate(block)
            except ValidationError as exc:
                problems += [((*where, *map(str, e["loc"])), _message(e)) for e in exc.errors()]
    return problems


def _located(path: Path, text: str, problems: list[tuple[tuple[str, ...], str]]) -> list[str]:
    """Each problem of a script as `FILE:LINE: key: problem`, in line order."""
    from jobrunner.formats.jsonpos import line_of, value_lines

    lines = value_lines(text)
    out = sorted(((line_of(lines, loc), ".".join(loc) or "(file)", why)
                  for loc, why in problems), key=lambda o: o[0])
    return [f"{path}:{line}: {key}: {why}" for line, key, why in out]


def load_script(path: Path) -> ReplayScript:
    """Read and validate a replay script; errors are located ConfigErrors."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read replay script: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}:1: replay script is not UTF-8 text") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: replay script is not JSON: {exc.msg}") from exc
    problems = block_problems(raw)
    try:
        script = ReplayScript.model_validate(raw)
    except ValidationError as exc:
        problems += [(tuple(map(str, e["loc"])), _message(e)) for e in exc.errors()]
    if problems:
        raise ConfigError(_located(path, text, problems))
    return script


class ReplayClient:
    """Answers each request with the next recorded turn."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.script = load_script(path)
        self.position = 0

    def prepare(self) -> None:
        """Nothing to load: the script was read when the client was made."""

    def request(self, request: ModelRequest) -> ModelTurn | ModelError:
        if self.position >= len(self.script.turns):
            return ModelError(
                "replay_exhausted",
                f"replay script {self.path.name} has no turn {self.position + 1} "
                f"(it holds {len(self.script.turns)})",
                retryable=False,
            )
        turn = self.script.turns[self.position]
        self.position += 1
        estimated_input = len(json.dumps([request.system, request.messages, request.tools])) // 4
        usage = turn.usage
        return ModelTurn(
            content=turn.content,
            stop_reason=turn.stop_reason,
            usage=Usage(
                input_tokens=usage.input_tokens or estimated_input,
                output_tokens=usage.output_tokens or max(1, len(json.dumps(turn.content)) // 4),
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
            ),
            request_id=f"replay-{self.position}",
            model=request.model,
        )
