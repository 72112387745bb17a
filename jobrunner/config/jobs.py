"""Loading jobs: read a job file, merge it with `[defaults]`, validate it with located
errors, and check what needs the project: its tools, its model, the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobrunner.config.names import JOB_NAME
from jobrunner.config.project import Project, read_toml
from jobrunner.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from jobrunner.config.checked import JobBrief
    from jobrunner.config.jobfile import Job

# The job models (pydantic) are imported where a job is validated, not with this
# module: a run recalled by its fingerprint takes its lock before building them.


def _semantic_problems(project: Project, job: Job, text: str) -> list[str]:
    """Checks that need more than a type: the schedule, tools and model exist."""
    from jobrunner.config.schedule import ScheduleError, parse_schedule
    from jobrunner.config.tomlpos import key_lines, line_of

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
    problems += _tool_problems(job, where, loaded)
    problems.extend(_policy_problems(job, where, loaded.tools))
    if spec.model.startswith("replay:"):
        script = project.root / spec.model.removeprefix("replay:")
        if not script.is_file():
            problems.append(f"{where('model')}: model: replay script {script} does not exist")
    elif spec.model not in project.settings.prices():
        problems.append(
            f"{where('model')}: model: unknown model {spec.model!r} (known: "
            f"{', '.join(sorted(project.settings.prices()))}; add a [pricing.\"{spec.model}\"] "
            "table to jobrunner.toml for a newer one)"
        )
    return problems


def _tool_problems(job: Job, where: Any, loaded: Any) -> list[str]:
    """Each listed tool exists (or its file's failure says why not); each policy table is
    for a listed tool."""
    import difflib

    problems = []
    for name in job.spec.tools:
        if name not in loaded.tools:
            # A tool file that failed to load explains its own tools being unknown.
            hint = loaded.why_unknown(name)
            if hint is None:
                close = difflib.get_close_matches(name, sorted(loaded.tools), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where('tools')}: tools: unknown tool {name!r}{hint}")
    for name in job.spec.tool:
        if name not in job.spec.tools:
            problems.append(
                f"{where('tool', name)}: tool.{name}: policy for a tool the job does not list")
    return problems


def _policy_problems(job: Job, where: Any, tools: dict[str, Any]) -> list[str]:
    """A job's `[tool.NAME]` tables may tighten a tool's policy, never loosen it."""
    from jobrunner.config.jobfile import ToolPolicy
    from jobrunner.tools.api import policy_problems

    problems = []
    for name in job.spec.tools:
        if name not in tools:
            continue
        policy = job.spec.tool.get(name) or ToolPolicy()
        for key, problem in policy_problems(tools[name], policy):
            problems.append(f"{where('tool', name, key)}: tool.{name}.{key}: {problem}")
    return problems


def load_job(project: Project, name: str) -> Job:
    """Read, merge with defaults and validate one job; ConfigError lists every problem."""
    from pydantic import ValidationError

    from jobrunner.config.jobfile import Job, JobFile, merge
    from jobrunner.config.validation import located_errors

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
        raise ConfigError(located_errors(path, text, exc, JobFile, fallback)) from exc
    job = Job(name=name, path=path, spec=spec)
    problems = _semantic_problems(project, job, text)
    if problems:
        raise ConfigError(problems)
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
    if brief.model.startswith("replay:"):
        return []
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return []
    from jobrunner.config.tomlpos import key_lines, line_of

    try:
        text = brief.path.read_text(encoding="utf-8")
        line = line_of(key_lines(text), ("model",))
    except (OSError, UnicodeDecodeError):
        line = 1
    return [f"{brief.path}:{line}: model: {brief.model} {NO_KEY}"]


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
