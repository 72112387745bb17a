"""Finding tools: the built-ins plus every `@tool` in the project's `jobs/tools/*.py`."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from jobrunner.errors import ConfigError
from jobrunner.tools.api import ToolSpec

# Handled by the session itself, not dispatched like other tools.
SESSION_TOOLS = ("finish", "update_memory")


def builtin_tools() -> dict[str, ToolSpec]:
    """The tools jobrunner ships, by name."""
    from jobrunner.tools import builtins

    return {spec.name: spec for spec in builtins.all_specs()}


def _import_tool_file(path: Path):
    module_name = f"jobrunner_project_tools.{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}:1: cannot load as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error in user code is a config problem, located
        sys.modules.pop(module_name, None)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = frames[-1].lineno if frames else getattr(exc, "lineno", 1) or 1
        raise ConfigError(f"{path}:{line}: import failed: {type(exc).__name__}: {exc}") from exc
    return module


def project_tools(tools_dir: Path) -> dict[str, ToolSpec]:
    """Every `@tool`-decorated function in `tools_dir/*.py`, by tool name."""
    found: dict[str, ToolSpec] = {}
    if not tools_dir.is_dir():
        return found
    for path in sorted(tools_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = _import_tool_file(path)
        for value in vars(module).values():
            spec = getattr(value, "__jobrunner_tool__", None)
            if not isinstance(spec, ToolSpec):
                continue
            if spec.name in found and found[spec.name].fn is not spec.fn:
                raise ConfigError(f"{path}:1: tool {spec.name!r} is defined twice")
            spec.source = str(path)
            found[spec.name] = spec
    return found


def all_tools(project) -> dict[str, ToolSpec]:
    """Built-ins overlaid by project tools (a project may replace a built-in)."""
    tools = builtin_tools()
    tools.update(project_tools(project.tools_dir))
    return tools


def known_tool_names(project) -> set[str]:
    """Names a job may list in `tools`."""
    return set(all_tools(project))


def job_tools(project, job) -> dict[str, ToolSpec]:
    """Every tool, each narrowed by the job's `[tool.NAME]` table."""
    from jobrunner.tools.api import tightened

    return {name: tightened(spec, job.spec.tool.get(name))
            for name, spec in all_tools(project).items()}
