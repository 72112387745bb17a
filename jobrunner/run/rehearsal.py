"""A dry run (`jobrunner test JOB --dry-run`): the run path unchanged, in a sandbox.

`Sandbox` is the project with a throwaway state and a copy of the agent's memory, so no
lock, slot, ledger entry, approval, alert, run record or memory of the project is
touched, and it reaches nothing outside (alert channels, the collector, heartbeat URLs).
`DryRunGate` is the call gate of such a run: every call of a tool with side effects is
recorded with its arguments and answered with a stated stand-in result instead of being
made; a call a real run would queue for approval is not queued. Reads run for real.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jobrunner.config.project import Project
from jobrunner.effects.gate import CallRequest, LedgerGate, Queued
from jobrunner.tools import dispatch

STAND_IN_NOTE = ("dry run: {tool} was not executed; this stands in for its result, as if "
                 "it had succeeded")


def stand_in(tool: str) -> dict[str, Any]:
    """The result a dry run answers a side effect's call with."""
    return {"dry_run": True, "executed": False, "note": STAND_IN_NOTE.format(tool=tool)}


@dataclass
class Sandbox(Project):
    """`real`'s project files (jobs, tools, data: reads are real) with the state and the
    memory in `scratch`, a folder the caller throws away."""

    scratch: Path = field(default_factory=Path)

    reaches_out = False  # no alert channel, collector or heartbeat URL hears of its runs

    @classmethod
    def of(cls, real: Project, scratch: Path, agent: str) -> Sandbox:
        """A sandbox of `real` in `scratch`, holding a copy of `agent`'s memory."""
        from jobrunner.memory.format import memory_path, refuse_symlinks

        refuse_symlinks(real.memory_dir, agent)  # what `run` refuses, a dry run refuses
        sandbox = cls(root=real.root, scratch=scratch)
        source = memory_path(real.memory_dir, agent)
        if source.is_file():
            target = memory_path(sandbox.memory_dir, agent)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return sandbox

    @cached_property
    def state_dir(self) -> Path:  # type: ignore[override] - the sandbox's own
        path = self.scratch / "state"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @property
    def memory_dir(self) -> Path:
        return self.scratch / "memory"

    def store(self) -> Any:
        """An embedded state in the scratch folder, whatever backend the project uses."""
        from jobrunner.state.sqlite import SQLiteState

        return SQLiteState(self.state_dir, self.redactor())


@dataclass
class DryRunGate(LedgerGate):
    """The call gate of a dry run: the ledger and the policy decide as in a run (in the
    sandbox's state), but no side effect is executed and nothing is queued."""

    def execute(self, request: CallRequest) -> dispatch.CallOutcome:
        self.trace.emit("tool.dry_run", step=request.step, tool=request.spec.name,
                        input=request.args, stand_in=True)
        return dispatch.CallOutcome(ok=True, data=stand_in(request.spec.name))

    def queue(self, request: CallRequest, key: str, why: str) -> Queued:
        self.trace.emit("tool.dry_run", step=request.step, tool=request.spec.name,
                        input=request.args, would_queue=True, why=why, key=key)
        return Queued("", f"would wait for approval ({why}); a dry run queues nothing")
