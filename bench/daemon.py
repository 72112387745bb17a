"""Benchmark 5, the daemon: 200 jobs every minute for three minutes.

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


def run(jobs: int = JOBS, minutes: int = MINUTES, max_concurrent: int = JOBS) -> dict:
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
                                 str(max_concurrent)], cwd=project.root, env=project.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lags: list[float] = []
        start_lags: list[float] = []
        rss: list[int] = []
        hwm = 0
        # Measure whole minutes after the first slot the daemon can see coming.
        start = time.time()
        first_slot = (int(start) // 60 + 1) * 60
        end = first_slot + minutes * 60

        def read() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                seen = time.time()
                for pattern, into in ((FIRING, lags), (STARTED, start_lags)):
                    match = pattern.search(line)
                    if match:
                        slot = datetime.fromisoformat(match.group(2).replace("Z", "+00:00"))
                        if first_slot <= slot.timestamp() < end:
                            into.append(seen - slot.timestamp())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while time.time() < end + 30 and proc.poll() is None:
                now_rss, now_hwm = _rss_kib(proc.pid)
                rss.append(now_rss)
                hwm = max(hwm, now_hwm)
                time.sleep(0.5)
        finally:
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
        "met": bool(lags) and percentile(lags, 0.99) < 1.0 and len(lags) == expected,
    }


def render(r: dict) -> str:
    if not r.get("ran"):
        return f"Not run: {r['why']}."
    return "\n".join([
        "| jobs | minutes | firings seen / expected | firing lag p50 | p99 | max | "
        "child start lag p50 | p99 | daemon RSS median | daemon RSS peak | runs completed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['jobs']} | {r['minutes']} | {r['firings_seen']} / {r['firings_expected']} | "
        f"{r['lag_p50_s']} s | {r['lag_p99_s']} s | {r['lag_max_s']} s | "
        f"{r.get('start_lag_p50_s')} s | {r.get('start_lag_p99_s')} s | "
        f"{r['rss_median_mib']} MiB | {r['rss_peak_mib']} MiB | "
        f"{r['completed']} of {r['runs_recorded']} |",
        "",
        f"`--max-concurrent {r['max_concurrent']}`. Target (firing lag p99 under 1 s, every "
        f"firing seen): {'met' if r['met'] else 'NOT met'}.",
    ])
