"""The one token estimate jobrunner makes before the API counts: 4 characters a token."""

from __future__ import annotations

import json
import math
from typing import Any

CHARS_PER_TOKEN = 4


def estimate_tokens(value: Any) -> int:
    """Tokens of a text, or of a value as JSON, rounded up (the memory budget, the size of
    a request before it is sent; the API's own count arrives after)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return math.ceil(len(text) / CHARS_PER_TOKEN)
