"""The cache on SQLite and on PostgreSQL, side by side in one run.

Run by hand::

    python3 bench/cache_backends.py --size 100000

It starts a private Dovecot (one user, ``--size`` generated messages in INBOX, ``mailgen``)
and a throw-away PostgreSQL cluster (``devservers.postgres``: fsync off, on the same
machine), then two in-process proxies on the same user, one whose cache is a SQLite file
and one whose cache is a PostgreSQL database, and measures:

1. the first sync of each (from the first request until the cache holds every message);
2. warm "open inbox" (``Email/query`` of the newest 50 + ``Email/get`` of their list
   properties in one request) and a request when nothing changed (``Mailbox/get`` with no
   ids, and the IMAP commands it sent), the two proxies alternating request by request.

It prints the medians and p95 of each, and the PostgreSQL / SQLite ratios (target: open
inbox within 1.5x; the no-change request still one round trip upstream), and the round
trips each request made to PostgreSQL (the store's statements and the coordinator's
queries, counted by wrapping them: bench only).  One instance
each: the several-instance run belongs to the cluster benchmark.  The machine is shared:
compare the ratios, which one run measures under the same load, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
from aiohttp.test_utils import TestServer
from mailgen import seed_inbox
from read_path import PASSWORD, CommandLog, Jmap, p95, say, timed

from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from devservers.postgres import PostgresServer
from imapjmap.cluster.pg import PgCoordinator
from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig
from imapjmap.http import views
from imapjmap.http.app import make_app
from imapjmap.store import pg

OPEN_INBOX_RATIO = 1.5


class RoundTrips:
    """Every round trip to PostgreSQL: a statement of the store (its BEGIN goes with the
    first one, a read's COMMIT is not waited for, a write's is), a value read on the event
    loop's connection and a query of the coordinator.  Bench only: the methods are wrapped."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        counter = self
        run, commit, query = pg.PgConnection.run, pg.PgConnection.commit, PgCoordinator._query
        scalar = pg.LoopReader.scalar

        def counted_run(conn: pg.PgConnection, sql: str, params: Any, **kw: Any) -> Any:
            counter.count += 1
            return run(conn, sql, params, **kw)

        def counted_commit(conn: pg.PgConnection, tx: Any) -> None:
            counter.count += not conn._reading and conn._deferred is None
            commit(conn, tx)

        async def counted_query(coordinator: PgCoordinator, sql: str, params: Any) -> Any:
            counter.count += 1
            return await query(coordinator, sql, params)

        async def counted_scalar(reader: pg.LoopReader, sql: str, params: Any) -> Any:
            counter.count += 1
            return await scalar(reader, sql, params)

        pg.PgConnection.run = counted_run  # type: ignore[method-assign]
        pg.PgConnection.commit = counted_commit  # type: ignore[method-assign]
        PgCoordinator._query = counted_query  # type: ignore[method-assign]
        pg.LoopReader.scalar = counted_scalar  # type: ignore[method-assign]

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


class Proxy:
    def __init__(self, name: str, server: TestServer, http: aiohttp.ClientSession, jmap: Jmap):
        self.name = name
        self.server = server
        self.http = http
        self.jmap = jmap
        self.open_inbox: list[float] = []
        self.no_change: list[float] = []
        self.commands: list[list[str]] = []
        self.trips: list[tuple[int, int]] = []  # (open inbox, no change) to PostgreSQL

    @classmethod
    async def start(cls, name: str, dovecot: DovecotServer, cache: CacheConfig) -> Proxy:
        cfg = Config(
            imap=ImapConfig(host=dovecot.host, port=dovecot.port, security="none"),
            server=ServerConfig(listen="127.0.0.1:0"),
            cache=cache,
        )
        server = TestServer(make_app(cfg), host="127.0.0.1")
        await server.start_server()
        http = aiohttp.ClientSession()
        base = str(server.make_url("")).rstrip("/")
        return cls(name, server, http, Jmap(http, base, "u"))

    async def first_sync(self) -> float:
        started = time.perf_counter()
        await self.jmap.session()
        await self.jmap.find_inbox()
        services = self.server.app[views.SERVICES]
        await services.sync_for(self.jmap.account_id).wait_filled()
        return time.perf_counter() - started

    async def close(self) -> None:
        await self.http.close()
        await self.server.close()


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms, p95 {p95(values) * 1000:7.1f} ms"


async def run(dovecot: DovecotServer, postgres: PostgresServer, workdir: Path, n: int) -> None:
    commands = CommandLog()
    commands.install()
    pg_trips = RoundTrips()
    pg_trips.install()
    proxies = [
        await Proxy.start("sqlite", dovecot, CacheConfig(path=str(workdir / "cache.sqlite3"))),
        await Proxy.start("postgresql", dovecot, CacheConfig(url=postgres.create_database("c"))),
    ]
    try:
        for proxy in proxies:
            seconds = await proxy.first_sync()
            say(f"{proxy.name:>10}: first sync of {n:,} messages in {seconds:.1f} s")
        for proxy in proxies:  # warm-up
            for _ in range(3):
                await proxy.jmap.open_inbox()
                await proxy.jmap.no_change()
        for _ in range(args.requests):
            for proxy in proxies:
                pg_trips.take()
                proxy.open_inbox.append(await timed(proxy.jmap.open_inbox))
                commands.take()
                opened = pg_trips.take()
                proxy.no_change.append(await timed(proxy.jmap.no_change))
                proxy.commands.append(commands.take())
                proxy.trips.append((opened, pg_trips.take()))
    finally:
        for proxy in proxies:
            await proxy.close()
    say(f"warm requests, {args.requests} of each, alternating; load {os.getloadavg()[0]:.2f}")
    for proxy in proxies:
        trips = statistics.median(len(c) for c in proxy.commands)
        say(f"{proxy.name:>10}: open inbox {_ms(proxy.open_inbox)}")
        say(f"{'':>10}  no change  {_ms(proxy.no_change)}, {trips:g} IMAP round trip(s)")
        opened, unchanged = (statistics.median(t[i] for t in proxy.trips) for i in (0, 1))
        say(f"{'':>10}  round trips to PostgreSQL: open inbox {opened:g}, no change {unchanged:g}")
    lite, pg = proxies
    ratio = statistics.median(pg.open_inbox) / statistics.median(lite.open_inbox)
    verdict = "met" if ratio <= OPEN_INBOX_RATIO else "MISSED"
    say(f"open inbox PostgreSQL / SQLite: {ratio:.2f}x (target {OPEN_INBOX_RATIO}x: {verdict})")
    ratio = statistics.median(pg.no_change) / statistics.median(lite.no_change)
    say(f"no change  PostgreSQL / SQLite: {ratio:.2f}x")


def main() -> int:
    global args
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="INBOX size (%(default)s)")
    parser.add_argument("--requests", type=int, default=30, help="warm requests of each kind")
    args = parser.parse_args()
    say(f"cache backends benchmark: --size {args.size} --requests {args.requests}")
    ensure_dovecot_installed()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-bench-"))
    dovecot = DovecotServer.start(workdir / "dovecot")
    (workdir / "postgres").mkdir()
    postgres = PostgresServer.start(workdir / "postgres")
    try:
        dovecot.add_user("u", PASSWORD)
        stats = seed_inbox(dovecot, "u", args.size)
        say(f"seeded {args.size:,} messages in {stats.seconds:.1f} s")
        asyncio.run(run(dovecot, postgres, workdir, args.size))
    finally:
        postgres.stop()
        dovecot.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


args: argparse.Namespace

if __name__ == "__main__":
    raise SystemExit(main())
