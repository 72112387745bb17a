"""Benchmark 2, per-step overhead: a 200-step scripted session through jobrunner (guards,
trace, run records, ledger for the side-effecting tool) against the naive loop, same SDK,
same server. Target: under 10% more wall time and under 2 ms more CPU per step.

CPU is the child process's own (the fake server's work is in this process and counted for
neither). The per-step figures are marginal: (200-step - 20-step) / 180, so interpreter
start-up and imports, paid once per run, do not hide in them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import make_project, median
from bench.sessions import prepare, run_jobrunner, run_naive
from tests.fake_api import FakeMessagesAPI

LONG, SHORT = 200, 20


def run(reps: int = 3) -> dict:
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="jr-bench-steps-") as tmp, \
            FakeMessagesAPI() as api:
        project = make_project(Path(tmp), api.url)
        for steps in (SHORT, LONG):
            prepare(project, f"steps-{steps}", "tick", steps)
        for _ in range(reps):
            for steps in (SHORT, LONG):
                jr, _ = run_jobrunner(api, project, f"steps-{steps}", "tick", steps)
                nv, _ = run_naive(api, project, "tick", steps)
                samples.setdefault(("jobrunner", steps), []).append((jr.wall, jr.cpu))
                samples.setdefault(("naive", steps), []).append((nv.wall, nv.cpu))
    med = {k: (median([w for w, _ in v]), median([c for _, c in v])) for k, v in samples.items()}
    span = LONG - SHORT

    def per_step(who: str, index: int) -> float:
        return (med[(who, LONG)][index] - med[(who, SHORT)][index]) / span

    wall_ratio = med[("jobrunner", LONG)][0] / med[("naive", LONG)][0]
    extra_cpu_ms = (per_step("jobrunner", 1) - per_step("naive", 1)) * 1000
    extra_wall_ms = (per_step("jobrunner", 0) - per_step("naive", 0)) * 1000
    step_wall_ratio = per_step("jobrunner", 0) / per_step("naive", 0)
    return {
        "name": "per-step overhead",
        "reps": reps,
        "medians": {f"{who} {steps} steps": {"wall_s": round(w, 3), "cpu_s": round(c, 3)}
                    for (who, steps), (w, c) in sorted(med.items())},
        "session_wall_ratio": round(wall_ratio, 3),
        "per_step_wall_ms": {who: round(per_step(who, 0) * 1000, 2)
                             for who in ("jobrunner", "naive")},
        "per_step_cpu_ms": {who: round(per_step(who, 1) * 1000, 2)
                            for who in ("jobrunner", "naive")},
        "extra_wall_ms_per_step": round(extra_wall_ms, 2),
        "per_step_wall_ratio": round(step_wall_ratio, 3),
        "extra_cpu_ms_per_step": round(extra_cpu_ms, 2),
        "target": "under 10% more wall time, under 2 ms more CPU per step",
        "met_wall": wall_ratio <= 1.10,
        "met_cpu": extra_cpu_ms < 2.0,
    }


def render(r: dict) -> str:
    lines = ["| contender | steps | wall (median) | CPU (median) |", "|---|---|---|---|"]
    for label, m in r["medians"].items():
        who, steps, _ = label.split(" ")
        lines.append(f"| {who} | {steps} | {m['wall_s']} s | {m['cpu_s']} s |")
    lines += [
        "",
        "| per step (marginal, 20→200 steps) | jobrunner | naive loop | difference |",
        "|---|---|---|---|",
        f"| wall | {r['per_step_wall_ms']['jobrunner']} ms | {r['per_step_wall_ms']['naive']} ms "
        f"| {r['extra_wall_ms_per_step']:+} ms ({r['per_step_wall_ratio']}x) |",
        f"| CPU | {r['per_step_cpu_ms']['jobrunner']} ms | {r['per_step_cpu_ms']['naive']} ms "
        f"| {r['extra_cpu_ms_per_step']:+} ms |",
        "",
        f"Whole 200-step session, wall: jobrunner / naive = {r['session_wall_ratio']}x. "
        f"Target ({r['target']}): wall {'met' if r['met_wall'] else 'NOT met'}, "
        f"CPU {'met' if r['met_cpu'] else 'NOT met'}. {r['reps']} repetitions each.",
    ]
    return "\n".join(lines)
