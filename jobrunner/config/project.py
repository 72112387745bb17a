"""The project on disk: where it is, its `jobrunner.toml` settings, and its state dir."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.errors import ConfigError

if TYPE_CHECKING:
    from jobrunner.redact import Redactor
    from jobrunner.state import State

SETTINGS_FILE = "jobrunner.toml"


def find_root(home: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """The project root: `--home`, else `$JOBRUNNER_HOME`, else the nearest folder at or
    above the working directory that holds `jobrunner.toml` or `jobs/`."""
    chosen = home or os.environ.get("JOBRUNNER_HOME")
    if chosen:
        root = Path(chosen).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"{root}: project folder does not exist")
        return root
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / SETTINGS_FILE).is_file() or (folder / "jobs").is_dir():
            return folder
    raise ConfigError(
        f"{start}: no jobrunner project here or above (a folder with jobrunner.toml or jobs/); "
        "pass --home DIR or set JOBRUNNER_HOME"
    )


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; a syntax error becomes a located ConfigError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}:1: file: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}:1: file: not UTF-8 text") from exc
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"at line (\d+)", message)
        line = match.group(1) if match else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        hint = ""
        if "twice" in message and "'tools'" in message:
            hint = " (per-tool policy tables are [tool.NAME]; `tools` is the list of names)"
        raise ConfigError(f"{path}:{line}: TOML syntax: {message}{hint}") from exc


def account_home() -> Path:
    """The user account's home folder as the password database has it.

    Not `$HOME` and not `$XDG_STATE_HOME`: a shell, cron's bare environment (`env -i`),
    sudo and systemd disagree about variables, and two state folders for one project
    mean two ledgers and two sets of locks (the email sent twice, two runs at once).
    """
    import pwd

    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:  # a uid with no passwd entry (some containers): the variable is all
        return Path.home()


def state_root() -> Path:
    """Where every project's default state folder lives, whoever launches jobrunner."""
    import sys

    if os.name == "posix" and sys.platform != "darwin":
        # platformdirs' Linux default, without its `$XDG_STATE_HOME` override.
        return account_home() / ".local" / "state" / "jobrunner"
    # Elsewhere platformdirs reads no variable for it. Lazy: it costs ~25 ms.
    from platformdirs import user_state_dir

    return Path(user_state_dir("jobrunner"))


def _default_state_dir(root: Path) -> Path:
    slug = re.sub(r"[^a-z0-9_-]+", "-", root.name.lower()).strip("-") or "project"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return state_root() / f"{slug}-{digest}"


def legacy_state_dir(root: Path) -> Path | None:
    """The folder earlier versions used for this project when `$XDG_STATE_HOME` was set,
    if it exists and is not the one in use now (its runs and ledger are not seen)."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if not xdg or not os.path.isabs(xdg):
        return None
    old = Path(xdg) / "jobrunner" / _default_state_dir(root).name
    return old if old.is_dir() and old.resolve() != _default_state_dir(root).resolve() else None


def load_env_file(path: Path) -> dict[str, str]:
    """Read `KEY=VALUE` lines; refuse a file that others can read (it holds secrets)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{path}:1: env_file: cannot read: {exc.strerror}") from exc
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"{path}:1: env_file: readable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"{path}:{number}: env_file: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def _mcp_secret_names(servers: Any) -> set[str]:
    """The variables `[mcp.NAME]` tables pass to their servers as secrets (read from the
    raw table: a table that does not validate still names what must not leak)."""
    names: set[str] = set()
    for table in servers.values() if isinstance(servers, dict) else ():
        if not isinstance(table, dict):
            continue
        secrets, headers = table.get("secrets_env"), table.get("headers_env")
        if isinstance(secrets, list):
            names.update(n for n in secrets if isinstance(n, str))
        if isinstance(headers, dict):
            names.update(v for v in headers.values() if isinstance(v, str))
    return names


@dataclass
class Project:
    """A project root with its parsed settings. Cheap to build: settings are parsed
    on first use, and nothing heavier than tomllib is imported here."""

    root: Path
    _env_cache: tuple[tuple[int, ...], dict[str, str]] | None = field(default=None, repr=False)
    _redactor: tuple[tuple[str, ...], Redactor] | None = field(default=None, repr=False)
    # Validated values of jobrunner.toml that a run recalled by its fingerprint (see
    # `config.checked`): read by `setting` instead of building the settings models.
    known_settings: dict[str, Any] = field(default_factory=dict, repr=False)

    # Whether its runs reach the world outside the machine (alert channels, the
    # OpenTelemetry collector, heartbeat URLs): a dry run's sandbox does not.
    reaches_out = True

    @classmethod
    def discover(cls, home: str | os.PathLike[str] | None = None) -> Project:
        return cls(find_root(home))

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    @cached_property
    def raw_settings(self) -> tuple[dict[str, Any], str]:
        if not self.settings_path.is_file():
            return {}, ""
        return read_toml(self.settings_path)

    @cached_property
    def settings(self):  # -> jobrunner.config.settings.Settings (pydantic; imported lazily)
        from jobrunner.config.settings import load_settings

        return load_settings(self)

    def setting(self, key: str) -> Any:
        """One validated top-level setting: as recalled, else from `settings`."""
        if key in self.known_settings:
            return self.known_settings[key]
        return getattr(self.settings, key)

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def tools_dir(self) -> Path:
        return self.jobs_dir / "tools"

    @property
    def memory_dir(self) -> Path:
        return self.root / "memory"

    def job_path(self, name: str) -> Path:
        return self.jobs_dir / f"{name}.toml"

    def job_names(self) -> list[str]:
        if not self.jobs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.jobs_dir.glob("*.toml"))

    @property
    def configured_state_dir(self) -> str:
        """`state_dir` from jobrunner.toml ("" when the default applies)."""
        raw, _ = self.raw_settings
        value = raw.get("state_dir")
        return value if isinstance(value, str) else ""

    @cached_property
    def state_dir(self) -> Path:
        """Machine state (runs, traces, locks, ledger); created on first use."""
        configured = self.configured_state_dir
        if configured:
            # `~` is the account's home, as for the default: not whatever `$HOME` says.
            if configured == "~" or configured.startswith("~/"):
                configured = str(account_home()) + configured[1:]
            path = Path(configured)
            path = path if path.is_absolute() else self.root / path
        else:
            path = _default_state_dir(self.root)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @property
    def env_file(self) -> Path | None:
        """The `env_file` named in jobrunner.toml (relative to the project), if any."""
        raw, _ = self.raw_settings
        env_file = raw.get("env_file")
        if not env_file or not isinstance(env_file, str):
            return None
        path = Path(env_file).expanduser()
        return path if path.is_absolute() else self.root / path

    def env_values(self) -> dict[str, str]:
        """The env_file's values (read again when the file changes; refused like
        `load_env` refuses it: a secret file others can read is an error, not a hint)."""
        path = self.env_file
        if path is None:
            return {}
        try:
            info = path.stat()
        except OSError as exc:
            raise ConfigError(f"{path}:1: env_file: cannot read: {exc.strerror}") from exc
        key = (info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode)
        if self._env_cache is None or self._env_cache[0] != key:
            self._env_cache = (key, load_env_file(path))
        return dict(self._env_cache[1])

    def load_env(self) -> None:
        """Load `env_file` into the environment (existing variables win)."""
        for key, value in self.env_values().items():
            os.environ.setdefault(key, value)

    def secret_values(self) -> list[str]:
        """Every value that must never appear in a trace, record, report or alert: the
        API key, every env_file value (read here, whether or not `load_env` ran: a
        listing command never loads it), the variables named in `secrets = [...]` (from
        the environment, else the env_file), the SMTP password, and what MCP servers get
        through `secrets_env` and `headers_env`."""
        file_values = self.env_values()
        names = {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", *file_values}
        raw, _ = self.raw_settings
        names.update(n for n in raw.get("secrets", []) if isinstance(n, str))
        smtp = raw.get("smtp")
        if isinstance(smtp, dict) and isinstance(smtp.get("password_env"), str):
            names.add(smtp["password_env"])
        names.update(_mcp_secret_names(raw.get("mcp")))
        values = {os.environ.get(n) or file_values.get(n, "") for n in names}
        values |= set(file_values.values())
        return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def redactor(self) -> Redactor:
        """The project's one Redactor: everything written to the state, the memory or
        the output goes through it. Rebuilt when the set of secret values changes."""
        from jobrunner.redact import Redactor

        values = tuple(self.secret_values())
        if self._redactor is None or self._redactor[0] != values:
            self._redactor = (values, Redactor(list(values)))
        return self._redactor[1]

    def store(self) -> State:
        """The project's state (see `jobrunner.state`), writing through its Redactor."""
        from jobrunner.state import open_state

        return open_state(self)
