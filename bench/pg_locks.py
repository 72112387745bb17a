"""Lock take and release: the PostgreSQL advisory lock against the file lock, in one run.

    .venv/bin/python -m bench.pg_locks            # 300 rounds of each
    .venv/bin/python -m bench.pg_locks --reps 50

One round is what a run does with its job lock: `try_acquire()`, `mark_held(...)`,
`release()`. The file lock is `jobrunner.locks.file.RunLock` in a temporary folder; the
PostgreSQL one is `PostgresLock` on a real server this script starts (as the tests do),
over its unix socket and over TCP on 127.0.0.1 with a password. Each PostgreSQL round
opens the lock's own connection (a lock never comes from a pool), which is most of its
cost. Rounds alternate between the three so drift of the machine hits all alike.
Printed: median and 95th percentile per round, and each median's ratio to the file lock's.

Then a skipped run: `jobrunner run NAME` while a live run holds the job's lock, on the
embedded state and on the PostgreSQL state (unix socket), interleaved, as whole processes:
what a cron tick costs that finds the job already running.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import median, percentile
from jobrunner.locks.file import Acquired, RunLock
from jobrunner.redact import Redactor
from jobrunner.state.postgres import PostgresState
from tests.pg_server import PgServer


def _round(make: Callable[[], object]) -> float:
    lock = make()
    started = time.perf_counter()
    got = lock.try_acquire()  # type: ignore[attr-defined]
    if not isinstance(got, Acquired):
        raise SystemExit(f"bench: the lock was busy: {got}")
    lock.mark_held("run-bench", "bench", trigger="bench")  # type: ignore[attr-defined]
    lock.release()  # type: ignore[attr-defined]
    return time.perf_counter() - started


def run(reps: int = 300) -> dict[str, dict[str, float]]:
    # The server's folder is its own: it belongs to the unprivileged user when run as root.
    with tempfile.TemporaryDirectory(prefix="jr-bench-pglock-") as tmp, \
            tempfile.TemporaryDirectory(prefix="jr-bench-pg-") as pg_dir:
        server = PgServer(Path(pg_dir)).start()
        try:
            dbname = server.create_database()
            os.environ["JR_BENCH_PG_PASSWORD"] = "jobrunner-test-pw"
            socket_state = PostgresState(server.url(dbname), Redactor([]), project="bench")
            tcp_state = PostgresState(server.tcp_url(dbname), Redactor([]), project="bench",
                                      password_env="JR_BENCH_PG_PASSWORD")
            locks = Path(tmp) / "locks"
            kinds: dict[str, Callable[[], object]] = {
                "file (RunLock)": lambda: RunLock(locks, "job-bench"),
                "postgres, unix socket": lambda: socket_state.lock("job-bench"),
                "postgres, TCP + password": lambda: tcp_state.lock("job-bench"),
            }
            for make in kinds.values():  # warm: imports, first connection, first record
                _round(make)
            times: dict[str, list[float]] = {name: [] for name in kinds}
            for _ in range(reps):
                for name, make in kinds.items():
                    times[name].append(_round(make))
            socket_state.close()
            tcp_state.close()
        finally:
            server.stop()
    base = median(times["file (RunLock)"])
    return {name: {"median_ms": median(t) * 1000, "p95_ms": percentile(t, 0.95) * 1000,
                   "ratio": median(t) / base} for name, t in times.items()}


JOB = 'schedule = "0 8 * * *"\ntimezone = "UTC"\nmodel = "replay:jobs/x.json"\nprompt = "x"\n'


def skipped_runs(reps: int = 15) -> dict[str, dict[str, float]]:
    """`jobrunner run slow` on a held lock, embedded state against PostgreSQL."""
    from bench.common import jobrunner_cmd, timed

    with tempfile.TemporaryDirectory(prefix="jr-bench-pgskip-") as tmp, \
            tempfile.TemporaryDirectory(prefix="jr-bench-pg-") as pg_dir:
        server = PgServer(Path(pg_dir)).start()
        try:
            url = server.url(server.create_database())
            projects = {}
            for name, extra in (("embedded (SQLite, file lock)", ""),
                                ("postgres (advisory lock)", f'state_url = "{url}"\n')):
                root = Path(tmp) / name.split()[0] / "proj"
                (root / "jobs").mkdir(parents=True)
                (root / "jobs" / "slow.toml").write_text(JOB)
                (root / "jobs" / "x.json").write_text('{"turns": []}')
                (root / "jobrunner.toml").write_text(
                    f'state_dir = "{root.parent / "state"}"\n{extra}')
                projects[name] = root
            held = []
            for root in projects.values():  # a live holder: this process
                from jobrunner.config.project import Project

                lock = Project(root).store().lock("job-slow")
                assert isinstance(lock.try_acquire(), Acquired)
                lock.mark_held("run-bench-holder", "slow")
                held.append(lock)
            env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
            times: dict[str, list[float]] = {name: [] for name in projects}
            for _ in range(reps):
                for name, root in projects.items():
                    done = timed([*jobrunner_cmd(), "--home", str(root), "run", "slow"],
                                 env=env)
                    if done.code != 0:
                        raise SystemExit(f"bench: the skipped run exited {done.code}")
                    times[name].append(done.wall)
            for lock in held:
                lock.release()
        finally:
            server.stop()
    base = median(times["embedded (SQLite, file lock)"])
    return {name: {"median_ms": median(t) * 1000, "p95_ms": percentile(t, 0.95) * 1000,
                   "ratio": median(t) / base} for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_locks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args(argv)
    results = run(args.reps)
    print(f"lock take + mark_held + release, {args.reps} rounds each")
    print(f"{'lock':<28}{'median ms':>11}{'p95 ms':>10}{'× file':>9}")
    for name, r in results.items():
        print(f"{name:<28}{r['median_ms']:>11.3f}{r['p95_ms']:>10.3f}{r['ratio']:>9.1f}")
    skipped = skipped_runs()
    print("\n`jobrunner run NAME` on a held lock, 15 interleaved runs each")
    print(f"{'state':<32}{'median ms':>11}{'p95 ms':>10}{'× embedded':>12}")
    for name, r in skipped.items():
        print(f"{name:<32}{r['median_ms']:>11.1f}{r['p95_ms']:>10.1f}{r['ratio']:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
