"""Compensation (the saga pattern): when a run ends aborted, failed or at a limit after
side effects, the ones whose tool declares an undo (`@tool(compensate="delete_record")`)
are undone, newest first, each once, through the ledger; the others are "not undone".

A compensation is called with `args` (the original call's arguments) and `result` (what
it returned). Its ledger key is the original's plus `:undo:RUN`, so it runs at most once
for this run whatever happens; once it succeeds the original key is set `not_done`, so a
later run may make that call again instead of being told it happened. A compensation that
fails is recorded (`run.compensation_failed` is alerted from `outcome.conclude`), and the
rest still run; one that raises or times out is in doubt like any side effect, which stops
the job's runs until an operator resolves it.

Nothing the agent asked for runs after the run has ended; only these declared undos do.
They are not tool calls of the agent: `max_tool_calls` does not count them (there is at
most one per compensable call, which it did count), and each is bounded by its own tool's
timeout, as the run's own time may be spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobrunner import errors
from jobrunner.effects import ledger
from jobrunner.events import Status
from jobrunner.run.tally import Undo
from jobrunner.state.records import AlreadyDone, Claimed
from jobrunner.tools import dispatch
from jobrunner.tools.api import ToolSpec

if TYPE_CHECKING:
    from jobrunner.config.jobfile import Job
    from jobrunner.run.ending import Ending
    from jobrunner.run.tally import Effect
    from jobrunner.state import State
    from jobrunner.state.traces import Trace

# The endings after which a run's side effects are undone.
UNDO_AFTER = (Status.ABORTED, Status.FAILED, Status.LIMIT)


def settle(job: Job, store: State, run_id: str, tools: dict[str, ToolSpec],
           ending: Ending, trace: Trace) -> None:
    """Undo what the ending calls for, newest first, and note on `ending` what was undone
    and what was not."""
    tally = ending.tally
    if tally is None or not tally.effects or ending.status not in UNDO_AFTER:
        return
    if not job.spec.compensate_on_abort:
        ending.not_undone = list(tally.effects)
        ending.undo_note = "compensate_on_abort = false"
        return
    for effect in reversed(tally.effects):
        if effect.compensate is None:
            ending.not_undone.insert(0, effect)
            continue
        try:
            ending.undone.append(_undo(job, store, run_id, tools, effect, trace))
        except errors.StateError as exc:
            # Without the ledger no compensation can be made at most once: stop here.
            ending.undo_note = f"compensation stopped: the state could not be written: {exc}"
            return


def undo_key(job: Job, run_id: str, effect: Effect) -> str:
    """The compensation's ledger key: the original's, undone by this run."""
    original = effect.key or f"{job.name}:{effect.tool}:{run_id}:{effect.step}:" \
        f"{ledger.args_hash(effect.args)}"
    return f"{original}:undo:{run_id}"


def _undo(job: Job, store: State, run_id: str, tools: dict[str, ToolSpec], effect: Effect,
          trace: Trace) -> Undo:
    name = effect.compensate or ""
    key = undo_key(job, run_id, effect)
    spec = tools.get(name)
    trace.emit("compensation.start", step=effect.step, tool=effect.tool, compensate=name,
               key=key)
    if spec is None:
        return _done(trace, Undo(effect, name, key, False, f"no tool {name!r} is registered"))
    args, problem = dispatch.validate_args(spec, {"args": effect.args, "result": effect.result})
    if problem or args is None:
        return _done(trace, Undo(effect, name, key, False, problem or "invalid arguments"))
    claim, outcome = ledger.call(
        store, key, job=job.name, tool=name, args=args, run_id=run_id,
        execute=lambda: dispatch.execute(spec, args, spec.timeout, spec.retries))
    if isinstance(claim, AlreadyDone):
        return _done(trace, Undo(effect, name, key, True, already=True))
    if not isinstance(claim, Claimed) or outcome is None:
        return _done(trace, Undo(effect, name, key, False,
                                 f"its ledger entry is {claim.entry.state}"))
    if not outcome.ok:
        doubt = "; it may have acted (in doubt)" if claim.entry.status == "in_doubt" else ""
        return _done(trace, Undo(effect, name, key, False, f"{outcome.error}{doubt}"))
    if effect.key:
        ledger.undone(store, effect.key, f"undone by {name} in run {run_id}")
    return _done(trace, Undo(effect, name, key, True))


def _done(trace: Trace, undo: Undo) -> Undo:
    trace.emit("compensation.result", step=undo.effect.step, tool=undo.effect.tool,
               compensate=undo.tool, key=undo.key, ok=undo.ok, error=undo.error or None,
               already_done=undo.already)
    return undo
