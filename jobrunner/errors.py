"""One error hierarchy for jobrunner, mapped to exit codes in one place (the CLI)."""

from __future__ import annotations

# Exit codes of `jobrunner run` (SPEC §3); other commands reuse 0, 1 and 2.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LIMIT = 3
EXIT_APPROVAL = 4
EXIT_TEMPFAIL = 75


class JobrunnerError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = EXIT_FAILED


class ConfigError(JobrunnerError):
    """A job file, settings file or argument is wrong: nothing was run or written.

    `problems` holds one located line each, `FILE:LINE: key: problem`.
    """

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class NotFoundError(JobrunnerError):
    """A job, run, agent or approval named on the command line does not exist."""

    exit_code = EXIT_USAGE


class StateError(JobrunnerError):
    """The state directory or database cannot be used (permissions, full disk)."""

    exit_code = EXIT_FAILED


class LockLost(StateError):
    """A held lock is gone (the connection that held it died): it may be another's now,
    so the run holding it must stop."""
