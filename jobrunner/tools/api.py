"""The public face of tools: `@tool`, `ToolResult`, and the spec the runner keeps.

Kept light (no pydantic at import time): tool files import it, and `jobrunner run`
on a locked job must not pay for building argument models.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high")


@dataclass(frozen=True)
class ToolResult:
    """What a tool may return to say how it went. Any other return value means ok."""

    ok: bool = True
    data: Any = None
    error: str | None = None


@dataclass
class ToolSpec:
    """A registered tool: the function, its policy, and (lazily) its argument model."""

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
        return not self.side_effect or self.idempotency_key is not None


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
) -> Any:
    """Register a function as a tool. Its docstring is what the model reads; its type
    hints are its argument schema. A bare `@tool` is risk `high` (queued for approval).

    `side_effect` defaults to True unless the tool is declared `low` risk and says
    otherwise, so that anything that might act on the world goes through the ledger.
    """
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, not {risk!r}")

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        doc = inspect.getdoc(func) or ""
        effect = True if side_effect is None else side_effect
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
            source=getattr(func, "__module__", "project"),
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


def current_context() -> ToolContext:
    """The context of the run calling this tool (raises LookupError outside a run)."""
    return _context_var().get()


def set_context(context: ToolContext) -> None:
    """Bind the run's context for tools called from this thread's context."""
    _context_var().set(context)
