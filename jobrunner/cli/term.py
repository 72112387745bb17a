"""Output that fits where it goes: tables cut to the terminal's width, status words
coloured on a terminal only (never with NO_COLOR, never in a pipe or a cron mail)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

# Not a terminal (a pipe, a cron mail): lines stay short enough to read in a mail client.
PIPE_WIDTH = 100
CUT = "~"

_GREEN, _YELLOW, _RED, _BOLD = "32", "33", "31", "1"
COLOURS = {
    "completed": _GREEN, "ok": _GREEN, "free": _GREEN, "up": _GREEN, "scheduled": _GREEN,
    "delivered": _GREEN,
    "failed": _RED, "aborted": _RED, "crashed": _RED, "invalid": _RED, "in_doubt": _RED,
    "in doubt": _RED, "FAIL": _RED, "down": _RED, "problem": _RED,
    "partial": _YELLOW, "warn": _YELLOW, "limit": _YELLOW, "needs_approval": _YELLOW,
    "paused": _YELLOW,
    "skipped": _YELLOW, "stale": _YELLOW, "pending": _YELLOW, "held": _YELLOW,
    "running": _BOLD,
}


def width(stream: TextIO | None = None) -> int:
    """The columns output may use: $COLUMNS, else the terminal's, else PIPE_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stream = stream or sys.stdout
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):  # no descriptor behind the stream (a test's capture)
        pass
    return PIPE_WIDTH


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except ValueError:  # a closed stream
        return False


def colour(word: str, text: str | None = None, stream: TextIO | None = None) -> str:
    """`text` (default: `word`) in the colour of status `word`, if colour is on."""
    text = word if text is None else text
    code = COLOURS.get(word.strip())
    if code is None or not use_colour(stream):
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def wrap(text: str, indent: str = "  ") -> str:
    """A line of prose within the width: wrapped, never cut (its words are the point)."""
    import textwrap

    return textwrap.fill(text, max(20, width()), subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def cut(text: str, size: int) -> str:
    """`text` in at most `size` characters, a cut one ending in CUT."""
    if len(text) <= size:
        return text
    return text[: max(0, size - len(CUT))] + CUT if size > len(CUT) else text[:size]


def _shrink(widths: list[int], floors: list[int], among: list[int], room: int) -> None:
    """Narrow the widest of `among` a character at a time, down to their floors, until
    the row fits `room`."""
    while sum(widths) + 2 * (len(widths) - 1) > room:
        shrinkable = [i for i in among if widths[i] > floors[i]]
        if not shrinkable:
            return
        widths[max(shrinkable, key=lambda i: widths[i])] -= 1


def _fit(natural: list[int], headers: list[str], room: int, whole: tuple[int, ...],
         optional: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """The columns shown and their widths within `room`. `whole` (ids, statuses) and
    `optional` columns are not cut: the optional ones are left out instead, in their
    order, until the others fit; then the rest give way, the widest first (down to their
    header's width), and the whole ones only if nothing else is left to give."""
    shown = list(range(len(natural)))
    floors = [min(w, len(h)) for w, h in zip(natural, headers, strict=True)]
    kept_whole = (*whole, *optional)

    def narrowest() -> int:
        return sum(natural[i] if i in kept_whole else floors[i] for i in shown) \
            + 2 * (len(shown) - 1)

    for index in optional:
        if narrowest() <= room:
            break
        shown.remove(index)
    widths = [natural[i] for i in shown]
    kept = [floors[i] for i in shown]
    for group in ([i for i in shown if i not in kept_whole], [i for i in shown if i in optional]):
        _shrink(widths, kept, [shown.index(i) for i in group], room)
    for index in reversed(whole):  # the last named is the first to give way
        if index in shown:
            _shrink(widths, kept, [shown.index(index)], room)
    return shown, widths


def table(rows: list[list[str]], headers: list[str], coloured: tuple[int, ...] = (),
          whole: tuple[int, ...] = (0,), optional: tuple[int, ...] = (),
          room: int | None = None) -> str:
    """Aligned columns within the terminal's width; a long cell is cut (`--json` has
    every value whole). Columns in `coloured` hold status words, coloured on a terminal
    (and kept whole, like those in `whole`, the first named the longest); `optional` ones
    are left out, in that order, when the width cannot hold them."""
    rows = [[" ".join(str(c).split()) for c in row] for row in rows]
    natural = [len(h) for h in headers]
    for row in rows:
        natural = [max(w, len(c)) for w, c in zip(natural, row, strict=True)]
    shown, widths = _fit(natural, headers, room if room is not None else width(),
                         (*coloured, *whole), optional)

    def line(cells: list[str], paint: bool) -> str:
        out = []
        for index, size in zip(shown, widths, strict=True):
            text = cut(cells[index], size)
            pad = " " * (size - len(text))
            painted = colour(cells[index], text) if paint and index in coloured else text
            out.append(painted + pad)
        return "  ".join(out).rstrip()

    return "\n".join([line(headers, False), *(line(row, True) for row in rows)])
