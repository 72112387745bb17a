"""What a scripted model says, for every test: the memory it saves, its `finish`, the two
turns of a well-behaved end, and the same turns in a replay script's form."""

from __future__ import annotations

from typing import Any

from tests.fake_api import tool_turn

MEMORY: dict[str, Any] = {
    "current_objective": "Report the day's numbers.",
    "key_decisions": ["Numbers come from the report tool only."],
    "what_not_to_do": [],
    "open_items": [],
}


def memory(**sections: Any) -> dict[str, Any]:
    """An `update_memory` input: MEMORY with `sections` replaced."""
    return {**MEMORY, **sections}


def update_memory(**sections: Any) -> tuple[str, dict[str, Any]]:
    """The `update_memory` call saving `memory(**sections)`."""
    return ("update_memory", memory(**sections))


def finish(status: str = "completed", summary: str = "Done.",
           **account: list[str]) -> tuple[str, dict[str, Any]]:
    """The `finish` call: a status, a summary, and what was established, assumed, unknown."""
    return ("finish", {"status": status, "summary": summary, "established": [],
                       "assumed": [], "unknown": [], **account})


def ending(**sections: Any) -> list[dict[str, Any]]:
    """The two turns of a well-behaved end: the memory, then `finish`."""
    return [tool_turn([update_memory(**sections)]), tool_turn([finish()])]


def replay_turn(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """One turn of a replay script (`model = "replay:PATH"`) making `calls`."""
    blocks = [{"type": "tool_use", "id": f"toolu_{i}_{name}", "name": name, "input": args}
              for i, (name, args) in enumerate(calls)]
    return {"content": blocks, "stop_reason": "tool_use",
            "usage": {"input_tokens": 100, "output_tokens": 20}}
