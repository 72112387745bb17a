"""Secrets never reach a trace, record, report, alert or log: one redactor for all."""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"
# Key shapes redacted even when the value was never configured (a tool echoing a key).
_PATTERNS = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}|"
    r"(?i:bearer\s+)[A-Za-z0-9._\-]{16,}|"
    r"(?i:(?:api[_-]?key|password|passwd|secret|token)\s*[=:]\s*)[^\s,;\"']{4,}"
)


class Redactor:
    """Replaces known secret values and key-shaped strings with a mask."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = sorted({s for s in (secrets or []) if len(s) >= 4}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return _PATTERNS.sub(self._mask_match, value)

    @staticmethod
    def _mask_match(match: re.Match[str]) -> str:
        found = match.group(0)
        for sep in ("=", ":"):
            if sep in found and not found.lower().startswith("sk-ant-"):
                head = found.split(sep, 1)[0]
                return f"{head}{sep}{MASK}"
        if found.lower().startswith("bearer"):
            return "Bearer " + MASK
        return MASK

    def data(self, value: Any) -> Any:
        """Deep copy of `value` with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
