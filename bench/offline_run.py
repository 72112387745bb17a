"""Benchmark 6, CPU per offline run: the example job (`daily-email`, on its replay script)
run to completion, as cron starts it and as the daemon starts it.

Contenders, interleaved, each on a fresh copy of the example project (its own state, so
every run sends its one email and rewrites the memory alike):
- `jobrunner run daily-email` of the baseline checkout (`--baseline DIR`): what a cron
  line and every daemon firing cost before the fork server;
- `jobrunner run daily-email` of this checkout: a cron line now;
- the same command line forked by the daemon's fork server (`scheduling.launcher`),
  what a daemon firing costs now (the server's one-time imports are not in it).
CPU is user + system of the run's process alone, from the kernel's rusage (for the forked
run, the server's `wait4`). Target: the daemon's run at most half the baseline's.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common import (
    BASELINE,
    REPO,
    baseline_commit,
    baseline_env,
    jobrunner_cmd,
    make_project,
    median,
    timed,
)

JOB = "daily-email"


def _example(base: Path, source: Path = REPO) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the example project of the checkout `source` (the baseline runs
    its own commit's example, which its code knows), with its own state folder."""
    project = make_project(base)
    for part in ("jobs", "memory", "data"):
        shutil.rmtree(project.root / part, ignore_errors=True)
        shutil.copytree(source / part, project.root / part,
                        ignore=shutil.ignore_patterns("__pycache__", "history"))
    settings = (source / "jobrunner.toml").read_text(encoding="utf-8")
    (project.root / "jobrunner.toml").write_text(f'state_dir = "{project.state}"\n' + settings)
    env = {k: v for k, v in project.env.items() if k != "ANTHROPIC_API_KEY"}
    return project.root, env


def _forked(server, root: Path, env: dict[str, str]) -> tuple[float, int]:
    """The run forked by a fork server: (CPU seconds, exit code)."""
    import os

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the server's child takes the caller's environment
    try:
        child = server.spawn(["--home", str(root), "run", JOB])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    child.wait_started()
    code = child.wait()
    return child.cpu or 0.0, code if code is not None else -1


def run(reps: int = 10) -> dict:
    from jobrunner.scheduling.launcher import ForkServer

    samples: dict[str, list[float]] = {}
    codes: dict[str, set[int]] = {}
    with tempfile.TemporaryDirectory(prefix="jr-bench-offline-") as tmp:
        server = ForkServer()
        try:
            for rep in range(reps + 1):  # the first round warms the page cache
                rounds: dict[str, tuple[float, int]] = {}
                old = None
                if BASELINE["dir"] is not None:
                    root, env = _example(Path(tmp) / f"base-{rep}", BASELINE["dir"])
                    old = baseline_env(env)
                if old is not None:
                    t = timed([*jobrunner_cmd(), "run", JOB], env=old, cwd=root)
                    rounds["baseline: jobrunner run (cron, every daemon firing)"] = \
                        (t.cpu, t.code)
                root, env = _example(Path(tmp) / f"cron-{rep}")
                t = timed([*jobrunner_cmd(), "run", JOB], env=env, cwd=root)
                rounds["jobrunner run (cron)"] = (t.cpu, t.code)
                root, env = _example(Path(tmp) / f"fork-{rep}")
                rounds["daemon firing (forked by the fork server)"] = _forked(server, root, env)
                if rep == 0:
                    continue
                for label, (cpu, code) in rounds.items():
                    samples.setdefault(label, []).append(cpu)
                    codes.setdefault(label, set()).add(code)
        finally:
            server.retire()
    base_label = next((k for k in samples if k.startswith("baseline")), None)
    base = median(samples[base_label]) if base_label else None
    # A comparison holds only between runs that did the same work: each completed.
    all_ok = all(codes[label] == {0} for label in samples)
    rows = [{"contender": label, "cpu_ms": round(median(v) * 1000, 1),
             "min_ms": round(min(v) * 1000, 1),
             "ratio": round(median(v) / base, 2) if base else None,
             "exit_codes": sorted(codes[label])} for label, v in samples.items()]
    fork = median(samples["daemon firing (forked by the fork server)"])
    return {
        "name": "CPU per offline run",
        "reps": reps,
        "baseline": baseline_commit(),
        "rows": rows,
        "target": "a daemon firing's run at most half the baseline's CPU",
        "all_completed": all_ok,
        "met": base is not None and all_ok and fork <= base / 2,
    }


def render(result: dict) -> str:
    lines = ["| how the run starts | CPU (median) | min | x baseline | exit codes |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        ratio = f"{r['ratio']}x" if r["ratio"] is not None else "-"
        lines.append(f"| {r['contender']} | {r['cpu_ms']} ms | {r['min_ms']} ms | {ratio} | "
                     f"{r['exit_codes']} |")
    lines.append("")
    base = f" (baseline: commit {result['baseline']})" if result["baseline"] else \
        " (no baseline given: `--baseline DIR`)"
    if not result.get("all_completed", True):
        lines.append("Not every run exited 0: these runs did not do the same work, so the "
                     "figures do not compare.")
    lines.append(f"{result['reps']} interleaved repetitions{base}. Target "
                 f"({result['target']}): {'met' if result['met'] else 'NOT met'}.")
    return "\n".join(lines)
