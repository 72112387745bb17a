"""A real PostgreSQL server for the tests: initdb and pg_ctl in a temporary folder, on a
free TCP port of 127.0.0.1 and a unix socket, as an unprivileged user.

The server refuses to run as root, and CI runs as root: there the cluster belongs to
`nobody` and every server command runs through `runuser`. One server per test session
(`pg_server`), a fresh database per test (`pg_url`). Import both fixtures into a test
module (`from tests.pg_server import pg_server, pg_url`).

The server trades durability for speed (`fsync=off`): a test never survives a power cut.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "jobrunner"
UNPRIVILEGED = "nobody"  # exists on every Debian system; nothing else runs as it here


def find_binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres: on PATH, else Debian's layout."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                     key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                     else 0)
    for folder in reversed(folders):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise RuntimeError("PostgreSQL server binaries not found (initdb, pg_ctl): "
                       "apt-get install postgresql")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in `base`, started with `start()`, removed with `stop()`."""

    def __init__(self, base: Path) -> None:
        self.bin = find_binaries()
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "sock"
        self.log = base / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", UNPRIVILEGED, "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_user, *args], capture_output=True, text=True,
                              timeout=120, cwd=self.base)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}{log}")

    def start(self) -> PgServer:
        self.socket_dir.mkdir(parents=True)
        if self._as_user:
            user = pwd.getpwnam(UNPRIVILEGED)
            for path in (self.base, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(self.base, 0o700)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        # Local (socket) connections trust; TCP ones need a password, as a shared server's
        # would. The superuser gets a password too, for the tests that use TCP.
        for attempt in range(5):
            self.port = free_port()
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                          "-w", "-t", "60", "-o",
                          f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                          "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                          "-c max_connections=200 -c shared_buffers=32MB", "start")
                break
            except RuntimeError:
                if attempt == 4:  # the port was taken between probe and bind: try another
                    raise
        self.admin("ALTER ROLE jobrunner PASSWORD 'jobrunner-test-pw'")
        return self

    def stop(self) -> None:
        if self.port and (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
            self.port = 0

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def url(self, dbname: str, user: str = SUPERUSER) -> str:
        """The database over the unix socket (trusted: no password)."""
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, dbname: str, user: str = SUPERUSER) -> str:
        """The database over TCP on 127.0.0.1 (needs a password)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return name


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with tempfile.TemporaryDirectory(prefix="jr-pg-") as tmp:
        server = PgServer(Path(tmp))
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return pg_server.url(pg_server.create_database())
