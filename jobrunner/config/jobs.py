"""Loading jobs: read a job file, merge it with `[defaults]`, validate it with located
errors, and check what needs the project: its tools, its model, the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobrunner.config.project import Project, read_toml
from jobrunner.errors import ConfigError, NotFoundError
from jobrunner.formats.names import JOB_NAME

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job

# The job models (pydantic) are imported where a job is validated, not with this
# module: a run recalled by its fingerprint takes its lock before building them.


def _semantic_problems(project: Project, job: Job, text: str) -> list[str]:
    """Checks that need more than a type: the schedule, tools and model exist."""
    from jobrunner.config.schedule import ScheduleError, parse_schedule
    from jobrunner.formats.tomlpos import key_lines, line_of

    lines = key_lines(text)
    spec = job.spec
    problems = []

    def where(*path: str) -> str:
        return f"{job.path}:{line_of(lines, path)}"

    try:
        parse_schedule(spec.schedule, spec.timezone)
    except ScheduleError as exc:
        problems.append(f"{where('schedule')}: schedule: {exc}")
    from jobrunner.tools.registry import tool_set

    loaded = tool_set(project)
    servers = project.settings.mcp
    problems += _tool_problems(job, where, loaded, servers)
    problems.extend(_policy_problems(job, where, loaded.tools, servers))
    problems.extend(_compensation_problems(job, where, loaded.tools))
    for key, model in job.models():
        problems.extend(_model_problems(project, where(*key.split(".")), key, model))
    return problems


def _model_problems(project: Project, where: str, key: str, model: str) -> list[str]:
    """A model is a replay script that exists and reads as one, or one with a price."""
    if model.startswith("replay:"):
        return _replay_problems(project.root / model.removeprefix("replay:"), where, key)
    if model in project.settings.prices():
        return []
    return [f"{where}: {key}: {_unknown_model(model, project)}"]


def _replay_problems(script: Any, where: str, key: str = "model") -> list[str]:
    """A replay script that exists and reads as one (its problems located in it)."""
    from jobrunner.models.replay import load_script

    if not script.is_file():
        return [f"{where}: {key}: replay script {script} does not exist"]
    try:
        load_script(script)
    except ConfigError as exc:
        return exc.problems
    return []


def _unknown_model(model: str, project: Project) -> str:
    """Why `model` is refused: the closest known name first (a typo is the usual cause),
    then what else there is."""
    import difflib

    known = sorted(project.settings.prices())
    close = difflib.get_close_matches(model, known, n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown model {model!r}{hint}; known: {', '.join(known)}; add a "
            f'[pricing."{model}"] table to jobrunner.toml for a newer one')


def _tool_problems(job: Job, where: Any, loaded: Any, servers: Any) -> list[str]:
    """Each listed tool exists (or its file's failure says why not), each `mcp:` entry
    names a declared server; each policy table is for a listed tool."""
    import difflib

    from jobrunner.tools import mcp_tools

    problems = []
    for name in job.spec.tools:
        if mcp_tools.is_entry(name):
            if problem := mcp_tools.entry_problem(name, servers):
                problems.append(f"{where('tools')}: tools: {problem}")
        elif name not in loaded.tools:
            # A tool file that failed to load explains its own tools being unknown.
            hint = loaded.why_unknown(name)
            if hint is None:
                close = difflib.get_close_matches(name, sorted(loaded.tools), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where('tools')}: tools: unknown tool {name!r}{hint}")
    entries = mcp_tools.entries(job)
    for name in job.spec.tool:
        server, slash, tool = name.partition("/")
        if slash and any(e.covers(server, tool) for e in entries):
            continue
        if not slash and name in job.spec.tools and not mcp_tools.is_entry(name):
            continue
        hint = (f" (an MCP tool's table is [tool.\"SERVER/TOOL\"], and the job must list "
                f"mcp:{server} or mcp:{name})") if slash else ""
        problems.append(f"{where('tool', name)}: tool.{name}: policy for a tool the job "
                        f"does not list{hint}")
    return problems


def _compensation_problems(job: Job, where: Any, tools: dict[str, Any]) -> list[str]:
    """Each compensation a listed tool declares is a registered tool that takes the
    original call's `args` and `result`."""
    import inspect

    problems = []
    for name in job.spec.tools:
        undo = getattr(tools.get(name), "compensate", None)
        if undo is None:
            continue
        if undo not in tools:
            problems.append(f"{where('tools')}: tools: {name} declares compensate={undo!r}, "
                            "which is not a registered tool")
            continue
        params = inspect.signature(tools[undo].fn).parameters
        missing = [p for p in ("args", "result") if p not in params]
        if missing:
            problems.append(f"{where('tools')}: tools: {undo}, the compensation of {name}, "
                            f"must take `args` and `result` (it lacks {', '.join(missing)})")
    return problems


def _policy_problems(job: Job, where: Any, tools: dict[str, Any],
                     servers: dict[str, Any]) -> list[str]:
    """A job's `[tool.NAME]` tables may tighten a tool's policy, never loosen it. An MCP
    tool's own policy is known once its server is asked (`validate --connect`); until
    then its table is checked against the loosest policy the server could give."""
    from jobrunner.config.jobfile import ToolPolicy
    from jobrunner.tools import mcp_tools
    from jobrunner.tools.api import policy_problems

    problems = []
    for name in job.spec.tools:
        if name not in tools:
            continue
        policy = job.spec.tool.get(name) or ToolPolicy()
        for key, problem in policy_problems(tools[name], policy):
            problems.append(f"{where('tool', name, key)}: tool.{name}.{key}: {problem}")
    for name, policy in job.spec.tool.items():
        server, slash, tool = name.partition("/")
        if not slash or server not in servers:
            continue
        if policy.paths is not None:
            problems.append(f"{where('tool', name, 'paths')}: tool.{name}.paths: folders "
                            "are for jobrunner's file tools, not MCP tools")
        spec = mcp_tools.provisional_spec(server, tool, servers[server])
        for key, problem in policy_problems(spec, policy):
            problems.append(f"{where('tool', name, key)}: tool.{name}.{key}: {problem}")
    return problems


def load_job(project: Project, name: str) -> Job:
    """Read, merge with defaults and validate one job; ConfigError lists every problem."""
    from pydantic import ValidationError

    from jobrunner.config.jobfile import Job, JobFile, merge
    from jobrunner.formats.validation import in_line_order, located_errors

    if not JOB_NAME.match(name):
        raise ConfigError(f"{name!r}: job names match [a-z0-9][a-z0-9_-]{{0,63}}")
    path = project.job_path(name)
    if not path.is_file():
        known = ", ".join(project.job_names()) or "none"
        raise NotFoundError(f"{path}: no such job (jobs: {known})")
    raw, text = read_toml(path)
    settings = project.settings
    if isinstance(raw.get("tools"), dict):
        raise ConfigError(
            f"{path}:1: tools: a list of tool names; per-tool policy goes in [tool.NAME] tables"
        )
    merged = merge(settings.defaults, raw)
    try:
        spec = JobFile.model_validate(merged)
    except ValidationError as exc:
        fallback = (project.settings_path, project.raw_settings[1])
        raise ConfigError(in_line_order(located_errors(path, text, exc, JobFile,
                                                      fallback))) from exc
    job = Job(name=name, path=path, spec=spec)
    problems = _semantic_problems(project, job, text)
    if problems:
        raise ConfigError(in_line_order(problems))
    return job


NO_KEY = ("needs an Anthropic API key: set ANTHROPIC_API_KEY in the environment, or in the "
          "env_file named by jobrunner.toml (mode 0600), where cron and the daemon see it too; "
          'for an offline run use model = "replay:PATH"')


def environment_problems(project: Project, job: Job | JobBrief) -> list[str]:
    """What the environment lacks for the job to run, checked before anything is run or
    recorded: the project's env_file is readable and private (ConfigError otherwise), and a
    job on an Anthropic model has a key. A missing key is the operator's to fix: it must
    not reach the model, the agent's memory or the job's pause count."""
    import os

    brief = job.brief
    project.load_env()
    # A brief (a run recalled by its fingerprint) knows the job's models; its MCP
    # servers' variables are checked once the job is validated in full, under the lock.
    problems = [] if job is brief else _mcp_environment_problems(project, job)
    remote = [(k, m) for k, m in brief.models if not m.startswith("replay:")]
    if not remote:
        return problems
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return problems
    from jobrunner.formats.tomlpos import key_lines, line_of

    key, model = remote[0]
    try:
        text = brief.path.read_text(encoding="utf-8")
        line = line_of(key_lines(text), tuple(key.split(".")))
    except (OSError, UnicodeDecodeError):
        line = 1
    return [*problems, f"{brief.path}:{line}: {key}: {model} {NO_KEY}"]


def _mcp_environment_problems(project: Project, job: Job) -> list[str]:
    """Each variable an MCP server the job uses passes on (`secrets_env`, `headers_env`)
    is set: a server started without its credentials fails at 3 a.m., not now."""
    import importlib.util
    import os

    from jobrunner.formats.tomlpos import key_lines, line_of
    from jobrunner.tools.mcp_tools import entries

    servers = list(dict.fromkeys(e.server for e in entries(job)))
    if servers and importlib.util.find_spec("mcp") is None:  # looked up, not imported
        line = line_of(key_lines(job.path.read_text(encoding="utf-8")), ("tools",))
        return [f"{job.path}:{line}: tools: MCP servers need the mcp package: pip install "
                "'jobrunner[mcp]'"]
    problems = []
    lines = key_lines(project.raw_settings[1])
    declared = project.settings.mcp
    for server in servers:
        config = declared.get(server)
        if config is None:
            continue
        for key, names in (("secrets_env", config.secrets_env),
                           ("headers_env", list(config.headers_env.values()))):
            for var in names:
                if not os.environ.get(var):
                    line = line_of(lines, ("mcp", server, key))
                    problems.append(f"{project.settings_path}:{line}: mcp.{server}.{key}: "
                                    f"{var} is not set (job {job.name} uses this server; set "
                                    "it in the environment or the env_file)")
    return problems


def load_all(project: Project) -> tuple[list[Job], list[str]]:
    """Every declared job that validates, and the problems of those that do not (and of
    each tool file that does not load, whether or not a job needs it)."""
    from jobrunner.tools.registry import tool_file_problems

    jobs, problems = [], tool_file_problems(project)
    for name in project.job_names():
        if not JOB_NAME.match(name):
            continue
        try:
            jobs.append(load_job(project, name))
        except ConfigError as exc:
            problems.extend(exc.problems)
    bad = [p.stem for p in project.jobs_dir.glob("*.toml") if not JOB_NAME.match(p.stem)]
    problems.extend(f"{project.jobs_dir / (n + '.toml')}:1: name: job names match "
                    "[a-z0-9][a-z0-9_-]{0,63}" for n in bad)
    return jobs, problems


def agent_history(project: Project, agent: str) -> int:
    """How many earlier versions an agent keeps: the largest `[memory] history` of the
    jobs that name it, so one job's small count never trims what another keeps. Only job
    files that can name the agent are validated (a run of one of 200 jobs must not pay
    for parsing them all)."""
    everyone = project.settings.defaults.get("agent") == agent
    counts = []
    for name in project.job_names():
        if name != agent and not everyone:
            try:
                if agent not in project.job_path(name).read_text(encoding="utf-8"):
                    continue
            except (OSError, UnicodeDecodeError):
                continue
        try:
            job = load_job(project, name)
        except ConfigError:
            continue
        if job.agent == agent:
            counts.append(job.spec.memory.history)
    from jobrunner.config.jobfile import MemoryPolicy

    return max(counts, default=MemoryPolicy().history)


def mcp_tool_listing(project: Project, job: Job, connect: bool) -> tuple[list[dict], list[str]]:
    """The job's MCP tools with their resolved policy, and the problems found, for
    `validate`. Without `connect` only what the job declares is known (each entry, its
    server); with it each server is started, listed and closed, and a policy table that
    would loosen what the server's annotations say is a problem."""
    from jobrunner.formats.tomlpos import key_lines, line_of
    from jobrunner.tools import mcp_tools
    from jobrunner.tools.api import policy_problems
    from jobrunner.tools.mcp_config import McpServerError

    wanted = [n for n in job.spec.tools if mcp_tools.is_entry(n)]
    if not connect:
        return [{"entry": n, "server": mcp_tools.parse_entry(n).server} for n in wanted], []
    listing: list[dict] = []
    problems: list[str] = []
    lines = key_lines(job.path.read_text(encoding="utf-8"))
    with mcp_tools.McpServers(project.root, project.settings.mcp) as servers:
        try:
            specs = servers.job_tools(job, taken={*job.spec.tools, "finish", "update_memory"})
        except (McpServerError, ConfigError) as exc:
            return [], [f"{job.path}:{line_of(lines, ('tools',))}: tools: {exc}"]
        for name, spec in specs.items():
            server, tool = servers.origins[name]
            listing.append(mcp_tools.describe(spec, (server, tool)))
            key = mcp_tools.policy_key(server, tool)
            policy = job.spec.tool.get(key)
            untightened = servers.untightened.get(name)
            for field, problem in policy_problems(untightened, policy) if policy else ():
                problems.append(f"{job.path}:{line_of(lines, ('tool', key, field))}: "
                                f"tool.{key}.{field}: {problem}")
    return listing, problems
