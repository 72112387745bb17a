"""Offline model: plays a recorded script of assistant turns through the same session.

Script format (JSON): {"turns": [{"content": [...blocks...], "stop_reason": "tool_use",
"usage": {"input_tokens": N, "output_tokens": N}}, ...]}. `jobrunner replay RUN_ID`
writes one from a recorded run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobrunner.errors import ConfigError
from jobrunner.models import ModelError, ModelRequest, ModelTurn
from jobrunner.models.pricing import Usage


class ReplayUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class ReplayTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    usage: ReplayUsage = Field(default_factory=ReplayUsage)


class ReplayScript(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    turns: list[ReplayTurn]


def load_script(path: Path) -> ReplayScript:
    """Read and validate a replay script; errors are located ConfigErrors."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read replay script: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: replay script is not JSON: {exc.msg}") from exc
    try:
        return ReplayScript.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}:1: {key}: {first['msg']}") from exc


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
