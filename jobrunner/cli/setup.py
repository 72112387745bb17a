"""Commands that set a project or a shell up: init, completion."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from jobrunner.cli.app import app
from jobrunner.errors import ConfigError

COMPLETE_VAR = "_JOBRUNNER_COMPLETE"
SHELLS = ("bash", "zsh")

SETTINGS_TEMPLATE = '''\
# jobrunner project settings. Every key is optional; see README ("Settings").
# state_dir = ""            # default: one folder per project in the user's state dir
# env_file = ".env"         # KEY=VALUE lines (mode 0600), read by cron and the daemon too
# secrets = ["CRM_TOKEN"]   # variables whose values are redacted everywhere
email_outbox = "outbox"     # send_email writes .eml files here while [smtp] is not set

# [defaults]                # any job key, for every job
# timezone = "Europe/Berlin"

# [[alerts.channels]]
# type = "webhook"
# url = "https://hooks.slack.com/services/..."
'''


@app.command()
def init(
    ctx: typer.Context,
    folder: Path | None = typer.Argument(None, help="The project folder (default: --home, "
                                         "else here); created if missing."),
) -> None:
    """Make a project folder: jobrunner.toml, jobs/ and memory/ (never overwrites)."""
    home = (ctx.find_root().obj or {}).get("home")
    root = (folder or home or Path.cwd()).expanduser().resolve()
    settings = root / "jobrunner.toml"
    if settings.exists():
        raise ConfigError(f"{settings}: already exists; this is a project already "
                          "(nothing changed)")
    made = []
    for sub in ("", "jobs", "memory"):
        path = root / sub
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            made.append(path)
    with open(settings, "x", encoding="utf-8") as handle:
        handle.write(SETTINGS_TEMPLATE)
    for path in [settings, *(p for p in made if p != root)]:
        typer.echo(f"created {path}")
    where = "" if root == Path.cwd().resolve() else f"--home {root} "
    typer.echo(f"next: jobrunner {where}add NAME   (a job that runs as written), then "
               f"jobrunner {where}validate")


@app.command()
def completion(
    shell: str = typer.Argument(..., help="bash or zsh."),
) -> None:
    """Print the shell completion script for bash or zsh.

    bash: add `eval "$(jobrunner completion bash)"` to ~/.bashrc.
    zsh: add `eval "$(jobrunner completion zsh)"` to ~/.zshrc (after compinit).
    Commands, options and job names complete.
    """
    if shell not in SHELLS:
        raise ConfigError(f"completion: {shell!r} is not supported (use {' or '.join(SHELLS)})")
    from typer.completion import get_completion_script

    script = get_completion_script(prog_name="jobrunner", complete_var=COMPLETE_VAR,
                                   shell=shell)
    if shell == "zsh":
        # Loaded with `eval`, not from $fpath: register the function once compinit ran.
        script = script.replace("#compdef jobrunner\n", "")
    typer.echo(script)


def completing() -> bool:
    """Whether this invocation answers the shell's completion request."""
    return bool(os.environ.get(COMPLETE_VAR))


def enable_completion() -> None:
    """Register typer's bash and zsh completion classes (only when completing: it
    costs an import the other commands do not need)."""
    from typer.completion import completion_init

    completion_init()


def job_names(incomplete: str) -> list[str]:
    """Job names of the project here, for completing a NAME argument (none when there is
    no project: completion never prints an error)."""
    from jobrunner.config.project import Project
    from jobrunner.errors import JobrunnerError

    try:
        names = Project.discover().job_names()
    except JobrunnerError:
        return []
    return [n for n in names if n.startswith(incomplete)]
