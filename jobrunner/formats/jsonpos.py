"""Line numbers for the values of a JSON document, so errors can say `FILE:LINE: key`.

The json module gives no positions; this walker reads a document json.loads accepted and
maps every path (`("turns", "1", "content", "0", "input")`) to the line its value starts
on. Lookups answer with the closest line known (the value, else its container, else 1).
"""

from __future__ import annotations

import re

from jobrunner.formats.tomlpos import line_of  # noqa: F401 - the same lookup, for JSON

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SPACE = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class _Walker:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: dict[tuple[str, ...], int] = {}

    def line(self, at: int) -> int:
        return self.text.count("\n", 0, at) + 1

    def space(self, at: int) -> int:
        match = _SPACE.match(self.text, at)
        return match.end() if match else at

    def string(self, at: int) -> tuple[str, int]:
        import json

        match = _STRING.match(self.text, at)
        if not match:
            raise ValueError(f"expected a string at {at}")
        return json.loads(match.group(0)), match.end()

    def value(self, at: int, path: tuple[str, ...]) -> int:
        at = self.space(at)
        self.lines.setdefault(path, self.line(at))
        char = self.text[at:at + 1]
        if char == "{":
            return self._object(at + 1, path)
        if char == "[":
            return self._array(at + 1, path)
        if char == '"':
            return self.string(at)[1]
        for literal in ("true", "false", "null"):
            if self.text.startswith(literal, at):
                return at + len(literal)
        match = _NUMBER.match(self.text, at)
        if not match:
            raise ValueError(f"unexpected {char!r} at {at}")
        return match.end()

    def _object(self, at: int, path: tuple[str, ...]) -> int:
        at = self.space(at)
        if self.text.startswith("}", at):
            return at + 1
        while True:
            key, at = self.string(self.space(at))
            at = self.space(at) + 1  # the colon
            at = self.space(self.value(at, (*path, key)))
            if self.text.startswith("}", at):
                return at + 1
            at += 1  # the comma

    def _array(self, at: int, path: tuple[str, ...]) -> int:
        at = self.space(at)
        if self.text.startswith("]", at):
            return at + 1
        index = 0
        while True:
            at = self.space(self.value(at, (*path, str(index))))
            index += 1
            if self.text.startswith("]", at):
                return at + 1
            at += 1


def value_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every value's path in the JSON document `text` to its 1-based line ({} when
    `text` is not JSON the walker can follow)."""
    walker = _Walker(text.lstrip("\ufeff"))
    try:
        walker.value(0, ())
    except (ValueError, IndexError):
        return walker.lines
    return walker.lines
