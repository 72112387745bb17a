"""The public face of tools: `@tool`, `ToolResult`, and the spec the runner keeps.

Kept light (no pydantic at import time): tool files import it, and `jobrunner run`
on a locked job must not pay for building argument models.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high")

# Idempotency keys: which placeholders a template may use, and the default one.
KEY_PLACEHOLDERS = ("job", "tool", "date", "slot", "args", "run")
DEFAULT_IDEMPOTENCY_KEY = "{job}:{tool}:{slot}:{args}"


@dataclass(frozen=True)
class ToolResult:
    """What a tool may return to say how it went. Any other return value means ok."""

    ok: bool = True
    data: Any = None
    error: str | None = None


@dataclass
class ToolSpec:
    """A tool as the runner keeps it: how to call it, its policy, and its argument schema.

    A `@tool` function gets its schema from its type hints (`args_model`, built lazily)
    and is called in a thread under its timeout. A tool from another source (an MCP
    server) brings its own JSON `schema`, and a `call(args, seconds)` that makes the call
    within the time given and says how it went (a `dispatch.CallOutcome`); `fn` is then
    only its plain-function form.
    """

    name: str
    fn: Callable[..., Any]
    description: str
    risk: Risk = "high"
    side_effect: bool = True
    timeout: float = 30.0
    retries: int = 0
    idempotency_key: str | None = None
    untrusted_output: bool = False  # output comes from outside (web, inbox): taints the session
    source: str = "project"  # "builtin" or the file it came from
    needs_paths: bool = False  # a file tool: the job must say which folders it may use
    after_untrusted: Literal["run", "approve"] = "run"  # set by the job's [tool.NAME]
    paths: tuple[str, ...] = ()  # folders the job allows (file tools), relative to the project
    schema: dict[str, Any] | None = None  # a JSON Schema from the tool's source, not from hints
    call: Callable[[dict[str, Any], float], Any] | None = None  # a source's own bounded call
    repeatable: bool = False  # its source says a repeated call changes nothing more
    compensate: str | None = None  # the tool that undoes a call (given `args` and `result`)

    @cached_property
    def args_model(self):  # -> type[pydantic.BaseModel]
        """A strict pydantic model of the function's parameters, from its type hints."""
        from pydantic import ConfigDict, create_model

        hints = inspect.get_annotations(self.fn, eval_str=True)
        fields: dict[str, Any] = {}
        for param in inspect.signature(self.fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, default)
        return create_model(
            f"{self.name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )

    def input_schema(self) -> dict[str, Any]:
        """JSON schema of the arguments, as the Messages API takes it."""
        if self.schema is not None:
            return self.schema
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        schema["additionalProperties"] = False
        return schema

    def definition(self) -> dict[str, Any]:
        """The tool as listed to the model."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema(),
        }

    @property
    def idempotent(self) -> bool:
        """Whether a failed call may be retried: it has no side effect, a key makes it
        at-most-once, or its source says repeating it is harmless."""
        return not self.side_effect or self.idempotency_key is not None or self.repeatable

    @property
    def key_template(self) -> str:
        """The ledger key template of this tool's calls."""
        return self.idempotency_key or DEFAULT_IDEMPOTENCY_KEY


def key_template_problem(template: str) -> str | None:
    """Why an idempotency key template is unusable, or None."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"bad template: {exc}"
    unknown = [f for f in fields if f not in KEY_PLACEHOLDERS]
    if unknown:
        return (f"unknown placeholder {{{unknown[0]}}} (use "
                f"{', '.join('{' + p + '}' for p in KEY_PLACEHOLDERS)})")
    if not template.strip():
        return "an empty key would make every call the same call"
    return None


def policy_problems(spec: ToolSpec, policy: Any) -> list[tuple[str, str]]:
    """(key, problem) for each way a job's `[tool.NAME]` table loosens the tool's own
    declaration or is unusable. A job may only tighten: raise the risk, lower the
    timeout or retries, add a key, folders or approval after untrusted content."""
    problems: list[tuple[str, str]] = []
    if policy.risk is not None and RISKS.index(policy.risk) < RISKS.index(spec.risk):
        problems.append(("risk", f"cannot lower {spec.name}'s declared risk {spec.risk!r} to "
                         f"{policy.risk!r} (a job may only tighten a tool's policy)"))
    if policy.timeout is not None and (policy.timeout <= 0 or policy.timeout > spec.timeout):
        problems.append(("timeout", f"must be more than 0 and at most {spec.name}'s own "
                         f"timeout of {spec.timeout:g}s"))
    if policy.retries is not None and policy.retries > spec.retries:
        problems.append(("retries", f"cannot raise retries above {spec.name}'s own "
                         f"{spec.retries} (a retried side effect may happen twice)"))
    if policy.idempotency_key is not None:
        problem = key_template_problem(policy.idempotency_key)
        if problem:
            problems.append(("idempotency_key", problem))
    for folder in policy.paths or []:
        problem = folder_problem(folder)
        if problem:
            problems.append(("paths", f"{folder!r}: {problem}"))
    if spec.needs_paths and not policy.paths:
        problems.append(("paths", f"{spec.name} needs the folders it may use, e.g. "
                         f'[tool.{spec.name}] paths = ["data/"]'))
    return problems


def folder_problem(folder: str) -> str | None:
    """Why a configured folder cannot be allowed, or None (relative, inside the project)."""
    if not folder.strip() or "\x00" in folder:
        return "empty folder name"
    if folder.startswith("/") or re.match(r"^[A-Za-z]:", folder):
        return "must be relative to the project"
    if ".." in folder.replace("\\", "/").split("/"):
        return "must not contain '..'"
    return None


def tightened(spec: ToolSpec, policy: Any) -> ToolSpec:
    """The tool as one job may use it: its declaration narrowed by the job's table."""
    if policy is None:
        return spec
    changes: dict[str, Any] = {}
    if policy.risk is not None and RISKS.index(policy.risk) > RISKS.index(spec.risk):
        changes["risk"] = policy.risk
    if policy.timeout:
        changes["timeout"] = min(spec.timeout, float(policy.timeout))
    if policy.retries is not None:
        changes["retries"] = min(spec.retries, policy.retries)
    if policy.idempotency_key is not None:
        # A key says "at most once per key": the calls go through the ledger.
        changes.update(idempotency_key=policy.idempotency_key, side_effect=True)
    if policy.after_untrusted != "run":
        changes["after_untrusted"] = policy.after_untrusted
    if policy.paths is not None:
        changes["paths"] = tuple(policy.paths)
    return dataclasses.replace(spec, **changes) if changes else spec


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    risk: Risk = "high",
    side_effect: bool | None = None,
    timeout: float = 30.0,
    retries: int = 0,
    idempotency_key: str | None = None,
    untrusted_output: bool = False,
    needs_paths: bool = False,
    compensate: str | None = None,
) -> Any:
    """Register a function as a tool. Its docstring is what the model reads; its type
    hints are its argument schema. A bare `@tool` is risk `high` (queued for approval).

    `side_effect` left unsaid: a `low` tool is a read (False: no ledger, may retry),
    `medium` and `high` act on the world (True: each call goes through the ledger, and
    one that raises or times out is in doubt until an operator resolves it). A `low`
    tool that does act says `side_effect=True`.

    `compensate` names another registered tool that undoes a call of this one: when a run
    ends aborted, failed or at a limit, it is called with `args` (this call's arguments)
    and `result` (what this call returned), once, through the ledger.
    """
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, not {risk!r}")
    if idempotency_key is not None and (problem := key_template_problem(idempotency_key)):
        raise ValueError(f"idempotency_key {idempotency_key!r}: {problem}")
    if compensate is not None and (not isinstance(compensate, str) or not compensate.strip()):
        raise ValueError("compensate names the tool that undoes this one, e.g. "
                         'compensate="delete_record"')

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        doc = inspect.getdoc(func) or ""
        effect = risk != "low" if side_effect is None else side_effect
        if retries and effect and idempotency_key is None:
            raise ValueError(
                f"tool {func.__name__}: retries need side_effect=False or an idempotency_key "
                "(a retried side effect may happen twice)"
            )
        spec = ToolSpec(
            name=name or func.__name__,
            fn=func,
            description=doc.strip() or f"The {func.__name__} tool.",
            risk=risk,
            side_effect=effect,
            timeout=float(timeout),
            retries=int(retries),
            idempotency_key=idempotency_key,
            untrusted_output=untrusted_output,
            needs_paths=needs_paths,
            source=getattr(func, "__module__", "project"),
            compensate=compensate,
        )
        func.__jobrunner_tool__ = spec  # type: ignore[attr-defined]
        return func

    if fn is not None:
        return register(fn)
    return register


@dataclass
class ToolContext:
    """What a running tool may know about its run (built-ins use it for paths)."""

    project_root: Any
    job_name: str
    run_id: str
    agent: str
    settings: Any
    policy: dict[str, Any] = field(default_factory=dict)


_CONTEXT: Any = None  # contextvars.ContextVar[ToolContext], created on first use


def _context_var():
    global _CONTEXT
    if _CONTEXT is None:
        import contextvars

        _CONTEXT = contextvars.ContextVar("jobrunner_tool_context")
    return _CONTEXT


class NoToolContext(LookupError):
    """`current_context()` was called while jobrunner was not calling a tool."""


def current_context() -> ToolContext:
    """The context of the run calling this tool: the project root, the job, the run id,
    the agent, the settings and the job's tool policy. Only inside a tool call (a run, or
    `jobrunner approve`); at import time or elsewhere it raises NoToolContext."""
    try:
        return _context_var().get()
    except LookupError:
        raise NoToolContext(
            "current_context() is only available while jobrunner calls a tool (in a run or "
            "`jobrunner approve`): it tells the tool its project root, job and run. Call it "
            "inside the tool function, not when the file is imported") from None


def set_context(context: ToolContext) -> None:
    """Bind the run's context for tools called from this thread's context."""
    _context_var().set(context)
