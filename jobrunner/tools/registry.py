"""Finding tools: the built-ins plus every `@tool` in the project's `jobs/tools/*.py`.

Each tool file is loaded on its own, so one broken file refuses only the jobs that list
a tool from it. A file is imported in a thread bounded by `tool_import_timeout`, with the
project folder as the working directory and its output sent to stderr; whatever goes
wrong (an exception, `sys.exit`, a hang) becomes a located problem of that file.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunner.tools.api import ToolSpec

# Handled by the session itself, not dispatched like other tools.
SESSION_TOOLS = ("finish", "update_memory")


@dataclass(frozen=True)
class FileProblem:
    """A tool file that did not give its tools, and what to tell a job that needs one."""

    located: str  # `FILE:LINE: problem`, for `validate`, `list`, `check`
    file: str  # the file, relative to the project
    detail: str  # what went wrong, located
    names: frozenset[str] | None  # the tools it would define (None: it does not parse)
    twice: bool = False  # it loaded, but defines a tool another file defines too


@dataclass
class ToolSet:
    """The tools that loaded, by name, and the problems of the files that did not."""

    tools: dict[str, ToolSpec]
    problems: list[FileProblem] = field(default_factory=list)

    def why_unknown(self, name: str) -> str | None:
        """What explains an unknown tool `name`: the failed file that defines it, or one
        that cannot be parsed and so may."""
        for problem in self.problems:
            if problem.names is not None and name in problem.names:
                if problem.twice:
                    return f" — it is defined twice: {problem.detail}"
                return f" — {problem.file} failed to import: {problem.detail}"
        for problem in self.problems:
            if problem.names is None:
                return f" ({problem.file} failed to import and may define it: {problem.detail})"
        return None


def builtin_tools() -> dict[str, ToolSpec]:
    """The tools jobrunner ships, by name."""
    from jobrunner.tools import builtins

    return {spec.name: spec for spec in builtins.all_specs()}


class _RoutedStdout:
    """`sys.stdout` once tool files are loaded: what an import thread prints goes to
    stderr, so it cannot corrupt a command's own output (`--json`), even if it prints
    after its import timed out."""

    def __init__(self, out: Any) -> None:
        self._out = out

    def _target(self) -> Any:
        return sys.stderr if getattr(_IMPORTING, "active", False) else self._out

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


_IMPORTING = threading.local()
# path -> ((mtime_ns, size), specs, problem): a file is imported once per version, so a
# hanging one costs its timeout once per process, and the daemon sees edits.
_LOADED: dict[Path, tuple[tuple[int, int], list[ToolSpec], FileProblem | None]] = {}


def _shown(project: Any, path: Path) -> str:
    """A tool file as people name it: relative to the project."""
    try:
        return str(path.relative_to(project.root))
    except ValueError:
        return str(path)


def declared_names(path: Path) -> frozenset[str] | None:
    """The tool names a file's `@tool` decorators would register, read without running
    it (None when it does not parse)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if not ((isinstance(target, ast.Name) and target.id == "tool")
                    or (isinstance(target, ast.Attribute) and target.attr == "tool")):
                continue
            name = node.name
            for keyword in call.keywords if call else []:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant) \
                        and isinstance(keyword.value.value, str):
                    name = keyword.value.value
            names.add(name)
    return frozenset(names)


def _failure_line(path: Path, exc: BaseException) -> int:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    if frames:
        return frames[-1].lineno or 1
    return getattr(exc, "lineno", None) or 1  # a SyntaxError has no frame in the file


def _running_line(path: Path, thread: threading.Thread) -> int:
    """Where a still-running import is now, in the file itself."""
    frame = sys._current_frames().get(thread.ident or -1)
    frames = [f for f in traceback.extract_stack(frame) if f.filename == str(path)] \
        if frame is not None else []
    return (frames[-1].lineno or 1) if frames else 1


def _problem(project: Any, path: Path, line: int, error: str) -> FileProblem:
    shown = _shown(project, path)
    return FileProblem(located=f"{path}:{line}: import failed: {error}", file=shown,
                       detail=f"{shown}:{line}: {error}", names=declared_names(path))


def _import_tool_file(project: Any, path: Path, timeout: float) -> tuple[Any, FileProblem | None]:
    """(module, None) or (None, the file's problem). Never raises for the file's code."""
    module_name = f"jobrunner_project_tools.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        return None, _problem(project, path, 1, "cannot load it as a Python module")
    module = importlib.util.module_from_spec(spec)
    box: dict[str, BaseException] = {}

    def target() -> None:
        _IMPORTING.active = True
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: the file's problem
            box["error"] = exc

    if sys.stdout is not None and not isinstance(sys.stdout, _RoutedStdout):
        sys.stdout = _RoutedStdout(sys.stdout)
    sys.modules[module_name] = module
    thread = threading.Thread(target=target, name=f"tool-import-{path.stem}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        sys.modules.pop(module_name, None)
        return None, _problem(project, path, _running_line(path, thread),
                              f"did not finish within {timeout:g}s (tool_import_timeout)")
    if "error" in box:
        sys.modules.pop(module_name, None)
        exc = box["error"]
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None, _problem(project, path, _failure_line(path, exc), error)
    return module, None


def _load_file(project: Any, path: Path, timeout: float) -> tuple[list[ToolSpec],
                                                                  FileProblem | None]:
    try:
        stat = path.stat()
    except OSError as exc:
        return [], _problem(project, path, 1, f"cannot read: {exc.strerror}")
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _LOADED.get(path)
    if cached and cached[0] == version:
        return cached[1], cached[2]
    module, problem = _import_tool_file(project, path, timeout)
    specs = []
    if module is not None:
        for value in vars(module).values():
            spec = getattr(value, "__jobrunner_tool__", None)
            if isinstance(spec, ToolSpec) and all(s.fn is not spec.fn for s in specs):
                spec.source = str(path)
                specs.append(spec)
    _LOADED[path] = (version, specs, problem)
    return specs, problem


def project_tools(project: Any) -> ToolSet:
    """Every `@tool`-decorated function in `jobs/tools/*.py` that loads, by tool name,
    and a problem for each file that does not (or defines a tool another file defines)."""
    found = ToolSet({})
    tools_dir = project.tools_dir
    if not tools_dir.is_dir():
        return found
    timeout = project.settings.tool_import_timeout
    owners: dict[str, Path] = {}
    twice: set[str] = set()
    # A file may open project files as it loads: relative paths mean the project folder.
    with contextlib.chdir(project.root):
        for path in sorted(tools_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            specs, problem = _load_file(project, path, timeout)
            if problem is not None:
                found.problems.append(problem)
            for spec in specs:
                other = found.tools.get(spec.name)
                if other is not None and other.fn is not spec.fn:
                    twice.add(spec.name)
                    line = spec.fn.__code__.co_firstlineno
                    first = _shown(project, owners[spec.name])
                    shown = _shown(project, path)
                    found.problems.append(FileProblem(
                        located=f"{path}:{line}: tool {spec.name!r} is defined twice (also in "
                                f"{first})",
                        file=shown, detail=f"in {first} and {shown}:{line}",
                        names=frozenset({spec.name}), twice=True))
                    continue
                owners[spec.name] = path
                found.tools[spec.name] = spec
    for name in twice:  # ambiguous: no job may use either
        found.tools.pop(name, None)
    return found


def tool_set(project: Any) -> ToolSet:
    """Built-ins overlaid by project tools (a project may replace a built-in)."""
    loaded = project_tools(project)
    return ToolSet({**builtin_tools(), **loaded.tools}, loaded.problems)


def all_tools(project: Any) -> dict[str, ToolSpec]:
    """Every tool that loaded, by name."""
    return tool_set(project).tools


def tool_file_problems(project: Any) -> list[str]:
    """One located line per tool file that did not load."""
    return [p.located for p in project_tools(project).problems]


def job_tools(project: Any, job: Any, mcp: Any = None,
              deadline: float | None = None) -> dict[str, ToolSpec]:
    """The job's tools by the name the model calls them, each narrowed by the job's
    `[tool.NAME]` table: the Python tools it lists, and, given the run's `McpServers`
    (`tools.mcp_tools`), the tools of the MCP servers its `mcp:` entries name (which
    starts them: `McpServerError` if one cannot start or list)."""
    from jobrunner.tools.api import tightened
    from jobrunner.tools.mcp_tools import is_entry

    loaded = all_tools(project)
    tools = {name: tightened(loaded[name], job.spec.tool.get(name))
             for name in job.spec.tools if not is_entry(name)}
    if mcp is not None:
        tools.update(mcp.job_tools(job, taken={*tools, *SESSION_TOOLS}, deadline=deadline))
    return tools


def undo_tools(project: Any, job: Any) -> dict[str, ToolSpec]:
    """The tools that undo the job's tools (`compensate=`), by name: run by jobrunner after
    a failed run, never shown to the model (a job need not list them)."""
    loaded = all_tools(project)
    names = {loaded[n].compensate for n in job.spec.tools if n in loaded}
    return {name: loaded[name] for name in names if name and name in loaded}
