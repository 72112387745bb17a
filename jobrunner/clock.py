"""Time as jobrunner writes it: aware UTC datetimes, ISO 8601 text with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (callers take `now` arguments so tests can pass one)."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """`2026-11-21T08:00:00Z`, or None for None."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") \
        if moment else None


def parse_iso(text: str | None) -> datetime | None:
    """The inverse of `iso` (any ISO 8601 text with an offset or `Z`)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
