"""The one function that runs a job: validated job → lock → memory → session → memory
rewrite → record, trace, alerts → release. Every way it can end is an `Ending`, mapped
once by `outcome.conclude`."""

from __future__ import annotations

import contextlib
import secrets
import signal
import traceback
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner.clock import iso, utcnow
from jobrunner.config import checked
from jobrunner.config.jobs import environment_problems, load_job
from jobrunner.config.project import Project
from jobrunner.events import Status, StopReason
from jobrunner.formats.names import JOB_NAME
from jobrunner.locks.file import (
    Acquired,
    Busy,
    HeartbeatThread,
    heartbeat_interval,
    held_by_live_run,
    holder_died,
    is_stale,
)
from jobrunner.run.agent import LOST, TERM_ARMED, Terminated, day_start, with_agent
from jobrunner.run.ending import Ending
from jobrunner.run.outcome import RunContext, RunOutcome, conclude
from jobrunner.state.records import RunRecord

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job
    from jobrunner.effects.gate import GateFactory
    from jobrunner.models import ModelClient

__all__ = ["RunOutcome", "new_run_id", "run_job"]



def new_run_id(now: datetime | None = None) -> str:
    """Sortable and short: `20261121T080000-3f9a1c`."""
    moment = now or utcnow()
    return f"{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def run_job(project: Project, name: str, trigger: str = "manual",
            slot: datetime | None = None, now: datetime | None = None,
            run_id: str | None = None, model: str | None = None,
            gate: GateFactory | None = None,
            client: ModelClient | None = None) -> RunOutcome:
    """Run one session of job `name` now, under its lock. Raises ConfigError (nothing run
    or written) for a bad job or a missing key; every other outcome is recorded and
    returned. `run_id` is the id to record it under (default: a new one), for a caller
    that follows the run's trace while it runs. `jobrunner test` gives `model` (a replay
    script instead of the job's own) and its `gate`. `client` replaces the one the job's
    `model` names (an embedding program's own model client, or a scripted one).

    A job whose inputs are unchanged since a run validated them (`config.checked`) takes
    its lock on the brief that run recorded, and is validated in full once this run
    holds the lock (a run skipped on a held lock builds no model); any other job is
    validated in full first."""
    from jobrunner.memory.paths import refuse_symlinks

    job, brief, stamp = _job_or_brief(project, name, model)
    missing = environment_problems(project, job or brief)
    if missing:  # an operator's problem: nothing is recorded, paused or learned from it
        raise errors.ConfigError(missing)
    refuse_symlinks(project.memory_dir, brief.agent)  # like a bad job file: before anything
    if job is not None:
        _remember(project, job, stamp)
    run = RunContext(project, job, _did_not_start(brief, project.store),
                     run_id or new_run_id(now), trigger, slot, now or utcnow(), gate=gate,
                     brief=brief)
    refused = _refusal(run)
    if refused is not None:
        return conclude(run, refused)
    lock = run.store.lock(f"job-{brief.name}")
    got = _take(run, lock, stamp)
    if isinstance(got, Ending):
        return conclude(run, got)
    job = run.job
    assert job is not None  # _take validated it before taking the lock for this run
    outcome: RunOutcome | None = None
    ending: Ending | None = None
    try:
        ending = _before_session(run, lock, got)
        if ending is None:
            try:
                _did_not_start(job, lambda: lock.mark_held(run.run_id, job.name,
                                                           trigger=trigger))
                with _held(lock, job, project), _sigterm_unwinds():
                    ending = _session(run, client)
                    outcome = conclude(run, ending)
            except errors.StateError:
                if run.slot is not None and not run.started:
                    # The run did not start: its slot may still run. A disk that refuses
                    # this too leaves it claimed, which `check` reports as missed.
                    with contextlib.suppress(errors.StateError):
                        run.store.release_slot(job.name, run.slot, run.run_id)
                raise
        else:
            outcome = conclude(run, ending)
        return outcome
    finally:
        if run.trace is not None:
            run.trace.close()
        # A crash held by `after_crash = "hold"` stays visible until `jobrunner unlock`.
        lock.release(keep_meta=ending is not None and ending.reason == StopReason.CRASH_HOLD,
                     last_run=outcome.last_run() if outcome is not None else None)
        if outcome is not None:
            from jobrunner import otel_export
            from jobrunner.alerts import outbox as alerts

            alerts.deliver_pending(project)  # the outbox: retry what could not go earlier
            otel_export.after_run(project, outcome.run_id)  # off unless configured; bounded


def _job_or_brief(project: Project, name: str,
                  model: str | None) -> tuple[Job | None, JobBrief, str]:
    """The job validated in full, or only the brief a run recorded for these very inputs
    (then no job yet), and the inputs' fingerprint ("" when none is kept)."""
    # `jobrunner test` swaps the model: that job is never the one a fingerprint recalls.
    stamp = checked.fingerprint(project, name) if model is None and JOB_NAME.match(name) \
        else ""
    brief = checked.recall(project, name, stamp) if stamp else None
    if brief is not None:
        return None, brief, stamp
    job = load_job(project, name)
    if model is not None:
        job = job.with_model(model)
    return job, job.brief, stamp


def _remember(project: Project, job: Job, stamp: str) -> None:
    """Record the job's brief under its fingerprint, unless an input changed while it
    was being validated (then the next run validates in full again)."""
    if stamp and checked.fingerprint(project, job.name) == stamp:
        checked.remember(project, job.name, stamp, job.brief,
                         {"state_url": project.settings.state_url,
                          "state_password_env": project.settings.state_password_env})


def _did_not_start(job: Job | JobBrief, step: Any) -> Any:
    """Call `step`; a state the disk refuses this early means the run did not start."""
    try:
        return step()
    except errors.StateError as exc:
        raise errors.StateError(f"{job.name}: the run did not start: {exc}") from exc


def _refusal(run: RunContext) -> Ending | None:
    """Paused, or the day's budget spent: could not run now (exit 75), no lock taken."""
    from jobrunner.run.pause import is_paused

    brief, store = run.brief, run.store
    paused = is_paused(store, brief.name)
    if paused:
        return Ending(Status.PAUSED, StopReason.PAUSED,
                      f"jobrunner: {brief.name}: paused since {paused.paused_at} "
                      f"({paused.reason}); `jobrunner resume {brief.name}` lifts it")
    spent = store.cost_since(brief.name, day_start(brief, run.now))
    if spent >= brief.max_cost_usd_per_day:
        # Not a failure: it must not count towards a pause, alert, or touch the memory.
        return Ending(Status.SKIPPED, StopReason.MAX_COST_USD_PER_DAY,
                      f"jobrunner: {brief.name}: not run: ${spent:.4f} spent today of "
                      f"max_cost_usd_per_day ${brief.max_cost_usd_per_day:.2f} "
                      f"({brief.timezone}); runs start again after midnight")
    return None


def _take(run: RunContext, lock: Any, stamp: str) -> Acquired | Ending:
    """The job's lock, or why this run is not the one to run (SPEC §4). A live holder
    is told from the brief alone; anything else (the lock is this run's, or its holder
    died or went stale) needs the job validated in full first."""
    from jobrunner.run import recovery

    store = run.store
    got = lock.try_acquire()
    if isinstance(got, Busy) and not held_by_live_run(got.holder):
        got = lock.try_acquire(timeout=1.0)  # an instant's hold, not a run: wait it out
    holder = (got.holder or {}) if isinstance(got, Busy) else {}
    if isinstance(got, Busy) and not holder_died(got.holder) \
            and not is_stale(holder, run.brief.stale_after):
        return Ending(Status.SKIPPED, StopReason.LOCK_HELD,
                      f"lock held by run {holder.get('run_id', '?')} "
                      f"(pid {holder.get('pid', '?')})")
    job = _validated(run, lock, got, stamp)
    if isinstance(got, Acquired):
        return got
    if holder_died(got.holder):
        return Ending(Status.SKIPPED, StopReason.LOCK_ORPHANED,
                      "jobrunner: " + recovery.on_orphaned(run.project, store, job, lock, holder))
    got = recovery.on_stale(run.project, store, job, lock, holder)
    if isinstance(got, Busy):
        return Ending(Status.SKIPPED, StopReason.LOCK_STALE,
                      "jobrunner: " + recovery.stale_message(job, holder))
    return got


def _validated(run: RunContext, lock: Any, got: Acquired | Busy, stamp: str) -> Job:
    """The run's job in full: validated already, or now (a run recalled by its
    fingerprint). A job that no longer validates (edited this instant) ends the run as
    a bad job file does, its lock left as it was found."""
    if run.job is None:
        try:
            run.job = load_job(run.project, run.brief.name)
            missing = environment_problems(run.project, run.job)  # its MCP servers' too
            if missing:
                raise errors.ConfigError(missing)
        except errors.JobrunnerError:
            if isinstance(got, Acquired):
                lock.release(keep_meta=True)
            raise
        _remember(run.project, run.job, stamp)
        run.brief = run.job.brief
    return run.job


def _before_session(run: RunContext, lock: Any, got: Acquired) -> Ending | None:
    """Under the lock: settle what an earlier run left, then the crash hold and the slot."""
    from jobrunner.run import recovery

    job, store = run.job, run.store
    if got.left_behind:
        recovery.handle_left_behind(run.project, store, lock, got.left_behind, job)
    recovery.settle_unrecorded(store, job, got.previous)
    crashed = lock.read_meta() or {}
    if crashed.get("state") == "crashed" and job.spec.lock.after_crash == "hold":
        return Ending(Status.SKIPPED, StopReason.CRASH_HOLD,
                      f"jobrunner: {job.name}: run {crashed.get('run_id')} crashed and "
                      f'lock.after_crash = "hold"; `jobrunner unlock {job.name}` lets it run '
                      "again")
    if run.slot is not None:
        # Once per slot, whoever launches it (daemon, cron, --due, another host's line).
        taken = store.claim_slot(job.name, run.slot, run.run_id)
        if taken is not None:
            by = store.get_run(taken)
            return Ending(Status.SKIPPED, StopReason.SLOT_TAKEN,
                          f"slot {iso(run.slot)} already run by run {taken}"
                          + (f" ({by.trigger})" if by else ""))
    return None


@contextlib.contextmanager
def _held(lock: Any, job: Job, project: Project) -> Iterator[None]:
    """While the session runs: heartbeats on the lock, a tool's `os._exit` failing the
    call instead of the process, and the project root as the tools' working directory
    (cron starts in the home folder)."""
    from jobrunner.tools.dispatch import exit_guarded

    beat = HeartbeatThread(lock, heartbeat_interval(job.spec.lock.stale_after),
                           on_lost=_lock_lost).start()
    try:
        with exit_guarded(), contextlib.chdir(project.root):
            yield
    finally:
        beat.stop()


def _lock_lost(why: str) -> None:
    """The heartbeat found the job's lock gone (its database connection died): another
    host may take it now, so this run stops as a SIGTERM would stop it."""
    LOST.append(why)
    signal.raise_signal(signal.SIGTERM)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises Terminated while the session runs; once it has ended, the end is
    recorded first. Only the main thread may set handlers: embedded runs keep theirs."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(_signum: int, _frame: Any) -> None:
        if TERM_ARMED.is_set():
            if LOST:
                raise Terminated(StopReason.LOCK_LOST, f"the run's lock was lost: {LOST[0]}")
            raise Terminated()

    TERM_ARMED.set()
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        TERM_ARMED.clear()
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)


def _session(run: RunContext, client: ModelClient | None) -> Ending:
    """Record the run `running`, then the session under the agent's lock, then the memory
    rewrite; whatever interrupts it becomes its Ending (Ctrl-C is recorded, then raised)."""
    from jobrunner.models import client_for
    from jobrunner.models.pricing import REPLAY_PRICE
    from jobrunner.run.model_calls import Helper

    project, job = run.project, run.job
    # What can still refuse the job's configuration (a broken replay script) runs before
    # anything is recorded: exit 2 writes nothing. Tool files were loaded by load_job.
    client = client or client_for(job.spec.model, project.root)
    prices = project.settings.prices()
    price = prices.get(job.spec.model, REPLAY_PRICE)
    helpers = {purpose: Helper(purpose, model, client_for(model, project.root),
                               prices.get(model, REPLAY_PRICE))
               for purpose, model in job.helper_models().items()}
    _start(run)
    try:
        return with_agent(run, client, price, helpers)
    except Terminated as stop:
        return Ending(Status.ABORTED, stop.reason, stop.detail)
    except errors.StateError as exc:  # the state disk refused a write mid-run
        return Ending(Status.ABORTED, StopReason.STATE_UNWRITABLE,
                      f"jobrunner: {job.name}: run {run.run_id} ended ABORTED: the state "
                      f"could not be written: {exc}")
    except Exception as exc:  # our own bug: recorded, reported, alerted
        assert run.trace is not None
        run.trace.emit("run.internal_error", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
        return Ending(Status.ABORTED, StopReason.INTERNAL_ERROR,
                      f"internal error: {type(exc).__name__}: {exc}")
    except BaseException as exc:  # Ctrl-C, SystemExit: record the run before unwinding
        conclude(run, Ending(Status.ABORTED, StopReason.INTERRUPTED,
                             f"the run was interrupted ({type(exc).__name__})"))
        raise


def _start(run: RunContext) -> None:
    """The run's `running` record, its trace and its start ping."""
    import os

    from jobrunner.hosts import this_host
    from jobrunner.run.heartbeat import Pinger
    from jobrunner.state.traces import Trace

    job = run.job
    _did_not_start(job, lambda: run.store.insert_run(RunRecord(
        id=run.run_id, job=job.name, agent=job.agent, status=Status.RUNNING,
        trigger=run.trigger, slot=iso(run.slot), started_at=iso(run.now) or "",
        pid=os.getpid(), host=this_host(), model=job.spec.model)))
    run.trace = Trace(run.store, run.run_id)
    run.trace.emit("run.start", job=job.name, agent=job.agent, trigger=run.trigger,
                   slot=iso(run.slot), model=job.spec.model, pid=os.getpid())
    run.pinger = Pinger(job.spec.heartbeat_url if run.project.reaches_out else "", run.trace)
    run.pinger.start()



