"""Secrets never reach a trace, record, report, alert or log: one redactor for all.

The project owns the Redactor (`Project.redactor()`, built from every secret value it
knows); the state database's write transactions, the trace writer, the alert log and the
memory writer all pass what they write through it, so redaction is a boundary of the
state, not a habit of each caller.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
MIN_SECRET = 4  # shorter values would mask ordinary words
# Key shapes redacted even when the value was never configured (a tool echoing a key).
_PATTERNS = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}|"
    r"(?i:bearer\s+)[A-Za-z0-9._\-]{16,}|"
    r"(?i:(?:api[_-]?key|password|passwd|secret|token)\s*[=:]\s*)[^\s,;\"']{4,}"
)
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def written_forms(secret: str) -> set[str]:
    """Every form `secret` takes once written down: as is; JSON-escaped, ASCII-only and
    not, once and twice (JSON text kept inside a JSON document: a ledger row's args in a
    trace line); Python's repr and ascii escapes (an exception message); and
    URL-percent-encoded (upper- and lower-case hex, `+` or `%20` for a space)."""
    forms = {secret}
    for _ in range(2):
        forms |= {json.dumps(f, ensure_ascii=a)[1:-1] for f in forms for a in (True, False)}
    forms |= {repr(secret)[1:-1], ascii(secret)[1:-1]}
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        forms |= {encoded, _PERCENT.sub(lambda m: m.group().lower(), encoded)}
    return {f for f in forms if len(f) >= MIN_SECRET}


class Redactor:
    """Replaces known secret values (in every written form) and key-shaped strings with
    a mask."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        values = {s for s in (secrets or []) if len(s) >= MIN_SECRET}
        self.secrets = sorted(values, key=len, reverse=True)
        forms: set[str] = set()
        for secret in values:
            forms |= written_forms(secret)
        # Longest first, so a secret's escaped form is masked whole before a shorter
        # secret that is part of it.
        self.forms = sorted(forms, key=len, reverse=True)

    def text(self, value: str) -> str:
        for form in self.forms:
            if form in value:
                value = value.replace(form, MASK)
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
        """Deep copy of `value` with every string (dict keys too) redacted. Redact a
        structure before encoding it: the text pass also knows the escaped forms, but
        text cut short after encoding (a preview) may hold part of a secret."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def encoded(self, raw: bytes) -> bytes:
        """Redact UTF-8 bytes (a file's content); bytes that are not UTF-8 pass through
        unchanged around the text."""
        text = raw.decode("utf-8", "surrogateescape")
        return self.text(text).encode("utf-8", "surrogateescape")
