"""Run every benchmark, print the figures, and write them to bench/results.json and into
bench/README.md (between its results markers).

    .venv/bin/python -m bench                 # all five (about ten minutes on 2 cores)
    .venv/bin/python -m bench --only cold_start --only contention
    .venv/bin/python -m bench --quick         # fewer repetitions, no README update
"""

from __future__ import annotations

import argparse
import compileall
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import cold_start, contention, daemon, offline_run, step_overhead, tokens
from bench.common import BASELINE, REPO, machine

HERE = Path(__file__).resolve().parent
START, END = "<!-- results:start -->", "<!-- results:end -->"

BENCHES = {
    "cold_start": ("1. Cold start", cold_start, {"reps": 20}, {"reps": 5}),
    "step_overhead": ("2. Per-step overhead", step_overhead, {"reps": 3}, {"reps": 1}),
    "tokens": ("3. Token and cost growth", tokens, {}, {}),
    "contention": ("4. Lock contention", contention, {}, {}),
    "daemon": ("5. Daemon", daemon, {}, {"sizes": (20,), "minutes": 1}),
    "offline_run": ("6. CPU per offline run", offline_run, {"reps": 10}, {"reps": 2}),
}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(BENCHES), default=[])
    parser.add_argument("--skip", action="append", choices=sorted(BENCHES), default=[])
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a checkout of the commit to compare with (e.g. `git worktree "
                             "add /tmp/base COMMIT`): benchmarks that compare with an earlier "
                             "commit run its code with this interpreter and libraries")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions; figures are printed but README is not updated")
    args = parser.parse_args(argv)
    if args.baseline is not None:
        BASELINE["dir"] = args.baseline.resolve()
    chosen = [k for k in BENCHES if (not args.only or k in args.only) and k not in args.skip]
    # Measure the package as an install has it: with its bytecode compiled. Where
    # PYTHONDONTWRITEBYTECODE is set (some CI images) an editable install never caches
    # it, and every process would compile jobrunner's modules again (~70 ms of CPU).
    compileall.compile_dir(REPO / "jobrunner", quiet=1)
    host = machine()
    header = (f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {_commit()} on "
              f"{host['nproc']} CPUs ({host['cpu']}), Python {host['python']}, "
              f"{host['system']}, jobrunner's bytecode compiled.")
    print(header, flush=True)
    results: dict[str, dict] = {}
    sections = [header, ""]
    for key in chosen:
        title, module, full, quick = BENCHES[key]
        print(f"\n## {title}", flush=True)
        started = time.perf_counter()
        try:
            runner = getattr(module, "run_all", module.run)  # the daemon: at each size
            result = runner(**(quick if args.quick else full))
            text = module.render(result)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            result = {"name": key, "error": f"{type(exc).__name__}: {exc}"}
            text = f"FAILED: {result['error']}"
        result["seconds"] = round(time.perf_counter() - started, 1)
        results[key] = result
        print(text, flush=True)
        sections += [f"### {title}", "", text, ""]
    (HERE / "results.json").write_text(
        json.dumps({"machine": host, "header": header, "results": results}, indent=2) + "\n")
    if not args.quick and not args.only and not args.skip:
        readme = HERE / "README.md"
        text = readme.read_text(encoding="utf-8")
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        readme.write_text(before + START + "\n" + "\n".join(sections).rstrip() + "\n" + END
                          + after, encoding="utf-8")
        print(f"\nwrote {readme.relative_to(REPO)}")
    failed = [k for k, r in results.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
