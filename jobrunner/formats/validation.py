"""Shared pieces of the file formats: durations, strict models, located error messages."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from jobrunner.formats.tomlpos import key_lines, line_of

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """`"90s"`, `"30m"`, `"2h"`, `"1d"` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"90s\", \"30m\", \"2h\" or seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(
            f"{value!r} is not a duration (use \"90s\", \"30m\", \"2h\", \"1d\" or seconds)"
        )
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class StrictModel(BaseModel):
    """Base of every file-format model: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def format_duration(seconds: float) -> str:
    """Seconds as the shortest exact duration string (`1800` -> `30m`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _problem(error: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        known = _known_keys(model, error["loc"][:-1]) if model else []
        close = difflib.get_close_matches(name, known, n=1)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required key is missing"
    message = error["msg"]
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    if error.get("input") is not None and kind not in ("value_error",):
        shown = repr(error["input"])
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def located_errors(
    path: Path,
    text: str,
    error: ValidationError,
    model: type[BaseModel] | None = None,
    fallback: tuple[Path, str] | None = None,
) -> list[str]:
    """Turn a pydantic ValidationError into `FILE:LINE: key: problem` lines.

    `fallback` is a second file (the settings' [defaults]) consulted when the key is
    not written in `path`, so an inherited bad default points at where it was written.
    """
    lines = key_lines(text)
    fallback_lines = key_lines(fallback[1]) if fallback else {}
    out = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        # "[key]": a table's key was refused (a bad server name), not a value under it.
        loc = tuple(p for p in loc if p not in ("str", "int", "float", "bool", "[key]"))
        key = ".".join(str(p) for p in loc) or "(file)"
        where = f"{path}:{line_of(lines, loc)}"
        if fallback and tuple(map(str, loc)) not in lines:
            defaults_loc = ("defaults", *map(str, loc))
            if defaults_loc in fallback_lines:
                where = f"{fallback[0]}:{fallback_lines[defaults_loc]}"
        out.append(f"{where}: {key}: {_problem(item, model)}")
    return out


def in_line_order(problems: list[str]) -> list[str]:
    """Located problems sorted as a person reads the file: by file, then line (a
    problem without a line keeps its place among the file's first)."""
    def key(problem: str) -> tuple[str, int]:
        path, _, rest = problem.partition(":")
        line = rest.split(":", 1)[0]
        return path, int(line) if line.isdigit() else 0

    order = {}
    for problem in problems:  # files in the order they came up
        order.setdefault(key(problem)[0], len(order))
    return sorted(problems, key=lambda p: (order[key(p)[0]], key(p)[1]))
