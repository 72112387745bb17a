"""Crontab schedules with crontab's meaning, in a job's own time zone.

The same evaluator answers `next`, `list`, `run --due`, `check` and the daemon's
trigger, so a schedule means one thing everywhere:

- day-of-week 0 and 7 are Sunday; names (`mon`, `jan`) and `@daily`-style aliases work;
- when both day-of-month and day-of-week are restricted, either matching fires (the
  crontab OR rule); when either is `*`, both must match;
- a local time skipped by a DST change (spring forward) fires once, at the first instant
  after the gap; a local time repeated by a DST change (fall back) fires once, at its
  first occurrence;
- only the ASCII digits 0-9 are digits (as in crontab: `²` or `１` is an error, not a number);
- an expression that can never fire is an error; one that fires is searched without limit,
  however far apart its fire times are (Feb 29 on a Sunday: up to 40 years).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names mapped to numbers)
_FIELDS = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
]
# The most days each month has in any year (February: 29, in leap years).
_LONGEST_MONTH = {m: calendar.monthrange(2000, m)[1] for m in range(1, 13)}
# `[0-9]`, not `\d` or str.isdigit(): those accept `²`, `١`, `１`, which crontab does not.
_DIGITS = re.compile(r"[0-9]+")
# No field goes past 59, so a number with more significant digits than this is out of range
# as a value and means "one value per range" as a step; capping it also keeps int() clear of
# its 4300-digit limit.
_MAX_DIGITS = 6


class ScheduleError(ValueError):
    """A schedule expression that crontab would not accept, or that never fires."""


def _number(text: str) -> int | None:
    """`text` as a number if it is ASCII digits, else None; huge numbers are capped at
    10**_MAX_DIGITS (see there)."""
    if not _DIGITS.fullmatch(text):
        return None
    significant = text.lstrip("0") or "0"
    return int(significant) if len(significant) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _shown(text: str) -> str:
    """A token as an error message quotes it: a 5000-digit number is cut short."""
    return text if len(text) <= 12 else f"{text[:12]}…"


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    lowered = token.lower()
    if lowered in names:
        return names[lowered]
    number = _number(token)
    if number is None:
        hint = "" if token.isascii() else " (digits are 0-9)"
        raise ScheduleError(f"{field}: {_shown(token)!r} is not a number or name{hint}")
    if not low <= number <= high:
        raise ScheduleError(f"{field}: {_shown(token.lstrip('0') or '0')} is outside {low}-{high}")
    return number


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{field}: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            number = _number(step_text)
            if not number:  # not ASCII digits, or 0
                hint = "" if step_text.isascii() else " (digits are 0-9)"
                raise ScheduleError(f"{field}: bad step {_shown(step_text)!r}{hint}")
            step = number
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start = _value(a, low, high, names, field)
            end = _value(b, low, high, names, field)
            if end < start:
                raise ScheduleError(f"{field}: range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, field)
            # crontab reads `5/15` as `5-max/15`
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values


@dataclass(frozen=True)
class Schedule:
    """A parsed crontab expression bound to a time zone."""

    expression: str
    timezone: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_restricted: bool
    dow_restricted: bool

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def never_fires(self) -> bool:
        """Whether no day ever matches, decided from the fields alone.

        The Gregorian calendar repeats every 400 years, and within that cycle every
        (month, day) that exists in some year, Feb 29 included, falls on each of the seven
        weekdays (tests check this by brute force). Every field holds at least one value.
        So under the OR rule any weekday of a listed month fires; otherwise the schedule
        fires exactly when one of its months has one of its days in some year.
        """
        if self.dom_restricted and self.dow_restricted:
            return False
        return not any(day <= _LONGEST_MONTH[m] for m in self.months for day in self.days)

    def _month_days(self, year: int, month: int) -> list[int]:
        """The days of one month that match the day fields, ascending."""
        first_weekday, length = calendar.monthrange(year, month)  # 0 = Monday
        sunday_based = (first_weekday + 1) % 7  # day 1's weekday, 0 = Sunday
        by_date = {day for day in self.days if day <= length}
        by_weekday = {day for day in range(1, length + 1)
                      if (sunday_based + day - 1) % 7 in self.weekdays}
        if self.dom_restricted and self.dow_restricted:
            return sorted(by_date | by_weekday)
        return sorted(by_date & by_weekday)

    def _dates_from(self, first: date) -> Iterator[date]:
        """Local dates from `first` on whose day fields match, ascending, up to the last
        year a datetime holds. Months outside the month field are never looked at and a
        month is read whole, so decades between fire times cost a few steps per year."""
        months = sorted(self.months)
        for year in range(first.year, MAXYEAR + 1):
            for month in months:
                if (year, month) < (first.year, first.month):
                    continue
                for day in self._month_days(year, month):
                    if year > first.year or month > first.month or day >= first.day:
                        yield date(year, month, day)

    def _instant(self, naive: datetime) -> datetime:
        """The UTC instant a local wall-clock slot fires at (DST rules in module doc)."""
        zone = self.zone
        local = naive.replace(tzinfo=zone)  # fold=0: the first of a repeated time
        as_utc = local.astimezone(UTC)
        if as_utc.astimezone(zone).replace(tzinfo=None) == naive:
            return as_utc
        # Skipped by spring-forward: fire at the first instant after the gap.
        probe = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
        probe = probe.replace(second=0, microsecond=0)
        while probe.astimezone(zone).replace(tzinfo=None) < naive:
            probe += timedelta(minutes=1)
        return probe

    def next_after(self, after: datetime) -> datetime:
        """First fire time strictly after `after` (aware), as an aware UTC datetime."""
        for instant in self.iter_after(after):
            return instant
        # Reached only near year 9999: a schedule that fires at all fires in every 400 years.
        raise ValueError(f"{self.expression!r} fires no more before year {MAXYEAR + 1}")

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after `after`, ascending, as aware UTC datetimes."""
        if after.tzinfo is None:
            raise ValueError("`after` must be timezone-aware")
        zone = self.zone
        start_local = after.astimezone(zone)
        # Start a day early: a slot in a DST gap fires after the gap, possibly past
        # midnight. Wall times more than 3 h before `after` cannot fire after it (no zone
        # shifts by more), so they are skipped without the costly zone arithmetic: the
        # daemon asks this for every firing of every job. Where the offset is the same 3 h
        # before `after` as at it (no shift in between: zones shift at most once a day),
        # no wall time before `after`'s own minute can fire after it either.
        floor = start_local.replace(tzinfo=None) - timedelta(hours=3)
        if (after - timedelta(hours=3)).astimezone(zone).utcoffset() == start_local.utcoffset():
            floor = start_local.replace(tzinfo=None, second=0, microsecond=0)
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        last: datetime | None = None
        for day in self._dates_from(start_local.date() - timedelta(days=1)):
            if datetime.combine(day, time(23, 59)) >= floor:
                for hour in hours:
                    if datetime.combine(day, time(hour, 59)) < floor:
                        continue
                    for minute in minutes:
                        naive = datetime.combine(day, time(hour, minute))
                        if naive < floor:
                            continue
                        instant = self._instant(naive)
                        if instant > after and instant != last:
                            last = instant
                            yield instant

    def next_times(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` fire times after `after`."""
        out = []
        for instant in self.iter_after(after):
            out.append(instant)
            if len(out) == count:
                break
        return out

    def previous_at_or_before(self, moment: datetime, within: timedelta) -> datetime | None:
        """The latest fire time in (moment - within, moment], or None: the slot a launch
        at `moment` is for, when it is at most `within` late."""
        latest = None
        for instant in self.iter_after(moment - within):
            if instant > moment:
                break
            latest = instant
        return latest


def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """Parse a 5-field crontab expression or alias; raise ScheduleError if invalid."""
    text = " ".join(expression.split())
    lowered = text.lower()
    if lowered.startswith("@"):
        if lowered not in ALIASES:
            known = ", ".join(sorted(ALIASES))
            raise ScheduleError(f"unknown alias {text!r} (known: {known})")
        text = ALIASES[lowered]
    parts = text.split(" ")
    if len(parts) != 5:
        raise ScheduleError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    sets = [
        _parse_field(part, name, low, high, names)
        for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in sets[4])
    try:
        ZoneInfo(timezone)
    except Exception as exc:  # zoneinfo raises several types for bad keys
        raise ScheduleError(f"unknown time zone {timezone!r}") from exc
    schedule = Schedule(
        expression=expression,
        timezone=timezone,
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=weekdays,
        dom_restricted=not parts[2].startswith("*"),
        dow_restricted=not parts[4].startswith("*"),
    )
    if schedule.never_fires():
        raise ScheduleError(f"{expression!r} never fires (none of its months has any of its days)")
    return schedule


def system_timezone(honour_tz_env: bool = True) -> str:
    """The system's IANA zone name, or UTC when it cannot be told. cron ignores `$TZ` and
    reads /etc/localtime; a job's default honours `$TZ` as the shell does."""
    import os
    from pathlib import Path

    if honour_tz_env and (tz := os.environ.get("TZ", "").lstrip(":")):
        return tz
    try:
        link = Path("/etc/localtime").resolve()
        if "zoneinfo/" in str(link):
            return str(link).split("zoneinfo/", 1)[1]
    except OSError:
        pass  # no /etc/localtime: fall back to /etc/timezone
    name = Path("/etc/timezone")
    if name.is_file():
        return name.read_text(encoding="utf-8").strip() or "UTC"
    return "UTC"


def format_local(instant: datetime, timezone: str) -> str:
    """`2026-11-23 08:00 CET (+01:00)`: a fire time as a person reads it."""
    local = instant.astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({offset[:3]}:{offset[3:]})"
