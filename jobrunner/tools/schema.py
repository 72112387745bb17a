"""Arguments checked against a JSON Schema: for tools whose schema comes from their source
(an MCP server) rather than from Python type hints. `jsonschema` comes with the `mcp`
extra and is imported on the first check."""

from __future__ import annotations

import json
import threading
from typing import Any

from jobrunner.errors import ConfigError

MAX_PROBLEMS = 5  # named in one piece of feedback; the rest would only be noise

_VALIDATORS: dict[str, Any] = {}  # canonical schema text -> its validator
_LOCK = threading.Lock()


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as quoted in feedback to the model: compact JSON."""
    return json.dumps(schema, separators=(",", ":"), default=str)


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a usable input schema (an object schema, valid JSON Schema
    of its declared draft), or None."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "the input schema must be of type 'object'"
    checker = _validator_class(schema)
    from jsonschema import SchemaError

    try:
        checker.check_schema(schema)
    except SchemaError as exc:
        return f"invalid input schema: {exc.message}"
    return None


def problems(schema: dict[str, Any], args: Any) -> list[str]:
    """Each way `args` break `schema` (at most MAX_PROBLEMS), `path: message`, in a stable
    order; empty when they fit."""
    if not isinstance(args, dict):
        return ["(arguments): must be a JSON object"]
    found = sorted(_validator(schema).iter_errors(args), key=lambda e: [str(p) for p in e.path])
    return [f"{'.'.join(map(str, e.absolute_path)) or '(arguments)'}: {e.message}"
            for e in found[:MAX_PROBLEMS]]


def feedback(tool: str, schema: dict[str, Any], args: Any) -> str | None:
    """None when `args` fit, else what the model is told: the problems and the schema
    (the same shape as for a tool whose schema comes from its type hints)."""
    if not isinstance(args, dict):
        return f"arguments must be a JSON object; schema: {schema_text(schema)}"
    found = problems(schema, args)
    if not found:
        return None
    return (f"invalid arguments for {tool}: {'; '.join(found)}. "
            f"Valid schema: {schema_text(schema)}")


def _validator_class(schema: dict[str, Any]) -> Any:
    try:
        from jsonschema.validators import validator_for
    except ImportError as exc:
        raise ConfigError("a tool with a JSON Schema of its own needs the jsonschema "
                          "package: pip install 'jobrunner[mcp]'") from exc
    return validator_for(schema)


def _validator(schema: dict[str, Any]) -> Any:
    key = json.dumps(schema, sort_keys=True, default=str)
    with _LOCK:
        validator = _VALIDATORS.get(key)
        if validator is None:
            validator = _VALIDATORS[key] = _validator_class(schema)(schema)
    return validator
