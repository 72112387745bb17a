"""The stop-and-report summary: what ended a run, where, and what was (not) done."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from jobrunner.events import Status

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job
    from jobrunner.redact import Redactor
    from jobrunner.run.ending import Ending
    from jobrunner.state.records import Entry

HELPER_NAMES = {"gate": "the semantic gate", "summary": "context summaries"}


def report_for(job: Job | JobBrief, run_id: str, ending: Ending, redactor: Redactor) -> str:
    """The report a run's record, stderr and alert carry: for a run that stopped before
    any session, its one paragraph; for a session that did not complete, the whole
    stop-and-report; for one that did, its medium-risk actions, if any."""
    if ending.tally is None:
        return ending.detail
    if ending.status == Status.COMPLETED:
        marked = [a for a in ending.tally.actions if a.detail == "medium risk"]
        lines = ["medium-risk actions: " + "; ".join(
            f"step {a.step}: {a.tool}: {a.outcome}" for a in marked)] if marked else []
        return "\n".join([*lines, *_waiting(ending)])
    return build_report(job, run_id, ending, redactor)


def _waiting(ending: Ending) -> list[str]:
    """The command that decides each call the run queued for a person."""
    assert ending.tally is not None
    return [f"  waiting: jobrunner approve {approval}   (runs it once; or jobrunner reject "
            f"{approval})" for approval in
            dict.fromkeys(a.approval_id for a in ending.tally.actions if a.approval_id)]


def build_report(job: Job | JobBrief, run_id: str, ending: Ending, redactor: Redactor) -> str:
    """Why the run ended, at which step, every tool call and its outcome, the agent's own
    account or last words, and what it spent."""
    tally = ending.tally
    assert tally is not None
    lines = [f"jobrunner: {job.name}: run {run_id} ended {ending.status.upper()} "
             f"({ending.reason})", f"  why: {ending.detail}"]
    if ending.failed_step:
        lines.append(f"  at step: {ending.failed_step}")
    if tally.actions:
        lines.append("  tool calls:")
        for action in tally.actions:
            # Redacted before it is cut short: a cut secret would escape the mask.
            args = json.dumps(redactor.data(action.args), default=str)
            if len(args) > 160:
                args = args[:157] + "..."
            detail = f" - {action.detail}" if action.detail else ""
            lines.append(f"    step {action.step}: {action.tool}({args}): {action.outcome}"
                         f"{detail}")
    if tally.finish is not None:
        lines.append(f"  agent's summary: {tally.finish.summary}")
        for label in ("established", "assumed", "unknown"):
            items = getattr(tally.finish, label)
            if items:
                lines.append(f"  {label}: " + "; ".join(items))
    elif tally.last_text:
        # The partial output: what the model last said before the run was stopped.
        text = " ".join(tally.last_text.split())
        lines.append(f"  model's last words: {text[:400]}{'...' if len(text) > 400 else ''}")
    lines.extend(_waiting(ending))
    if tally.cut_text:
        # A reply that stopped arriving: what it had said when it was cut.
        text = " ".join(tally.cut_text.split())
        lines.append(f"  cut-off reply: {text[:400]}{'...' if len(text) > 400 else ''}")
    lines += _undo_lines(ending)
    helpers = "; ".join(f"{HELPER_NAMES.get(p, p)}: {n} call{'s' if n != 1 else ''}, "
                        f"${tally.helper_cost_usd.get(p, 0.0):.4f}"
                        for p, n in tally.helper_calls.items())
    lines.append(f"  spent: {tally.steps} steps, {tally.tool_calls} tool calls, "
                 f"{tally.usage.prompt_tokens} input / {tally.usage.output_tokens} output "
                 f"tokens, ${tally.cost_usd:.4f}" + (f" (of which {helpers})" if helpers else ""))
    lines.append(f"  trace: jobrunner show {run_id}")
    return "\n".join(lines)


def mcp_failure_report(job: Job, run_id: str, exc: Exception, declared: dict) -> str:
    """The stop-and-report text of a run whose MCP server could not be used: which
    server (and how it is started), what went wrong; the model was not asked anything."""
    server = getattr(exc, "server", None)
    lines = [f"jobrunner: {job.name}: run {run_id} ended ABORTED (mcp_server_failed)",
             f"  why: {exc}"]
    if server in declared:
        lines.append(f"  server: {server}: {declared[server].describe()}")
    lines.append("  nothing was asked of the model and no tool was called")
    lines.append(f"  trace: jobrunner show {run_id}")
    return "\n".join(lines)


def in_doubt_report(job: Job, run_id: str, entries: list[Entry]) -> str:
    """The stop-and-report text of a run that found side effects in doubt."""
    lines = [f"jobrunner: {job.name}: run {run_id} ended ABORTED (ledger_in_doubt)",
             "  why: an earlier side effect may or may not have happened; the job will not "
             "run until an operator says which"]
    for entry in entries:
        lines.append(f"  in doubt: {entry.describe()}")
        lines.append(f"    resolve: jobrunner ledger resolve '{entry.key}' --done   "
                     "(it happened) or --not-done (it did not)")
    lines.append(f"  trace: jobrunner show {run_id}")
    return "\n".join(lines)


def _undo_lines(ending: Ending) -> list[str]:
    """The report's account of what was undone and what was not."""
    lines: list[str] = []
    if ending.undone:
        lines.append("  undone (newest first):")
        for undo in ending.undone:
            how = "ok" if undo.ok else f"FAILED: {undo.error} - manual intervention required"
            if undo.already:
                how = "ok (already done)"
            lines.append(f"    step {undo.effect.step}: {undo.effect.tool} undone by "
                         f"{undo.tool}: {how}")
    if ending.not_undone:
        why = f" ({ending.undo_note})" if ending.undo_note else " (no compensation declared)"
        lines.append("  not undone" + why + ": " + "; ".join(
            f"step {e.step}: {e.tool}" for e in ending.not_undone))
    elif ending.undo_note:
        lines.append(f"  {ending.undo_note}")
    return lines
