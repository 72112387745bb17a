"""Benchmark 4, lock contention: 50 `jobrunner run NAME` launched at once.

The fake server holds the first model call of whichever run took the lock until every
other launch has exited, so a late launch cannot find the lock free after a completed
run and a second session would only come from a broken lock. Reported: time until the 49
others have all exited, and sessions started (must be 1).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import jobrunner_cmd, make_project, percentile
from bench.sessions import FINISH_ARGS, MEMORY_ARGS
from tests.fake_api import FakeMessagesAPI, tool_turn

LAUNCHES = 50


def run(launches: int = LAUNCHES) -> dict:
    others_done = threading.Event()

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if not any(m["role"] == "assistant" for m in body["messages"]):
            others_done.wait(300)
            return tool_turn([("update_memory", MEMORY_ARGS)])
        return tool_turn([("finish", FINISH_ARGS)])

    with tempfile.TemporaryDirectory(prefix="jr-bench-lock-") as tmp, \
            FakeMessagesAPI() as api:
        api.responder = respond
        project = make_project(Path(tmp), api.url)
        project.job("contended")
        started = time.perf_counter()
        procs = [subprocess.Popen([*jobrunner_cmd(), "run", "contended"], cwd=project.root,
                                  env=project.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(launches)]
        exits: dict[int, float] = {}
        while len(exits) < launches - 1 and time.perf_counter() - started < 300:
            for i, proc in enumerate(procs):
                if i not in exits and proc.poll() is not None:
                    exits[i] = time.perf_counter() - started
            time.sleep(0.005)
        others_done.set()
        codes = [proc.wait(timeout=300) for proc in procs]
        total = time.perf_counter() - started
        records = project.runs("contended")
    sessions = [r for r in records if r["status"] != "skipped"]
    times = sorted(exits.values())
    return {
        "name": "lock contention",
        "launches": launches,
        "others_exited_s": round(times[-1], 2) if times else None,
        "others_p50_s": round(percentile(times, 0.5), 2) if times else None,
        "all_exited_s": round(total, 2),
        "sessions_started": len(sessions),
        "session_statuses": [r["status"] for r in sessions],
        "skipped": sum(1 for r in records if r["status"] == "skipped"),
        "exit_codes": sorted(set(codes)),
        "met": len(sessions) == 1,
    }


def render(r: dict) -> str:
    return "\n".join([
        "| launches | sessions started | skipped (recorded) | the 49 others exited by | "
        "their median exit | all exited (holder released) | exit codes |",
        "|---|---|---|---|---|---|---|",
        f"| {r['launches']} | {r['sessions_started']} ({', '.join(r['session_statuses'])}) | "
        f"{r['skipped']} | {r['others_exited_s']} s | {r['others_p50_s']} s | "
        f"{r['all_exited_s']} s | {r['exit_codes']} |",
        "",
        f"Target (exactly one session): {'met' if r['met'] else 'NOT met'}.",
    ])
