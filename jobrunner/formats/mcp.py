"""`[mcp.NAME]` tables of `jobrunner.toml`: the MCP servers a project's jobs may use.

Only the declaration lives here (settings read it on every run, so it imports nothing
heavier than pydantic); starting servers, their tools and their policy are in
`jobrunner.tools.mcp_*`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from jobrunner.formats.validation import Duration, StrictModel

# What a stdio server inherits from jobrunner's environment, when set; everything else it
# gets comes from its `env` table and `secrets_env` list. (A superset of the SDK's own
# default list, which it always adds: HOME, LOGNAME, PATH, SHELL, TERM, USER.)
SAFE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE",
            "TZ", "TMPDIR")

SERVER_NAME_MAX = 32
_SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def server_name_problem(name: str) -> str | None:
    """Why `name` cannot name a server in `[mcp.NAME]`, or None."""
    if not name or len(name) > SERVER_NAME_MAX:
        return f"a server name has 1 to {SERVER_NAME_MAX} characters"
    if not _SERVER_NAME.match(name) or name.endswith("_"):
        return ("a server name is letters, digits, '-' and single '_' (not first or last): "
                "the model sees its tools as NAME__TOOL")
    return None


def _check_server_name(name: str) -> str:
    if problem := server_name_problem(name):
        raise ValueError(problem)
    return name


ServerName = Annotated[str, AfterValidator(_check_server_name)]


class McpServerConfig(StrictModel):
    """One `[mcp.NAME]` table: a stdio `command` (run in the project root) or a `url`."""

    command: list[str] | None = None  # argv of a stdio server, e.g. ["uvx", "mcp-server-time"]
    url: str | None = None  # a streamable HTTP endpoint, e.g. "https://host/mcp"
    env: dict[str, str] = Field(default_factory=dict)  # set for the stdio server (see SAFE_ENV)
    secrets_env: list[str] = Field(default_factory=list)  # passed through from jobrunner; redacted
    headers_env: dict[str, str] = Field(default_factory=dict)  # HTTP header -> variable; redacted
    timeout: Duration = 30.0  # per call (and tools/list); never past the run's deadline
    start_timeout: Duration = 30.0  # to start and complete the handshake (a cold `uvx`...)

    @model_validator(mode="after")
    def _consistent(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of `command` (a stdio server) or `url` "
                             "(streamable HTTP)")
        problem = self._stdio_problem() if self.command is not None else self._http_problem()
        problem = problem or self._names_problem()
        if problem is None and min(self.timeout, self.start_timeout) <= 0:
            problem = "`timeout` and `start_timeout` must be more than 0"
        if problem:
            raise ValueError(problem)
        return self

    def _stdio_problem(self) -> str | None:
        assert self.command is not None
        if not self.command or not self.command[0].strip():
            return "`command` is the server's argv: a non-empty list, program first"
        if self.headers_env:
            return "`headers_env` is for a `url` server"
        return None

    def _http_problem(self) -> str | None:
        assert self.url is not None
        if not re.match(r"^https?://[^/\s]+", self.url):
            return f"`url` must be an http:// or https:// URL (got {self.url!r})"
        if self.env or self.secrets_env:
            return ("`env` and `secrets_env` are for a `command` server; an HTTP server's "
                    "credentials go in `headers_env`")
        return None

    def _names_problem(self) -> str | None:
        for var in [*self.env, *self.secrets_env, *self.headers_env.values()]:
            if not _ENV_NAME.match(var):
                return f"{var!r} is not an environment variable name"
        for header in self.headers_env:
            if not _HEADER_NAME.match(header):
                return f"{header!r} is not an HTTP header name"
        if clash := sorted(set(self.env) & set(self.secrets_env)):
            return f"{clash[0]} is both in `env` and in `secrets_env`"
        return None

    @property
    def secret_names(self) -> list[str]:
        """The variables whose values jobrunner redacts: `secrets_env` and `headers_env`."""
        return [*self.secrets_env, *self.headers_env.values()]

    def secret_values(self, environ: Mapping[str, str]) -> list[str]:
        """The values jobrunner must redact: those of `secrets_env` and `headers_env`."""
        return [environ[n] for n in self.secret_names if environ.get(n)]

    def describe(self) -> str:
        """The server as a person would recognise it: its command line or its URL."""
        return " ".join(self.command) if self.command is not None else str(self.url)
