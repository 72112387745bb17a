"""Benchmark 5, the daemon: 200 jobs every minute for three minutes, then 1000.

`jobrunner daemon` runs on a project of 200 jobs scheduled `* * * * *` (offline replay
model, so each run is cheap and real). Firing lag is the time from a slot to the daemon's
`firing NAME for slot ISO` line (the scheduler has fired and the launch begins); start
lag is the time to its `started NAME ...` line (the child process has been exec'd). Both
are stamped by this process as the line arrives (run records keep whole seconds only).
Resident memory is the daemon's own VmRSS, sampled every half second (its child runs are
separate processes). Target: firing lag p99 under 1 s.

`--max-concurrent` is set to the number of jobs, so the figure is the daemon's own firing
lag; a lower cap queues firings behind running jobs by design, and that queueing is not
scheduling lag.

CPU per firing is the CPU the daemon, its fork server and every run they started used
(user + system, children included once reaped, read from /proc just before the daemon is
stopped), over the firings seen: what one scheduled run costs the machine, all told.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from bench.common import jobrunner_cmd, make_project, median, percentile

JOBS = 200
MINUTES = 3
STARTED = re.compile(r"started (\S+) for slot (\S+)")
SERVER = re.compile(r"fork server started \(pid (\d+)\)")
TICK = os.sysconf("SC_CLK_TCK")
FIRING = re.compile(r"firing (\S+) for slot (\S+)")

REPLAY = {"turns": [
    {"content": [{"type": "tool_use", "id": "toolu_b1", "name": "update_memory",
                  "input": {"current_objective": "Tick.", "key_decisions": [],
                            "what_not_to_do": [], "open_items": []}}],
     "stop_reason": "tool_use", "usage": {"input_tokens": 100, "output_tokens": 20}},
    {"content": [{"type": "tool_use", "id": "toolu_b2", "name": "finish",
                  "input": {"status": "completed", "summary": "Ticked.", "established": [],
                            "assumed": [], "unknown": []}}],
     "stop_reason": "tool_use", "usage": {"input_tokens": 120, "output_tokens": 20}},
]}


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def _cpu_s(pid: int) -> float:
    """User + system CPU of a process and of its reaped children, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICK  # utime stime cutime cstime


def _read(proc: subprocess.Popen, first_slot: float, end: float, lags: list[float],
          start_lags: list[float], servers: list[int]) -> None:
    """Stamp each firing and start line of the measured minutes as it arrives."""
    for line in proc.stderr:  # type: ignore[union-attr]
        seen = time.time()
        server = SERVER.search(line)
        if server:
            servers.append(int(server.group(1)))
        for pattern, into in ((FIRING, lags), (STARTED, start_lags)):
            match = pattern.search(line)
            if match:
                slot = datetime.fromisoformat(match.group(2).replace("Z", "+00:00"))
                if first_slot <= slot.timestamp() < end:
                    into.append(seen - slot.timestamp())


def run(jobs: int = JOBS, minutes: int = MINUTES, max_concurrent: int | None = None,
        launch: str = "fork") -> dict:
    max_concurrent = max_concurrent or jobs
    with tempfile.TemporaryDirectory(prefix="jr-bench-daemon-") as tmp:
        project = make_project(Path(tmp))
        project.write("jobs/tick.replay.json", json.dumps(REPLAY))
        for n in range(jobs):
            project.job(f"tick-{n:03d}", schedule="* * * * *", model="replay:jobs/tick.replay.json")
        help_text = project.cli("daemon", "--help")
        if help_text.code != 0:
            return {"name": "daemon", "ran": False,
                    "why": "`jobrunner daemon` is not available in this build"}
        proc = subprocess.Popen([*jobrunner_cmd(), "daemon", "--max-concurrent",
                                 str(max_concurrent), "--launch", launch],
                                cwd=project.root, env=project.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lags: list[float] = []
        start_lags: list[float] = []
        rss: list[int] = []
        servers: list[int] = []
        hwm = 0
        # Measure whole minutes after the first slot the daemon can see coming.
        start = time.time()
        first_slot = (int(start) // 60 + 1) * 60
        end = first_slot + minutes * 60

        reader = threading.Thread(target=_read, args=(proc, first_slot, end, lags,
                                                      start_lags, servers), daemon=True)
        reader.start()
        try:
            while time.time() < end + 30 and proc.poll() is None:
                now_rss, now_hwm = _rss_kib(proc.pid)
                rss.append(now_rss)
                hwm = max(hwm, now_hwm)
                time.sleep(0.5)
        finally:
            cpu = _cpu_s(proc.pid) + sum(_cpu_s(pid) for pid in servers)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=5)
        records = project.runs()
    expected = jobs * minutes
    return {
        "name": "daemon",
        "ran": True,
        "jobs": jobs,
        "minutes": minutes,
        "max_concurrent": max_concurrent,
        "launch": launch,
        "cpu_per_firing_ms": round(1000 * cpu / len(lags), 1) if lags else None,
        "firings_expected": expected,
        "firings_seen": len(lags),
        "lag_p50_s": round(percentile(lags, 0.5), 3) if lags else None,
        "lag_p99_s": round(percentile(lags, 0.99), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "starts_seen": len(start_lags),
        "start_lag_p50_s": round(percentile(start_lags, 0.5), 3) if start_lags else None,
        "start_lag_p99_s": round(percentile(start_lags, 0.99), 3) if start_lags else None,
        "rss_median_mib": round(median(rss) / 1024, 1) if rss else None,
        "rss_peak_mib": round(hwm / 1024, 1),
        "runs_recorded": len(records),
        "completed": sum(1 for r in records if r["status"] == "completed"),
        "met": bool(lags) and percentile(lags, 0.99) < 1.0 and len(lags) == expected
        and bool(start_lags) and percentile(start_lags, 0.99) < 2.0,
    }


def render(r: dict) -> str:
    rows = r.get("rows", [r])
    if not all(row.get("ran") for row in rows):
        return "Not run: " + "; ".join(row["why"] for row in rows if not row.get("ran")) + "."
    lines = [
        "| jobs | launch | minutes | firings seen / expected | firing lag p50 | p99 | max | "
        "child start lag p50 | p99 | CPU per firing | daemon RSS median | peak | "
        "runs completed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['jobs']} | {row['launch']} | {row['minutes']} | {row['firings_seen']} / "
            f"{row['firings_expected']} | {row['lag_p50_s']} s | {row['lag_p99_s']} s | "
            f"{row['lag_max_s']} s | {row.get('start_lag_p50_s')} s | "
            f"{row.get('start_lag_p99_s')} s | {row['cpu_per_firing_ms']} ms | "
            f"{row['rss_median_mib']} MiB | {row['rss_peak_mib']} MiB | "
            f"{row['completed']} of {row['runs_recorded']} |")
    lines += ["", "`--max-concurrent` = the number of jobs. Target (every firing seen, firing "
              "lag p99 under 1 s, child start lag p99 under 2 s): "
              + "; ".join(f"{row['jobs']} jobs {row['launch']}: "
                          f"{'met' if row['met'] else 'NOT met'}" for row in rows) + "."]
    return "\n".join(lines)


def run_all(sizes: tuple[int, ...] = (JOBS, 1000), minutes: int = MINUTES) -> dict:
    """The daemon at each size, runs forked by its fork server."""
    return {"name": "daemon", "rows": [run(jobs, minutes) for jobs in sizes]}
