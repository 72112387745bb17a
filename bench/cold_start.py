"""Benchmark 1, cold start: what a cron tick costs when the job is already running.

`jobrunner run NAME` on a lock held by another live process (it must skip, exit 0) and
`jobrunner --help`, against `python -c pass` (same interpreter) and `flock -n` on the
same lock file. Targets: the held-lock run at most 5x the bare interpreter (an unchanged
job takes its lock on its fingerprint, before any model is built), `--help` under 4x.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import jobrunner_cmd, make_project, median, timed

RUN_RATIO = 5.0  # a skipped run: at most this many bare interpreters
HELP_RATIO = 4.0  # cold `--help`: under this many

# Holds the job's lock as a real run would (OS lock + metadata), until stdin closes.
HOLDER = """
import sys
from pathlib import Path
from jobrunner.locks.file import RunLock, Acquired
lock = RunLock(Path(sys.argv[1]), "job-" + sys.argv[2])
assert isinstance(lock.try_acquire(), Acquired)
lock.mark_held("bench-holder", sys.argv[2], trigger="manual")
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def run(reps: int = 20) -> dict:
    with tempfile.TemporaryDirectory(prefix="jr-bench-cold-") as tmp:
        project = make_project(Path(tmp))
        project.job("tick")
        locks = project.state / "locks"
        locks.mkdir(parents=True)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(locks), "tick"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            if holder.stdout.readline().strip() != "held":  # type: ignore[union-attr]
                raise RuntimeError("bench: the lock holder did not start")
            lock_file = locks / "job-tick.lock"
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "jobrunner run NAME (lock held)": [*jobrunner_cmd(), "run", "tick"],
                "jobrunner --help": [*jobrunner_cmd(), "--help"],
            }
            flock = shutil.which("flock")
            if flock:
                commands["flock -n (lock held)"] = [flock, "-n", str(lock_file), "true"]
            samples: dict[str, list[float]] = {k: [] for k in commands}
            codes: dict[str, set[int]] = {k: set() for k in commands}
            for _ in range(2):  # warm the page cache, as a cron host would have it
                for cmd in commands.values():
                    timed(cmd, env=project.env, cwd=project.root)
            for _ in range(reps):  # interleaved, so drift hits every command alike
                for label, cmd in commands.items():
                    result = timed(cmd, env=project.env, cwd=project.root)
                    samples[label].append(result.wall)
                    codes[label].add(result.code)
            skipped = [r for r in project.runs("tick") if r["status"] == "skipped"]
        finally:
            holder.stdin.close()  # type: ignore[union-attr]
            holder.wait(timeout=30)
    base = median(samples["python -c pass"])
    rows = []
    for label, values in samples.items():
        rows.append({"command": label, "median_ms": round(median(values) * 1000, 1),
                     "min_ms": round(min(values) * 1000, 1),
                     "ratio": round(median(values) / base, 1), "exit_codes": sorted(codes[label])})
    by = {r["command"]: r for r in rows}
    run_ratio = by["jobrunner run NAME (lock held)"]["ratio"]
    help_ratio = by["jobrunner --help"]["ratio"]
    return {
        "name": "cold start",
        "reps": reps,
        "rows": rows,
        "skipped_runs_recorded": len(skipped),
        "run_exit_ok": by["jobrunner run NAME (lock held)"]["exit_codes"] == [0],
        "target": f"held-lock run at most {RUN_RATIO:g}x and --help under {HELP_RATIO:g}x "
                  "python -c pass",
        "run_met": run_ratio <= RUN_RATIO,
        "help_met": help_ratio < HELP_RATIO,
        "met": run_ratio <= RUN_RATIO and help_ratio < HELP_RATIO,
    }


def render(result: dict) -> str:
    lines = ["| command | median | min | x bare python | exit codes |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| `{r['command']}` | {r['median_ms']} ms | {r['min_ms']} ms | "
                     f"{r['ratio']}x | {r['exit_codes']} |")
    lines.append("")
    lines.append(f"{result['reps']} interleaved repetitions; every held-lock run exited "
                 f"{'0 and was recorded skipped' if result['run_exit_ok'] else 'NOT 0'} "
                 f"({result['skipped_runs_recorded']} skipped runs recorded). "
                 f"Target ({result['target']}): run {'met' if result['run_met'] else 'NOT met'}, "
                 f"--help {'met' if result['help_met'] else 'NOT met'}.")
    return "\n".join(lines)
