"""Schedules mean what they mean in a crontab: checked against fire times written by hand.

Calendar facts used below: 2026-11-01 is a Sunday. Europe/Berlin goes CET→CEST on
2026-03-29 at 02:00 (01:00 UTC) and back on 2026-10-25 at 03:00 CEST (01:00 UTC).
America/New_York goes EST→EDT on 2026-03-08 at 02:00 (07:00 UTC) and back on 2026-11-01
at 02:00 EDT (06:00 UTC). 1 January is a Friday in 2027, 2038 and 2044. Feb 29 is a Sunday in
2032, 2060, 2088, 2128 (2100 is no leap year), 2156, ..., 2376, 2404.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from jobrunner.config.schedule import ScheduleError, format_local, parse_schedule


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, zone: str, after: str, count: int) -> list[str]:
    times = parse_schedule(expression, zone).next_times(utc(after), count)
    return [t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for t in times]


CASES = [
    # id, expression, zone, after (UTC), expected fire times (UTC)
    ("dow-0-is-sunday", "0 9 * * 0", "UTC", "2026-11-02 00:00",
     ["2026-11-08 09:00", "2026-11-15 09:00"]),
    ("dow-7-is-sunday", "0 9 * * 7", "UTC", "2026-11-02 00:00",
     ["2026-11-08 09:00", "2026-11-15 09:00"]),
    ("dow-name-sun", "0 9 * * Sun", "UTC", "2026-11-02 00:00",
     ["2026-11-08 09:00", "2026-11-15 09:00"]),
    ("dow-range-to-7", "0 9 * * 5-7", "UTC", "2026-11-02 00:00",
     ["2026-11-06 09:00", "2026-11-07 09:00", "2026-11-08 09:00", "2026-11-13 09:00"]),
    ("dow-1-is-monday", "0 9 * * 1", "UTC", "2026-11-01 00:00",
     ["2026-11-02 09:00", "2026-11-09 09:00"]),
    ("names-mon-fri", "30 8 * * mon-fri", "UTC", "2026-11-06 09:00",
     ["2026-11-09 08:30", "2026-11-10 08:30", "2026-11-11 08:30", "2026-11-12 08:30",
      "2026-11-13 08:30", "2026-11-16 08:30"]),
    ("names-months", "0 0 1 JAN,jul *", "UTC", "2026-03-01 00:00",
     ["2026-07-01 00:00", "2027-01-01 00:00"]),
    # OR rule: both day fields restricted, either matching fires (13th, or any Friday).
    ("or-rule", "0 12 13 * fri", "UTC", "2026-11-01 00:00",
     ["2026-11-06 12:00", "2026-11-13 12:00", "2026-11-20 12:00", "2026-11-27 12:00",
      "2026-12-04 12:00", "2026-12-11 12:00", "2026-12-13 12:00"]),
    ("or-rule-dom-on-a-sunday", "0 12 1 * mon", "UTC", "2026-10-31 13:00",
     ["2026-11-01 12:00", "2026-11-02 12:00", "2026-11-09 12:00"]),
    # One day field is `*`: the other alone decides.
    ("dom-only", "0 12 13 * *", "UTC", "2026-11-01 00:00",
     ["2026-11-13 12:00", "2026-12-13 12:00"]),
    ("dow-only", "0 12 * * fri", "UTC", "2026-11-01 00:00",
     ["2026-11-06 12:00", "2026-11-13 12:00"]),
    # A field starting with `*` counts as unrestricted (crontab): odd days AND Fridays.
    ("star-step-is-unrestricted", "0 12 */2 * fri", "UTC", "2026-11-01 00:00",
     ["2026-11-13 12:00", "2026-11-27 12:00", "2026-12-11 12:00"]),
    # Only 1 January when it is a Friday: years apart.
    ("star-step-jan-1-friday", "0 0 */31 1 5", "UTC", "2026-01-01 00:00",
     ["2027-01-01 00:00", "2038-01-01 00:00", "2044-01-01 00:00"]),
    # Feb 29 on a Sunday: 28 years apart, 40 across 2100.
    ("feb-29-sunday", "0 0 29 2 */7", "UTC", "2026-01-01 00:00",
     ["2032-02-29 00:00", "2060-02-29 00:00", "2088-02-29 00:00", "2128-02-29 00:00",
      "2156-02-29 00:00"]),
    ("feb-29-sunday-berlin", "0 0 29 2 */7", "Europe/Berlin", "2089-01-01 00:00",
     ["2128-02-28 23:00", "2156-02-28 23:00"]),
    ("feb-29-sunday-after-2089", "0 0 29 2 */7", "UTC", "2089-01-01 00:00",
     ["2128-02-29 00:00"]),
    ("feb-29-sunday-after-2390", "0 0 29 2 */7", "UTC", "2390-01-01 00:00",
     ["2404-02-29 00:00", "2432-02-29 00:00"]),
    # A step too long for int() to read means one value per range.
    ("huge-step", "*/" + "7" * 5000 + " 3 1 1 *", "UTC", "2026-11-01 00:00",
     ["2027-01-01 03:00"]),
    ("step-and-list", "0,30 */12 * * *", "UTC", "2026-11-01 00:00",
     ["2026-11-01 00:30", "2026-11-01 12:00", "2026-11-01 12:30", "2026-11-02 00:00"]),
    ("alias-hourly", "@hourly", "UTC", "2026-11-01 10:15",
     ["2026-11-01 11:00", "2026-11-01 12:00"]),
    ("alias-daily", "@daily", "UTC", "2026-11-01 10:15",
     ["2026-11-02 00:00", "2026-11-03 00:00"]),
    ("alias-midnight", "@midnight", "UTC", "2026-11-01 10:15",
     ["2026-11-02 00:00"]),
    ("alias-weekly-is-sunday", "@weekly", "UTC", "2026-11-01 10:15",
     ["2026-11-08 00:00", "2026-11-15 00:00"]),
    ("alias-monthly", "@monthly", "UTC", "2026-11-01 10:15",
     ["2026-12-01 00:00", "2027-01-01 00:00"]),
    ("alias-yearly", "@yearly", "UTC", "2026-11-01 10:15", ["2027-01-01 00:00"]),
    ("alias-annually-any-case", "@Annually", "UTC", "2026-11-01 10:15", ["2027-01-01 00:00"]),
    ("zone-berlin-winter", "0 8 * * 1-5", "Europe/Berlin", "2026-11-01 00:00",
     ["2026-11-02 07:00", "2026-11-03 07:00"]),
    # DST forward, Berlin: 02:30 does not exist on 03-29; it fires once, right after the gap.
    ("berlin-forward-skipped-time", "30 2 * * *", "Europe/Berlin", "2026-03-27 12:00",
     ["2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"]),
    # Several slots inside the gap still fire once.
    ("berlin-forward-every-15", "*/15 2 * * *", "Europe/Berlin", "2026-03-29 00:00",
     ["2026-03-29 01:00", "2026-03-30 00:00"]),
    # DST back, Berlin: 02:30 happens twice on 10-25; it fires once, the first time (CEST).
    ("berlin-back-repeated-time", "30 2 * * *", "Europe/Berlin", "2026-10-24 12:00",
     ["2026-10-25 00:30", "2026-10-26 01:30"]),
    ("berlin-back-hourly", "0 * * * *", "Europe/Berlin", "2026-10-24 22:30",
     ["2026-10-24 23:00", "2026-10-25 00:00", "2026-10-25 02:00", "2026-10-25 03:00"]),
    ("new-york-forward", "*/30 * * * *", "America/New_York", "2026-03-08 06:00",
     ["2026-03-08 06:30", "2026-03-08 07:00", "2026-03-08 07:30"]),
    ("new-york-forward-daily", "30 2 * * *", "America/New_York", "2026-03-07 12:00",
     ["2026-03-08 07:00", "2026-03-09 06:30"]),
    ("new-york-back", "30 1 * * *", "America/New_York", "2026-10-31 12:00",
     ["2026-11-01 05:30", "2026-11-02 06:30"]),
    ("new-york-back-every-30", "*/30 * * * *", "America/New_York", "2026-11-01 05:00",
     ["2026-11-01 05:30", "2026-11-01 07:00", "2026-11-01 07:30"]),
]


@pytest.mark.parametrize(("expression", "zone", "after", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fire_times(expression, zone, after, expected):
    assert fires(expression, zone, after, len(expected)) == expected


INVALID = [
    ("60 * * * *", "minute: 60 is outside 0-59"),
    ("* 24 * * *", "hour: 24 is outside 0-23"),
    ("* * 0 * *", "day-of-month: 0 is outside 1-31"),
    ("* * * 13 *", "month: 13 is outside 1-12"),
    ("* * * * 8", "day-of-week: 8 is outside 0-7"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * *", "expected 5 fields"),
    ("@reboot", "unknown alias '@reboot'"),
    ("5-1 * * * *", "runs backwards"),
    ("*/0 * * * *", "bad step"),
    ("0 0 * * fri-mon", "runs backwards"),
    ("0 0 * jan-foo *", "'foo' is not a number or name"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("0 0 30,31 2 */7", "never fires"),
    # Only ASCII 0-9 are digits: str.isdigit() accepts these, int() some of them.
    ("0 0 ² * *", "day-of-month: '²' is not a number or name (digits are 0-9)"),
    ("0 0 1-² * *", "day-of-month: '²' is not a number or name"),
    ("0 0 1/² * *", "day-of-month: bad step '²'"),
    ("0 0 * * ¹", "day-of-week: '¹' is not a number or name"),
    ("0 0 １ * *", "day-of-month: '１' is not a number or name"),
    ("0 0 1 ١ *", "month: '١' is not a number or name"),
    ("0 ٣-5 * * *", "hour: '٣' is not a number or name"),
    ("*/５ * * * *", "minute: bad step '５'"),
    ("0 0 " + "9" * 5000 + " * *", "day-of-month: 999999999999… is outside 1-31"),
    ("0 0 1, * *", "empty list item"),
]


@pytest.mark.parametrize(("expression", "problem"), INVALID, ids=[i[0][:24] for i in INVALID])
def test_invalid_expressions_say_why(expression, problem):
    with pytest.raises(ScheduleError, match=re.escape(problem)):
        parse_schedule(expression, "UTC")


def test_every_date_falls_on_every_weekday_in_400_years():
    """The claim `never_fires` rests on: the Gregorian calendar repeats every 400 years and
    in that cycle each (month, day) that exists at all, Feb 29 included, meets all seven
    weekdays."""
    weekdays: dict[tuple[int, int], set[int]] = {}
    day = date(2000, 1, 1)
    while day.year < 2400:
        weekdays.setdefault((day.month, day.day), set()).add(day.weekday())
        day += timedelta(days=1)
    assert len(weekdays) == 366 and (2, 29) in weekdays
    assert all(found == set(range(7)) for found in weekdays.values())
    assert date(2400, 1, 1).weekday() == date(2000, 1, 1).weekday()


def test_never_fires_exactly_when_no_year_has_the_day():
    """`D M */7` is day D of month M when it is a Sunday (`*/7` counts as unrestricted, so
    both must match). For every D and M the parser rejects it exactly when no year of the
    400-year cycle has it, and otherwise finds the first one a day-by-day walk finds."""
    first_sunday: dict[tuple[int, int], date] = {}
    day = date(2000, 1, 1)
    while day.year < 2400:
        if day.isoweekday() == 7:
            first_sunday.setdefault((day.month, day.day), day)
        day += timedelta(days=1)
    assert first_sunday[(2, 29)] == date(2004, 2, 29)
    for month in range(1, 13):
        for dom in range(1, 32):
            expression = f"0 0 {dom} {month} */7"
            expected = first_sunday.get((month, dom))
            if expected is None:
                with pytest.raises(ScheduleError, match="never fires"):
                    parse_schedule(expression, "UTC")
            else:
                found = parse_schedule(expression, "UTC").next_after(utc("1999-12-31 23:59"))
                assert found == utc(f"{expected} 00:00"), expression
    assert len(first_sunday) == 366


def test_unknown_zone():
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        parse_schedule("@daily", "Mars/Olympus")


PREVIOUS = [
    # expression, zone, moment (UTC), within (minutes), expected slot (UTC) or None
    ("0 8 * * *", "UTC", "2026-11-02 08:03", 5, "2026-11-02 08:00"),
    ("0 8 * * *", "UTC", "2026-11-02 08:00", 5, "2026-11-02 08:00"),
    ("0 8 * * *", "UTC", "2026-11-02 08:05", 5, None),  # exactly `within` late: missed
    ("0 8 * * *", "UTC", "2026-11-02 07:59", 5, None),
    ("* * * * *", "UTC", "2026-11-02 08:03", 5, "2026-11-02 08:03"),
    ("30 2 * * *", "Europe/Berlin", "2026-03-29 01:02", 5, "2026-03-29 01:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25 01:32", 5, None),  # the repeat: not a slot
]


@pytest.mark.parametrize(("expression", "zone", "moment", "within", "expected"), PREVIOUS)
def test_previous_slot(expression, zone, moment, within, expected):
    slot = parse_schedule(expression, zone).previous_at_or_before(
        utc(moment), timedelta(minutes=within))
    assert (slot.strftime("%Y-%m-%d %H:%M") if slot else None) == expected


def test_format_local_shows_zone_and_offset():
    assert format_local(utc("2026-11-02 07:00"), "Europe/Berlin") == \
        "2026-11-02 08:00 CET (+01:00)"
    assert format_local(utc("2026-07-01 12:00"), "America/New_York") == \
        "2026-07-01 08:00 EDT (-04:00)"
    assert format_local(utc("2026-07-01 12:00"), "Asia/Kolkata") == \
        "2026-07-01 17:30 IST (+05:30)"


def test_next_list_validate_show_the_jobs_zone_and_offset(project):
    project.job("berlin", schedule="0 8 * * mon-fri", timezone="Europe/Berlin")
    shown = project.run("next", "berlin", "-n", "3")
    assert shown.code == 0, shown.stderr
    header, *times = shown.stdout.splitlines()
    assert header == "berlin: 0 8 * * mon-fri (Europe/Berlin)"
    assert len(times) == 3
    assert all(t.endswith((" 08:00 CET (+01:00)", " 08:00 CEST (+02:00)")) for t in times)
    as_json = project.run("next", "berlin", "-n", "3", "--json").json()
    for entry, line in zip(as_json, times, strict=True):
        assert entry["local"] == line
        moment = datetime.fromisoformat(entry["at"])
        assert moment.utcoffset() == timedelta(0) and moment.hour in (6, 7)
    listed = project.run("list")
    assert times[0] in listed.stdout
    valid = project.run("validate", "--json").json()["valid"][0]
    assert (valid["timezone"], valid["next_run_local"]) == ("Europe/Berlin", times[0])
    assert f"ok  berlin: next run {times[0]}" in project.run("validate").stdout


def test_non_ascii_digit_is_a_located_error_and_other_jobs_still_show(project):
    project.job("good", schedule="0 8 * * *")
    project.write("jobs/bad.toml", '''
        schedule = "0 0 ² * *"
        timezone = "UTC"
        model = "claude-sonnet-4-6"
        tools = []
        prompt = "Do the task."
    ''')
    located = "jobs/bad.toml:1: schedule: day-of-month: '²' is not a number or name"
    validated = project.run("validate")
    assert validated.code == 2, validated.stderr
    assert located in validated.stderr and "Traceback" not in validated.stderr
    assert "ok  good: next run" in validated.stdout and "bad" not in validated.stdout
    listed = project.run("list")
    assert listed.code == 2, listed.stderr
    assert located in listed.stderr and "Traceback" not in listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["good"]


def test_next_finds_feb_29_sundays_decades_apart(project):
    project.job("leap", schedule="0 0 29 2 */7")
    shown = project.run("next", "leap", "-n", "5", "--json")
    assert shown.code == 0, shown.stderr
    days = [datetime.fromisoformat(entry["at"]) for entry in shown.json()]
    assert len(days) == 5 and days == sorted(days)
    assert all((d.month, d.day, d.isoweekday(), d.hour) == (2, 29, 7, 0) for d in days)
    assert (days[-1] - days[0]).days > 100 * 365  # crosses 2100, which has no Feb 29


def test_a_hand_run_of_a_rare_schedule_stands_for_its_last_slot():
    # 29 February on a Sunday: the last one before 2026 was in 2004, 22 years back.
    from jobrunner.effects.ledger import manual_slot

    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert manual_slot(parse_schedule("0 0 29 2 */7", "UTC"), now) == datetime(
        2004, 2, 29, tzinfo=UTC)


def _every_slot(schedule, after: datetime, hours: int) -> list[datetime]:
    """Every fire time in (after, after + hours], found the slow way: each wall-clock
    minute of the days around it that matches the fields, mapped to its instant."""
    zone = schedule.zone
    first = (after.astimezone(zone) - timedelta(days=1)).replace(tzinfo=None, second=0,
                                                                 microsecond=0)
    end = after + timedelta(hours=hours)
    found = set()
    for step in range(0, (hours + 30) * 60):
        naive = first + timedelta(minutes=step)
        if naive.minute in schedule.minutes and naive.hour in schedule.hours and \
                naive.day in schedule._month_days(naive.year, naive.month) and \
                naive.month in schedule.months:
            instant = schedule._instant(naive)
            if after < instant <= end:
                found.add(instant)
    return sorted(found)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York",
                                  "Australia/Lord_Howe", "Asia/Kolkata"])
@pytest.mark.parametrize("expression", ["* * * * *", "30 2 * * *", "*/7 1-3 * * *",
                                        "0 * * * 0", "45 0,1,2,3 * * *"])
def test_fire_times_match_every_minute_checked_around_each_dst_shift(expression, zone):
    """The daemon asks for the next fire time of every job at every firing, so wall
    times that cannot fire are skipped; checked here against every minute, on the days
    around each shift of 2026 (and ordinary days), at times inside, at and around it."""
    schedule = parse_schedule(expression, zone)
    moments = []
    for day in ("2026-03-08", "2026-03-29", "2026-04-05", "2026-10-04", "2026-10-25",
                "2026-11-01", "2026-06-15"):
        start = utc(day + "T00:00:00") - timedelta(hours=12)
        moments += [start + timedelta(minutes=m, seconds=17) for m in range(0, 36 * 60, 71)]
    for after in moments:
        expected = _every_slot(schedule, after, 6)
        got = [t for t in schedule.next_times(after, len(expected) + 1)
               if t <= after + timedelta(hours=6)]
        assert got == expected, (expression, zone, after)
