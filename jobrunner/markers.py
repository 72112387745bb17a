"""The boundary markers that fence external data in the model's context: anything that
looks like one, in text jobrunner did not write, is made inert before the model sees it
(tool output, and tool errors that reach the memory's failure log)."""

from __future__ import annotations

import re

# Characters that read as < or > (fullwidth, small forms, guillemets, angle brackets), and
# invisible format characters that could hide inside a marker.
_LOOKALIKE = str.maketrans(dict.fromkeys("\uff1c\ufe64\u2039\u2329\u27e8\u3008\u276e", "<")
                           | dict.fromkeys("\uff1e\ufe65\u203a\u232a\u27e9\u3009\u276f", ">"))
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_BRACKET_RUN = re.compile(r"<{3,}|>{3,}")


def neutralise_markers(text: str) -> str:
    """Make anything that looks like a boundary marker inert, so tool output cannot close
    its fence: look-alike brackets become plain, invisibles go, and every run of three or
    more brackets is spaced out."""
    text = _INVISIBLE.sub("", text).translate(_LOOKALIKE)
    return _BRACKET_RUN.sub(lambda m: " ".join(m.group()), text)
