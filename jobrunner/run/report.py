"""The stop-and-report summary: what ended a run, where, and what was (not) done."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from jobrunner.events import Status

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job
    from jobrunner.redact import Redactor
    from jobrunner.run.outcome import Ending
    from jobrunner.state.records import Entry

def report_for(job: Job | JobBrief, run_id: str, ending: Ending, redactor: Redactor) -> str:
    """The report a run's record, stderr and alert carry: for a run that stopped before
    any session, its one paragraph; for a session that did not complete, the whole
    stop-and-report; for one that did, its medium-risk actions, if any."""
    if ending.tally is None:
        return ending.detail
    if ending.status == Status.COMPLETED:
        marked = [a for a in ending.tally.actions if a.detail == "medium risk"]
        return "medium-risk actions: " + "; ".join(
            f"step {a.step}: {a.tool}: {a.outcome}" for a in marked) if marked else ""
    return build_report(job, run_id, ending, redactor)


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
    lines.append(f"  spent: {tally.steps} steps, {tally.tool_calls} tool calls, "
                 f"{tally.usage.prompt_tokens} input / {tally.usage.output_tokens} output "
                 f"tokens, ${tally.cost_usd:.4f}")
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
