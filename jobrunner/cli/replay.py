"""`jobrunner replay RUN_ID`: a recorded run as a replay script, so an incident becomes a
regression test of the job in one command."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from jobrunner.cli.app import app, find_run, project
from jobrunner.errors import NotFoundError

USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")


def script_from_trace(run: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The model turns of a trace, in order, as a replay script (models/replay.py format)."""
    turns = []
    for event in events:
        if event.get("event") != "model.response":
            continue
        usage = event.get("usage") or {}
        turns.append({
            "content": event.get("content") or [],
            "stop_reason": event.get("stop_reason") or "end_turn",
            "usage": {k: int(usage.get(k) or 0) for k in USAGE_KEYS},
        })
    return {
        "description": (f"replay of run {run.id} of job {run.job} "
                        f"({run.status}, {run.stop_reason or 'no stop reason'})"),
        "turns": turns,
    }


@app.command()
def replay(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
) -> None:
    """Write a replay script of a recorded run to stdout.

    Save it next to the job and point a copy of the job at it (model = "replay:PATH") to
    play the same model turns offline, against today's tools and guards.
    """
    from jobrunner.models.replay import ReplayScript

    proj = project(ctx)
    row = find_run(proj, run_id)
    script = script_from_trace(row, proj.store().trace_read(row.id))
    if not script["turns"]:
        raise NotFoundError(f"run {row.id} has no model turns in its trace to replay")
    ReplayScript.model_validate(script)  # what we write, the replay model must read
    sys.stdout.write(json.dumps(script, indent=1) + "\n")
