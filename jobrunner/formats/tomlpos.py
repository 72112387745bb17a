"""Line numbers for keys of a TOML document, so errors can say `FILE:LINE: key`.

tomllib gives no positions; this scanner is deliberately simple: it follows table
headers and `key =` lines, skips multi-line strings and arrays, and answers with the
closest line it knows (the key, else its table, else line 1).
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.\s]+?)\s*=")


def _split_dotted(key: str) -> tuple[str, ...]:
    parts = []
    for raw in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', key):
        parts.append(raw.strip().strip("\"'"))
    return tuple(p for p in parts if p)


def key_lines(text: str) -> dict[tuple[str, ...], int]:  # noqa: C901 - one TOML line scanner
    """Map every key path (and table path) found in `text` to its 1-based line."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    bracket_depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        if bracket_depth > 0:
            bracket_depth += line.count("[") - line.count("]")
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            table = _split_dotted(header.group(1))
            if line.lstrip().startswith("[["):
                # The array itself is at its first element's header: a misspelt array
                # name (`[[alerts.channel]]`) is an unknown key located there.
                lines.setdefault(table, number)
                index = array_counts.get(table, 0)
                array_counts[table] = index + 1
                table = (*table, str(index))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            path = (*table, *_split_dotted(key.group(1)))
            lines.setdefault(path, number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
            if not in_multiline:
                bracket_depth = max(0, rest.count("[") - rest.count("]"))
    return lines


def line_of(lines: dict[tuple[str, ...], int], path: tuple[str | int, ...]) -> int:
    """Best line for `path`: the key itself, else its nearest enclosing table, else the
    document's own line if it has one (JSON, see `jsonpos`), else 1."""
    parts = tuple(str(p) for p in path)
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return lines.get((), 1)
