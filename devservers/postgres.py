"""A throw-away PostgreSQL cluster on loopback, for tests and benchmarks.

:meth:`PostgresServer.start` runs Debian's ``initdb`` in a private directory and ``pg_ctl
start`` on a free 127.0.0.1 port (trust authentication on loopback only, no fsync: the
data is thrown away), and waits until it accepts connections.  :meth:`create_database`
makes an empty database and returns its ``postgresql://`` URL; :meth:`restart` stops and
starts the same cluster (a fault test); :meth:`stop` ends it.

Running as root, PostgreSQL refuses to run: every command then runs as the ``postgres``
user of the Debian package (else ``nobody``), who is handed the directory.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import time
import weakref
from pathlib import Path

from devservers._host import free_port
from devservers._host import make_searchable as _make_searchable
from devservers._host import tail as _tail

__all__ = ["POSTGRES_PACKAGES", "PostgresError", "PostgresServer", "find_postgres"]

POSTGRES_PACKAGES = ("postgresql",)
_RUNNING: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


class PostgresError(RuntimeError):
    """The cluster could not be made or started (the message holds its log's tail)."""


def find_postgres() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PostgresServer:
    """One cluster: its directory, port and the user its processes run as."""

    def __init__(self, root: Path, bindir: Path, port: int) -> None:
        self.root = root
        self.bindir = bindir
        self.port = port
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.user: pwd.struct_passwd | None = None  # set when running as root

    @classmethod
    def start(cls, root: Path) -> PostgresServer:
        bindir = find_postgres()
        if bindir is None:
            raise PostgresError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        server = cls(root, bindir, free_port())
        server._initdb()
        server._start()
        _RUNNING.add(server)
        return server

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs (as its user when running as root)."""
        user = self.user

        def demote() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=demote if user is not None else None,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
            cwd=self.root,
            timeout=120,
        )
        if done.returncode != 0:
            raise PostgresError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{_tail(self.log)}"
            )
        return done

    def _initdb(self) -> None:
        if os.getuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                self.user = pwd.getpwnam("nobody")
            _make_searchable(self.root)
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 64MB\n"
            )

    def _start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the cluster (fast: connections are cut), wait ``down_for`` s, start it."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_for)
        self._start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = self._run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
            "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql,
        )  # fmt: skip
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """An empty database ``name`` (dropped first if it exists); its URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def schema_url(self, schema: str, database: str = "postgres") -> str:
        """A new empty schema ``schema``; the URL of a connection that uses it."""
        self.psql(f'CREATE SCHEMA "{schema}"', database)
        return f"{self.url(database)}?options=-csearch_path%3D{schema}"

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        _RUNNING.discard(self)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()
