"""`jobrunner test JOB [--replay FILE] [--dry-run]`: a job's session on a replay script,
without a second job file; with --dry-run, in a sandbox that executes no side effect and
writes nothing of the project's."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from jobrunner.cli.app import app, project
from jobrunner.cli.runs import end_run
from jobrunner.cli.setup import job_names

if TYPE_CHECKING:
    from jobrunner.config.project import Project


def _say(line: str) -> None:
    typer.echo(line)


def _run(proj: Project, name: str, model: str | None, gate: Any) -> Any:
    """The run, its steps written as they happen."""
    from jobrunner.cli.logs import following
    from jobrunner.run.runner import new_run_id, run_job

    run_id = new_run_id()
    with following(proj.store(), run_id, _say):
        return run_job(proj, name, trigger="test", run_id=run_id, model=model, gate=gate)


def _memory_diff(real: Path, rehearsed: Path) -> list[str]:
    """What the run would have done to the memory, as a unified diff (empty: nothing)."""
    def text(path: Path) -> list[str]:
        return path.read_text(encoding="utf-8").splitlines(keepends=True) \
            if path.is_file() else []

    shown = str(real.relative_to(real.parents[2])) if len(real.parents) > 2 else str(real)
    return list(difflib.unified_diff(text(real), text(rehearsed), fromfile=shown,
                                     tofile=f"{shown} (after the run)"))


def _dry_run_summary(sandbox: Any, proj: Project, agent: str, run_id: str) -> None:
    """The calls the dry run did not make, and the memory it did not write."""
    from jobrunner.memory.format import memory_path

    stood_in = [e for e in sandbox.store().trace_read(run_id) if e.get("event") == "tool.dry_run"]
    if stood_in:
        _say(f"dry run: {len(stood_in)} call(s) not executed:")
        for event in stood_in:
            what = (f"would wait for approval ({event.get('why')})" if event.get("would_queue")
                    else "answered with a stand-in result")
            args = json.dumps(event.get("input"), default=str, ensure_ascii=False)
            _say(f"  step {event.get('step')}: {event.get('tool')}({args}): {what}")
    diff = _memory_diff(memory_path(proj.memory_dir, agent),
                        memory_path(sandbox.memory_dir, agent))
    if diff:
        _say("dry run: the memory it would write (not written):")
        for line in diff:
            _say(line.rstrip("\n"))
    else:
        _say("dry run: the memory would stay as it is")


@app.command("test")
def test_job(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The job to test.", autocompletion=job_names),
    replay: Path | None = typer.Option(None, "--replay", metavar="FILE",
                                       help="Answer the session from this replay script "
                                       "(default: the job's own model)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Execute no tool with side effects "
                                 "(each call is recorded and answered with a stand-in), take "
                                 "no lock or slot, send no alert, write no memory (show it)."),
) -> None:
    """Run a job's session now and show its steps: on a replay script, without a second job
    file (`jobrunner replay RUN_ID > FILE` turns an incident into one: a regression test).

    Without --dry-run it is a run like `jobrunner run` (recorded with trigger `test`).
    Exit codes as `run`: 0 completed, 1 failed/partial/aborted, 2 configuration error,
    3 limit, 4 needs approval, 75 could not run now.
    """
    from jobrunner.effects.gate import LedgerGate

    proj = project(ctx)
    model = None
    if replay is not None:
        from jobrunner.models.replay import load_script

        path = replay.expanduser().resolve()
        load_script(path)  # a broken script: located errors, exit 2, nothing run
        model = f"replay:{path}"
    if not dry_run:
        outcome = _run(proj, name, model, LedgerGate)
        _end(outcome)
        return
    import tempfile  # here: `jobrunner --help` builds this module too

    from jobrunner.config.jobs import load_job
    from jobrunner.run.rehearsal import DryRunGate, Sandbox

    agent = load_job(proj, name).agent
    with tempfile.TemporaryDirectory(prefix="jobrunner-dry-run-") as scratch:
        sandbox = Sandbox.of(proj, Path(scratch), agent)
        outcome = _run(sandbox, name, model, DryRunGate)
        _dry_run_summary(sandbox, proj, agent, outcome.run_id)
    _end(outcome, dry=True)


def _end(outcome: Any, dry: bool = False) -> None:
    """The run's report and its one-line verdict, then its exit code."""
    report = outcome.report
    if dry:  # its trace went with the sandbox
        report = "\n".join(ln for ln in report.splitlines()
                           if not ln.strip().startswith("trace: jobrunner show"))
    if report:
        _say(report)
    where = "a dry run, nothing kept" if dry else f"jobrunner show {outcome.run_id}"
    _say(f"test {outcome.job}: {outcome.status} ({outcome.stop_reason}), exit "
         f"{outcome.exit_code} ({where})")
    end_run(outcome.exit_code)
