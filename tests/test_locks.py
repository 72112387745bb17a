"""Locks with real processes: 50 at once, kill -9, stale holders, terminate, hold, unlock."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import reaped, wait_for
from tests.fake_api import tool_turn
from tests.turns import ending

HOLD_TOOL = '''
import os
import pathlib
import time
from jobrunner import tool
@tool(risk="low", side_effect=False, timeout=300)
def hold(marker: str) -> str:
    """Record that a session started, then wait until the test releases it."""
    root = pathlib.Path(os.environ["HOLD_DIR"])
    with open(root / "sessions.txt", "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    for _ in range(3000):
        if (root / "release").exists():
            return "released"
        time.sleep(0.1)
    return "never released"
'''


@pytest.fixture
def holding(project, tmp_path):
    """A project with a job `hold` whose session blocks in a tool until released."""
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    project.env["HOLD_DIR"] = str(hold_dir)
    project.tool_file("hold", HOLD_TOOL)
    project.hold_dir = hold_dir
    project.sessions = lambda: (hold_dir / "sessions.txt").read_text().split() \
        if (hold_dir / "sessions.txt").exists() else []
    project.release = lambda: (hold_dir / "release").write_text("go")
    return project


def session_turns(hold: bool = True):
    turns = [tool_turn([("hold", {"marker": "x"})])] if hold else []
    return [*turns, *ending()]


@pytest.mark.parametrize("attempt", range(3))
def test_fifty_simultaneous_runs_make_one_session(holding, fake_api, attempt):
    holding.job("busy", tools=["hold"])
    fake_api.enqueue(*session_turns())
    procs = [holding.popen("run", "busy") for _ in range(50)]
    try:
        # 49 are skipped at once; the one session waits in its tool until they are all done.
        wait_for(lambda: sum(p.poll() is not None for p in procs) >= 49, 240, what="49 exits")
        [lock] = holding.run("locks", "--json").json()
        [running] = [r for r in holding.runs("busy") if r["status"] == "running"]
        assert (lock["state"], lock["run_id"]) == ("held", running["id"])
        holding.release()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0] * 50, [r[1] for r in results if r[1]]
    assert all(out == "" for out, _ in results)
    assert len(holding.sessions()) == 1
    assert len(fake_api.message_requests) == 3  # one session: hold, update_memory, finish
    statuses = [r["status"] for r in holding.runs("busy")]
    assert statuses.count("completed") == 1 and statuses.count("skipped") == 49


def _has_open(pid: int, path) -> bool:
    """Whether process `pid` has `path` open (it is trying to take that lock)."""
    try:
        return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path.resolve())
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_a_run_waits_out_an_instants_hold_by_locks_or_check(project, fake_api):
    """`locks` and `check` test liveness by taking the OS lock for an instant. A run that
    starts in that instant must not be skipped for it: the lock's record names no live
    run, so it waits a moment and runs."""
    from jobrunner.locks.file import Acquired, RunLock

    project.job("tick")
    project.run("locks")  # creates the lock files
    lock_path = project.state / "locks" / "job-tick.lock"
    fake_api.enqueue(*ending())
    inspector = RunLock(lock_path.parent, "job-tick")  # what `locks` does, held longer
    assert isinstance(inspector.try_acquire(), Acquired)
    try:
        proc = project.popen("run", "tick")
        wait_for(lambda: _has_open(proc.pid, lock_path) or proc.poll() is not None, 30,
                 what="the run to reach the lock")
        time.sleep(0.1)  # its first, non-blocking attempt has failed by now
    finally:
        inspector.release(keep_meta=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    [record] = project.runs("tick")
    assert record["status"] == "completed", record


def test_kill_9_mid_tool_is_recorded_crashed_once_and_the_next_run_runs(holding, fake_api):
    holding.job("fragile", tools=["hold"])
    fake_api.enqueue(tool_turn([("hold", {"marker": "x"})]))
    victim = holding.popen("run", "fragile")
    wait_for(holding.sessions, what="the session to reach its tool")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)

    locks = holding.run("locks", "--json").json()
    assert [(lk["job"], lk["state"]) for lk in locks] == [("fragile", "crashed")]

    for _ in range(2):
        fake_api.enqueue(*session_turns(hold=False))
        ran = holding.run("run", "fragile")
        assert ran.code == 0, ran.stderr
    runs = holding.runs("fragile")
    assert [r["status"] for r in runs] == ["completed", "completed", "crashed"]
    assert runs[2]["stop_reason"] == "process_died"
    crashed = [a for a in holding.alerts() if a["event"] == "run.crashed"]
    assert len(crashed) == 1 and crashed[0]["run_id"] == runs[2]["id"]
    assert holding.run("locks", "--json").json()[0]["state"] == "free"


def test_a_run_past_stale_after_alerts_once_and_later_runs_exit_75(holding, fake_api):
    holding.job("slow", '[lock]\nstale_after = "2s"\n', tools=["hold"])
    fake_api.enqueue(*session_turns())
    holder = holding.popen("run", "slow")
    try:
        wait_for(holding.sessions, what="the session to reach its tool")
        wait_for(lambda: holding.run("locks", "--json").json()[0]["state"] == "stale", 30,
                 what="the lock to turn stale", interval=0.25)
        refused = holding.run("unlock", "slow")
        assert refused.code == 1 and "not unlocked" in refused.stderr
        for _ in range(3):  # three cron ticks
            tick = holding.run("run", "slow")
            assert tick.code == 75
            assert "longer than lock.stale_after" in tick.stderr
        checked = holding.run("check")
        assert checked.code == 1 and "stale:" in checked.stdout
        stale = [a for a in holding.alerts() if a["event"] == "lock.stale"]
        assert len(stale) == 1
        assert len(holding.sessions()) == 1  # nothing ran beside the holder
    finally:
        holding.release()
        out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    runs = holding.runs("slow")
    assert [r["stop_reason"] for r in runs if r["status"] == "skipped"] == ["lock_stale"] * 3
    assert holding.run("locks", "--json").json()[0]["state"] == "free"


def test_on_stale_terminate_stops_the_holder_and_runs(holding, fake_api):
    holding.job("hung", '[lock]\nstale_after = "1s"\non_stale = "terminate"\n'
                'terminate_grace = "5s"\n', tools=["hold"])
    fake_api.enqueue(tool_turn([("hold", {"marker": "x"})]))
    holder = holding.popen("run", "hung")
    try:
        wait_for(holding.sessions, what="the session to reach its tool")
        wait_for(lambda: holding.run("locks", "--json").json()[0]["state"] == "stale", 30,
                 what="the lock to turn stale", interval=0.25)
        fake_api.enqueue(*session_turns(hold=False))
        ran = holding.run("run", "hung")
        assert ran.code == 0, ran.stderr
        holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode is not None
    runs = holding.runs("hung")
    assert [r["status"] for r in runs] == ["completed", "crashed"]
    assert runs[1]["stop_reason"] == "stale_terminated"
    assert [a["event"] for a in holding.alerts()].count("lock.stale") == 1


def test_check_stops_a_stale_holder_under_terminate(holding, fake_api):
    """A daily job that hangs is not left hung until tomorrow's tick: the watchdog stops it."""
    holding.job("daily", '[lock]\nstale_after = "1s"\non_stale = "terminate"\n'
                'terminate_grace = "5s"\n', schedule="0 6 * * *", tools=["hold"])
    fake_api.enqueue(tool_turn([("hold", {"marker": "x"})]))
    holder = holding.popen("run", "daily")
    try:
        wait_for(holding.sessions, what="the session to reach its tool")
        wait_for(lambda: holding.run("locks", "--json").json()[0]["state"] == "stale", 30,
                 what="the lock to turn stale", interval=0.25)
        checked = holding.run("check")
        assert checked.code == 1
        assert "stopped it and recorded it crashed" in checked.stdout, checked.stdout
        holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode is not None
    [run] = holding.runs("daily")
    assert run["status"] == "crashed" and run["stop_reason"] == "stale_terminated"
    assert holding.run("locks", "--json").json()[0]["state"] == "free"
    assert [a["event"] for a in holding.alerts()].count("lock.stale") == 1
    # The next run starts normally, and a second check finds nothing left to do.
    fake_api.enqueue(*session_turns(hold=False))
    ran = holding.run("run", "daily")
    assert ran.code == 0, ran.stderr
    assert "stale" not in holding.run("check").stdout


def test_after_crash_hold_refuses_until_unlock(holding, fake_api):
    holding.job("careful", '[lock]\nafter_crash = "hold"\n', tools=["hold"])
    fake_api.enqueue(tool_turn([("hold", {"marker": "x"})]))
    victim = holding.popen("run", "careful")
    wait_for(holding.sessions, what="the session to reach its tool")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    requests = len(fake_api.message_requests)
    for _ in range(2):
        refused = holding.run("run", "careful")
        assert refused.code == 75 and "jobrunner unlock careful" in refused.stderr
    assert len(fake_api.message_requests) == requests
    assert [a["event"] for a in holding.alerts()] == ["run.crashed"]
    assert holding.run("locks", "--json").json()[0]["state"] == "crashed"
    checked = holding.run("check", "--json")
    assert checked.code == 1
    assert [f["kind"] for f in checked.json()["findings"]] == ["held"]

    unlocked = holding.run("unlock", "careful")
    assert unlocked.code == 0 and "cleared" in unlocked.stdout
    fake_api.enqueue(*session_turns(hold=False))
    assert holding.run("run", "careful").code == 0
    assert [r["status"] for r in holding.runs("careful")] == [
        "completed", "skipped", "skipped", "crashed"]


FORK_TOOL = '''
import multiprocessing
import os
import pathlib
import time
from jobrunner import tool


def _linger(pid_file: str) -> None:
    """What a tool's helper process does: outlive the tool, quietly."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    pathlib.Path(pid_file).write_text(str(os.getpid()))
    time.sleep(300)


@tool(risk="low", side_effect=False, timeout=300)
def spawn(how: str) -> str:
    """Start a helper process that outlives this call, then wait until released."""
    root = pathlib.Path(os.environ["HOLD_DIR"])
    pid_file = str(root / "child.pid")
    if how == "fork":
        if os.fork() == 0:
            try:
                _linger(pid_file)
            finally:
                os._exit(0)
    else:
        multiprocessing.get_context("fork").Process(target=_linger, args=(pid_file,)).start()
    while not pathlib.Path(pid_file).exists():
        time.sleep(0.05)
    with open(root / "sessions.txt", "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    for _ in range(3000):
        if (root / "release").exists():
            return "released"
        time.sleep(0.1)
    return "never released"
'''


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody has reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["fork", "multiprocessing"])
def test_a_process_left_by_a_tool_does_not_keep_the_lock_of_a_killed_run(holding, fake_api,
                                                                         how):
    """A tool's child shares the run's open lock file; after kill -9 of the run it must
    not keep the job locked: the run is recorded crashed, alerted once, and the next runs
    run."""
    holding.tool_file("spawn", FORK_TOOL)
    holding.job("forker", tools=["spawn"])
    fake_api.enqueue(tool_turn([("spawn", {"how": how})]))
    victim = holding.popen("run", "forker")
    child = None
    try:
        wait_for(holding.sessions, what="the session to start its helper process")
        child = int((holding.hold_dir / "child.pid").read_text())
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
        assert _alive(child), "the helper process should outlive the killed run"

        [lock] = holding.run("locks", "--json").json()
        assert lock["state"] == "crashed", lock
        for _ in range(2):
            fake_api.enqueue(*session_turns(hold=False))
            ran = holding.run("run", "forker")
            assert ran.code == 0, ran.stderr
    finally:
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
        if victim.poll() is None:
            victim.kill()
    runs = holding.runs("forker")
    assert [r["status"] for r in runs] == ["completed", "completed", "crashed"]
    crashed = [a for a in holding.alerts() if a["event"] == "run.crashed"]
    assert len(crashed) == 1 and crashed[0]["run_id"] == runs[2]["id"]
    assert f"run {runs[2]['id']} crashed" in holding.memory("forker")


STRAY_HOLDER = '''
import fcntl
import sys
import time

with open(sys.argv[1], "a") as handle:
    fcntl.lockf(handle, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(300)
'''


def test_a_dead_holder_whose_lock_another_process_keeps_is_a_crash_not_a_skip(holding,
                                                                               fake_api):
    """Whatever process keeps the lock of a run killed with -9, the run is recorded
    crashed and alerted once, and the runs that cannot start say so (exit 75), as does
    `check`; once that process lets go, the job runs again."""
    import subprocess
    import sys

    holding.job("stuck", tools=["hold"])
    fake_api.enqueue(tool_turn([("hold", {"marker": "x"})]))
    victim = holding.popen("run", "stuck")
    wait_for(holding.sessions, what="the session to reach its tool")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    lock_path = holding.state / "locks" / "job-stuck.lock"
    stray = subprocess.Popen([sys.executable, "-c", STRAY_HOLDER, str(lock_path)],
                             stdout=subprocess.PIPE, text=True)
    with reaped(stray):
        assert stray.stdout.readline().strip() == "locked"
        for _ in range(2):
            refused = holding.run("run", "stuck")
            assert refused.code == 75, refused.stderr
            assert "still held by another process" in refused.stderr
        [dead] = [r for r in holding.runs("stuck") if r["status"] == "crashed"]
        assert holding.run("locks", "--json").json()[0]["state"] == "crashed"
        checked = holding.run("check", "--json")
        assert checked.code == 1
        assert [f["kind"] for f in checked.json()["findings"]] == ["crashed"]
    fake_api.enqueue(*session_turns(hold=False))
    ran = holding.run("run", "stuck")
    assert ran.code == 0, ran.stderr
    runs = holding.runs("stuck")
    assert [(r["status"], r["stop_reason"]) for r in runs] == [
        ("completed", "finish"), ("skipped", "lock_orphaned"), ("skipped", "lock_orphaned"),
        ("crashed", "process_died")]
    assert [(a["event"], a["run_id"]) for a in holding.alerts()] == [
        ("run.crashed", dead["id"]), ("run.recovered", runs[0]["id"])]
    assert holding.memory("stuck").count(f"run {dead['id']} crashed") == 1


TRY_LOCK = '''
import fcntl
import sys

with open(sys.argv[1], "a") as handle:
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("busy")
    else:
        print("taken")
'''


def test_one_process_never_takes_its_own_lock_twice(tmp_path):
    """Record locks are per process: a second lock of one file in the same process must
    find it busy without touching the file, since closing any descriptor of the file would
    drop the first one's lock for every other process too."""
    import subprocess
    import sys

    from jobrunner.locks.file import Acquired, Busy, RunLock

    def seen_from_outside() -> str:
        return subprocess.run([sys.executable, "-c", TRY_LOCK, str(tmp_path / "job-x.lock")],
                              capture_output=True, text=True, check=True).stdout.strip()

    first, second = RunLock(tmp_path, "job-x"), RunLock(tmp_path, "job-x")
    assert isinstance(first.try_acquire(), Acquired)
    assert not os.get_inheritable(first._lock.fh.fileno())  # close-on-exec
    assert isinstance(second.try_acquire(), Busy)
    assert isinstance(second.try_acquire(timeout=0.2), Busy)
    assert seen_from_outside() == "busy"
    first.release()
    assert seen_from_outside() == "taken"
    assert isinstance(second.try_acquire(), Acquired)
    second.release()


def test_a_run_whose_end_nothing_recorded_is_settled_not_guessed_a_crash(holding, fake_api):
    """A run left `running` with no holder record (a full disk made its release remove
    it) and no end in its trace: the next run records its outcome as unknown (`aborted`,
    `end_not_recorded`), not as a crash, and runs."""
    holding.job("lost", tools=["hold"])
    fake_api.enqueue(tool_turn([("hold", {"marker": "x"})]))
    victim = holding.popen("run", "lost")
    wait_for(holding.sessions, what="the session to reach its tool")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    (holding.state / "locks" / "job-lost.json").unlink()  # what a release on a full disk does
    fake_api.enqueue(*session_turns(hold=False))
    ran = holding.run("run", "lost")
    assert ran.code == 0, ran.stderr
    runs = holding.runs("lost")
    assert [(r["status"], r["stop_reason"]) for r in runs] == [
        ("completed", "finish"), ("aborted", "end_not_recorded")]
    assert "outcome is unknown" in runs[1]["report"]
    assert "run.crashed" not in [a["event"] for a in holding.alerts()]
    assert "crashed" not in holding.memory("lost")
