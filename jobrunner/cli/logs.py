"""`jobrunner logs [-f] [RUN_ID|JOB]`, and what `run -v` shares with it: the steps of
runs as they happen, read from their traces (library code writes traces; only the CLI
prints them)."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import typer

from jobrunner.cli.app import app, find_run, project
from jobrunner.cli.setup import job_names
from jobrunner.cli.trace_text import timed

POLL = 0.25  # seconds between two reads of a followed trace


@dataclass
class Follower:
    """Writes the events of the runs it follows that it has not written yet, each poll."""

    store: Any
    write: Callable[[str], None]
    as_json: bool = False
    tagged: bool = False  # several runs may interleave: each line names its run
    written: dict[str, int] = field(default_factory=dict)  # run id -> events written
    ended: set[str] = field(default_factory=set)

    def add(self, run: Any) -> None:
        """Follow `run` (a run record, or a run id) from its first event."""
        run_id = run if isinstance(run, str) else run.id
        if run_id in self.written:
            return
        self.written[run_id] = 0
        if not isinstance(run, str) and not self.as_json:
            why = f" ({run.stop_reason})" if run.stop_reason else ""
            self.write(f"run {run.id}  job {run.job}  trigger {run.trigger}  "
                       f"status {run.status}{why}")

    def poll(self) -> None:
        for run_id in [r for r in self.written if r not in self.ended]:
            events = self.store.trace_read(run_id)
            tag = f"[{run_id[-6:]}] " if self.tagged else "  "
            for event in events[self.written[run_id]:]:
                self.write(json.dumps(event, default=str) if self.as_json
                           else timed(event, tag))
                if event.get("event") == "run.end":
                    self.ended.add(run_id)
            self.written[run_id] = len(events)

    def over(self, run_id: str) -> bool:
        """Whether `run_id` has ended: its trace says so, or its record is no longer
        `running` (a refusal has no trace), or its process on this host is gone."""
        if run_id in self.ended:
            return True
        record = self.store.get_run(run_id)
        if record is None or record.status != "running":
            return record is not None
        from jobrunner.hosts import pid_alive, this_host

        return record.host == this_host() and isinstance(record.pid, int) \
            and not pid_alive(record.pid)


@contextlib.contextmanager
def following(store: Any, run_id: str, write: Callable[[str], None]) -> Iterator[None]:
    """While the block runs (a run, in this process), write the steps of run `run_id`
    as its trace gets them; the rest once the block is over."""
    follower = Follower(store, write)
    follower.add(run_id)
    done = threading.Event()

    def loop() -> None:
        try:
            while not done.wait(POLL):
                follower.poll()
        finally:
            store.close()  # this thread's connection, if the backend opened one

    thread = threading.Thread(target=loop, name="follow-trace", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
        follower.poll()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _stdout(line: str) -> None:
    print(line, flush=True)


@app.command()
def logs(
    ctx: typer.Context,
    ref: str | None = typer.Argument(None, metavar="[RUN_ID|JOB]", autocompletion=job_names,
                                     help="A run (id or unique prefix) or a job (its newest "
                                     "run); default: the project's newest run."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep writing steps as they "
                                "happen: until the run ends (RUN_ID), or for every run of "
                                "the job (or of the project) until Ctrl-C."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
) -> None:
    """The steps of a run: model turns, tool calls with arguments and a short result,
    guard decisions, retries and their waits."""
    proj = project(ctx)
    store = proj.store()
    job: str | None = None
    if ref is None or ref in proj.job_names() or store.list_runs(ref, 1):
        job = ref
        newest = store.list_runs(job, 1)
        run = newest[0] if newest else None
        if run is None and not follow:
            typer.echo("no runs yet")
            return
    else:
        run = find_run(proj, ref)
    one_run = ref is not None and job is None
    # Following a job or the project, runs may overlap: each line names its run.
    follower = Follower(store, _stdout, as_json=as_json, tagged=follow and not one_run)
    if run is not None:
        follower.add(run)
        follower.poll()
    if not follow:
        return
    if one_run:  # until it ends
        assert run is not None
        while not follower.over(run.id):
            time.sleep(POLL)
            follower.poll()
        follower.poll()
        return
    _follow_runs(store, job, follower)


def _follow_runs(store: Any, job: str | None, follower: Follower) -> None:
    """Every run of `job` (None: of the project) that starts from now on, as it goes,
    until Ctrl-C."""
    seen = {r.id for r in store.list_runs(job, 50)}
    try:
        while True:
            time.sleep(POLL)
            for run in reversed(store.list_runs(job, 20)):
                if run.id not in seen:
                    seen.add(run.id)
                    follower.add(run)
            follower.poll()
    except KeyboardInterrupt:
        return
