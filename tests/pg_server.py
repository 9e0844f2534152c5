"""A throw-away PostgreSQL for the tests: ``initdb`` and ``pg_ctl`` from Debian's package
on a free loopback port in a temporary directory, as ``nobody`` when run as root (the
server refuses to run as root).  Each test gets a database of its own (:meth:`database`):
advisory locks and LISTEN channels are per database, so tests cannot see each other's."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from devservers._host import free_port, make_searchable, tail

_BIN_ROOT = Path("/usr/lib/postgresql")


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(
        (p for p in _BIN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self._bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="imapjmap-postgres-"))
        self.port = free_port()
        self._data = self.root / "data"
        self._log = self.root / "postgres.log"
        self._user: str | None = "nobody" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self._bindir / args[0]), *args[1:]],
            user=self._user,
            capture_output=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed: {result.stderr.decode(errors='replace')}\n{tail(self._log)}"
            )

    def start(self) -> None:
        if self._user is not None:
            make_searchable(self.root)
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self._log), "-w",
                  "-t", "30", "start")  # fmt: skip

    def database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
