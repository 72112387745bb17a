"""Project tools of the daily-email example: signup numbers from a local CSV file."""

import csv
from datetime import date, timedelta
from pathlib import Path

from jobrunner import ToolResult, tool
from jobrunner.tools.api import current_context

DATA_FILE = Path("data") / "signups.csv"


def _load(root: Path) -> dict[str, dict[str, int]]:
    with open(root / DATA_FILE, newline="", encoding="utf-8") as handle:
        return {
            row["day"]: {k: int(v) for k, v in row.items() if k != "day"}
            for row in csv.DictReader(handle)
        }


@tool(risk="low", side_effect=False, timeout=20, retries=2)
def fetch_signups(day: str) -> ToolResult:
    """Return signup counts for one day, given as YYYY-MM-DD: the total, the split by
    source (web, mobile, partner), the day before, and the average of the 7 days before."""
    try:
        wanted = date.fromisoformat(day)
    except ValueError:
        return ToolResult(ok=False, error=f"day must be YYYY-MM-DD, got {day!r}")
    data = _load(Path(current_context().project_root))
    row = data.get(wanted.isoformat())
    if row is None:
        first, last = min(data), max(data)
        return ToolResult(ok=False, error=f"no signup data for {day} (data covers {first} to "
                          f"{last})")
    previous = data.get((wanted - timedelta(days=1)).isoformat())
    week = [data[d]["signups"] for i in range(1, 8)
            if (d := (wanted - timedelta(days=i)).isoformat()) in data]
    return ToolResult(data={
        "day": wanted.isoformat(),
        "weekday": wanted.strftime("%A"),
        "signups": row["signups"],
        "by_source": {k: row[k] for k in ("web", "mobile", "partner")},
        "previous_day": previous["signups"] if previous else None,
        "average_previous_7_days": round(sum(week) / len(week), 1) if week else None,
    })
