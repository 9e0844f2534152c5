"""The PostgreSQL cache backend on a real, throw-away PostgreSQL cluster (``store.pg``).

What only PostgreSQL has: several instances migrating at once, writes of one account from
two instances that must not interleave, the server going away and coming back, the
server-side read budget.  The rest of the store's behaviour is the SQLite tests' own, run
again with ``--cache-backend=postgresql``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devservers.postgres import PostgresServer
from imapjmap.config import CacheConfig
from imapjmap.errors import CacheCorrupt
from imapjmap.http.app import make_app
from imapjmap.store import emails as em
from imapjmap.store import pg, schema
from imapjmap.store import queries as q
from imapjmap.store.db import CacheUnavailable, Store, TransactionTooLong, Tx
from tests.integration.conftest import Jmap, proxy_config

A = "acct-a"


@pytest.fixture
def fresh(postgres: PostgresServer) -> str:
    """The URL of an empty schema of its own."""
    return postgres.schema_url(f"p_{secrets.token_hex(6)}")


@pytest.fixture
def own_cluster() -> Iterator[PostgresServer]:
    """A cluster of the test's own, for the tests that stop it."""
    root = Path(tempfile.mkdtemp(prefix="imapjmap-postgres-"))
    server = PostgresServer.start(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_instances_starting_at_once_migrate_once(fresh: str) -> None:
    """Four instances open an empty database at the same moment: one migrates while the
    others wait on the lock of all accounts, then each finds the schema current."""
    stores = await asyncio.gather(*(Store.open(fresh, readers=1) for _ in range(4)))
    try:
        versions = await stores[0].read(
            lambda tx: tx.all("SELECT application_id, version FROM imapjmap_schema")
        )
        assert versions == [(schema.APPLICATION_ID, schema.SCHEMA_VERSION)]
        await stores[1].run(lambda tx: q.ensure_account(tx, A, "alice"))
        assert (await stores[3].read(lambda tx: q.account(tx, A))) is not None
    finally:
        for store in stores:
            await store.aclose()


async def test_another_programs_tables_are_refused(postgres: PostgresServer, fresh: str) -> None:
    schema_name = fresh.rpartition("%3D")[2]
    postgres.psql(f'CREATE TABLE "{schema_name}".orders (id int)')
    with pytest.raises(CacheCorrupt, match="another program's tables"):
        await Store.open(fresh)


async def test_a_newer_schema_is_refused(fresh: str) -> None:
    store = await Store.open(fresh, readers=0)
    await store.run(lambda tx: tx.execute("UPDATE imapjmap_schema SET version = 99"))
    await store.aclose()
    with pytest.raises(CacheCorrupt, match="newer than this imapjmap understands"):
        await Store.open(fresh)


async def test_a_later_migration_upgrades_the_database(fresh: str) -> None:
    store = await Store.open(fresh, readers=0, migrations=schema.MIGRATIONS[:2])
    await store.run(lambda tx: q.ensure_account(tx, A, "alice"))
    await store.aclose()
    store = await Store.open(fresh, readers=0)
    try:
        assert await store.read(lambda tx: q.account(tx, A)) is not None
        assert await store.read(lambda tx: tx.scalar("SELECT count(*) FROM blobs")) == 0
    finally:
        await store.aclose()


async def test_big_modseqs_and_uidvalidities_fit(fresh: str) -> None:
    """BIGINT columns: a 63-bit HIGHESTMODSEQ and a UIDVALIDITY above 2^31 round-trip."""
    store = await Store.open(fresh, readers=1)
    box = q.MailboxRow(A, "M1", "INBOX", "INBOX", uidvalidity=4_000_000_000)

    def write(tx: Tx) -> None:
        q.ensure_account(tx, A, "alice")
        q.insert_mailbox(tx, box, seq=q.next_seq(tx, A, ["Mailbox"]))
        q.update_mailbox_cursor(
            tx, dataclasses.replace(box, highestmodseq=2**63 - 1, uidvalidity=2**32 - 1)
        )

    try:
        await store.run(write, account=A)
        row = await store.read(lambda tx: q.mailbox(tx, A, "M1"), account=A)
        assert row is not None
        assert (row.highestmodseq, row.uidvalidity) == (2**63 - 1, 2**32 - 1)
    finally:
        await store.aclose()


async def test_a_nul_character_in_a_header_is_stored_as_a_replacement(fresh: str) -> None:
    """PostgreSQL's text cannot hold NUL (an RFC 2047 word may decode to one): it becomes
    U+FFFD instead of failing the account's sync batch (CacheCorrupt) every time."""
    store = await Store.open(fresh, readers=1)
    row = em.EmailRow(A, "e1", "t1", 10, 0, subject="a\x00b", sort_subject="a\x00b")

    def write(tx: Tx) -> None:
        q.ensure_account(tx, A, "alice")
        em.insert_new_emails(tx, [row])
        em.set_thread_refs(tx, A, [("<m\x00@x>", "t1", "a\x00b")])

    try:
        await store.run(write, account=A)
        got = await store.read(lambda tx: em.email(tx, A, "e1"), account=A)
        assert got is not None and got.subject == got.sort_subject == "a\ufffdb"
        refs = await store.read(lambda tx: em.thread_refs(tx, A, ["<m\ufffd@x>"]), account=A)
        assert refs == {"<m\ufffd@x>": ("t1", "a\ufffdb")}
    finally:
        await store.aclose()


async def test_a_table_grown_by_a_write_is_analyzed_after_it(fresh: str) -> None:
    """store.pg Rule 7: a first sync fills empty tables faster than autovacuum looks at
    them; the planner's statistics must follow (reltuples is -1 until an ANALYZE), or the
    mailbox counts run as nested loops over sequential scans (seconds each)."""
    store = await Store.open(fresh, readers=1)

    def fill(count: int, start: int) -> Any:
        def write(tx: Tx) -> None:
            q.ensure_account(tx, A, "alice")
            tx.executemany(
                "INSERT INTO kv (account_id, key, value) VALUES (?, ?, ?)",
                [(A, f"k{n}", "v") for n in range(start, start + count)],
            )
            tx.execute(
                "INSERT OR REPLACE INTO kv (account_id, key, value) VALUES (?, 'x', 'y')", (A,)
            )

        return write

    def reltuples(tx: Tx) -> float:
        return float(tx.scalar("SELECT reltuples FROM pg_class WHERE oid = 'kv'::regclass"))

    try:
        await store.run(fill(10, 0), account=A)  # below the threshold: no ANALYZE yet
        assert await store.read(reltuples) == -1
        await store.run(fill(1_500, 10), account=A)
        assert await store.read(reltuples) == 1_511
    finally:
        await store.aclose()


async def test_queries_asked_together_are_one_round_trip(
    fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tx.all_of: a Mailbox/get's mailboxes and state (the no-change request) go to the
    server in one simple query with the transaction's BEGIN."""
    store = await Store.open(fresh, readers=1)
    sent: list[str] = []
    original = pg.PgConnection.run

    def counted(conn: pg.PgConnection, sql: str, params: Any, **kw: Any) -> Any:
        sent.append(sql)
        return original(conn, sql, params, **kw)

    monkeypatch.setattr(pg.PgConnection, "run", counted)
    box = q.MailboxRow(A, "M1", "INBOX", "INBOX")

    def write(tx: Tx) -> None:
        q.ensure_account(tx, A, "alice")
        q.insert_mailbox(tx, box, seq=q.next_seq(tx, A, ["Mailbox"]))

    try:
        await store.run(write, account=A)
        sent.clear()
        rows, seq = await store.read(
            lambda tx: q.live_mailboxes_and_state(tx, A, "Mailbox"), account=A
        )
        assert [row.id for row in rows] == ["M1"] and seq == 1
        assert len(sent) == 1
    finally:
        await store.aclose()


async def test_text_sorts_in_sqlite_byte_order(fresh: str) -> None:
    """The "C" collation: ORDER BY on text is the code point order SQLite uses, whatever the
    database's locale (a locale order would put "a" before "B")."""
    store = await Store.open(fresh, readers=0)
    names = ["b", "B", "a", "A", "é", "Z", "_"]

    def write(tx: Tx) -> None:
        q.ensure_account(tx, A, "alice")
        seq = q.next_seq(tx, A, ["Mailbox"])
        for number, name in enumerate(names):
            q.insert_mailbox(tx, q.MailboxRow(A, f"M{number}", name, name), seq=seq)

    try:
        await store.run(write, account=A)
        got = [box.imap_name for box in await store.read(lambda tx: q.live_mailboxes(tx, A))]
        assert got == sorted(names)
    finally:
        await store.aclose()


async def test_writes_of_one_account_from_two_instances_never_interleave(fresh: str) -> None:
    """Two instances (two stores) read-modify-write one account's row at once: the account's
    write lock makes the second wait for the first, as SQLite's one writer does; without it
    both would read the same value and one increment would be lost."""
    one, two = await Store.open(fresh, readers=0), await Store.open(fresh, readers=0)
    await one.run(lambda tx: q.ensure_account(tx, A, "alice"), account=A)

    def bump(tx: Tx) -> None:
        value = int(q.kv_get(tx, A, "n") or 0)
        time.sleep(0.3)  # the other instance's write arrives meanwhile
        q.kv_set(tx, A, "n", str(value + 1))

    try:
        await asyncio.gather(one.run(bump, account=A), two.run(bump, account=A))
        assert await one.read(lambda tx: q.kv_get(tx, A, "n")) == "2"
    finally:
        await one.aclose()
        await two.aclose()


async def test_writes_of_two_accounts_run_side_by_side(fresh: str) -> None:
    one, two = await Store.open(fresh, readers=0), await Store.open(fresh, readers=0)
    await one.run(lambda tx: [q.ensure_account(tx, a, a) for a in ("a", "b")])

    def slow(account: str) -> Any:
        return lambda tx: (time.sleep(0.5), q.kv_set(tx, account, "k", "v"))

    try:
        started = time.monotonic()
        await asyncio.gather(one.run(slow("a"), account="a"), two.run(slow("b"), account="b"))
        assert time.monotonic() - started < 0.9  # not one after the other
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_long_read_is_stopped_by_the_server(fresh: str) -> None:
    """Rule 6's budget: the reader connections' statement_timeout ends a statement that
    keeps the server busy (the worker thread's CPU clock does not see it)."""
    store = await Store.open(fresh, readers=1, max_transaction_seconds=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(TransactionTooLong):
            await store.read(lambda tx: tx.scalar("SELECT pg_sleep(5)"), account=A)
        assert time.monotonic() - started < 2.5
        assert await store.read(lambda tx: tx.scalar("SELECT 7")) == 7
    finally:
        await store.aclose()


async def test_a_cancelled_read_is_cancelled_on_the_server(
    postgres: PostgresServer, fresh: str
) -> None:
    store = await Store.open(fresh, readers=1)
    try:
        task = asyncio.ensure_future(store.read(lambda tx: tx.scalar("SELECT pg_sleep(30)")))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while (
            postgres.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"
            )
            != "0"
        ):
            assert time.monotonic() < deadline, "the statement still runs on the server"
            await asyncio.sleep(0.1)
        assert await store.read(lambda tx: tx.scalar("SELECT 7")) == 7
    finally:
        await store.aclose()


async def test_a_restarted_server_is_unavailable_then_used_again(
    own_cluster: PostgresServer,
) -> None:
    """Rule 4: while the server is down every transaction is CacheUnavailable; once it is
    back, the same store works again (its connections are opened anew)."""
    store = await Store.open(own_cluster.url(), readers=1)
    try:
        await store.run(lambda tx: q.ensure_account(tx, A, "alice"), account=A)
        await asyncio.to_thread(own_cluster._run, "pg_ctl", "-D", str(own_cluster.data),
                                "-m", "fast", "-w", "stop")  # fmt: skip
        with pytest.raises(CacheUnavailable):
            await store.read(lambda tx: q.account(tx, A), account=A)
        with pytest.raises(CacheUnavailable):
            await store.run(lambda tx: q.next_seq(tx, A, ["Mailbox"]), account=A)
        await asyncio.to_thread(own_cluster._start)
        assert (await store.read(lambda tx: q.account(tx, A), account=A)) is not None
        assert await store.run(lambda tx: q.next_seq(tx, A, ["Mailbox"]), account=A) == 1
    finally:
        await store.aclose()


async def test_a_value_read_on_the_event_loop_survives_restarts_budgets_and_cancels(
    own_cluster: PostgresServer,
) -> None:
    """Store.scalar_now on PostgreSQL (the event loop's own asyncio connection, db Rule
    10): unavailable while the server is down, read again at once when it is back (the
    dropped connection is opened anew), over budget TransactionTooLong, and a caller that
    gives up mid-statement leaves a connection the next read can use."""
    store = await Store.open(own_cluster.url(), readers=1, max_transaction_seconds=0.5)
    state = q.type_state_query(A, "Email")
    try:

        def write(tx: Tx) -> None:
            q.ensure_account(tx, A, "alice")
            q.next_seq(tx, A, ["Email"])

        await store.run(write, account=A)
        assert await store.scalar_now(*state, account=A) == 1
        await asyncio.to_thread(own_cluster._run, "pg_ctl", "-D", str(own_cluster.data),
                                "-m", "fast", "-w", "stop")  # fmt: skip
        with pytest.raises(CacheUnavailable):
            await store.scalar_now(*state, account=A)
        await asyncio.to_thread(own_cluster._start)
        assert await store.scalar_now(*state, account=A) == 1
        await asyncio.to_thread(own_cluster.restart)
        assert await store.scalar_now(*state, account=A) == 1  # the first read after it
        with pytest.raises(TransactionTooLong):
            await store.scalar_now("SELECT pg_sleep(3)", (), account=A)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.scalar_now("SELECT pg_sleep(0.4)", (), account=A), 0.1)
        started = time.monotonic()
        assert await store.scalar_now("SELECT 7", (), account=A) == 7
        assert time.monotonic() - started < 0.3  # not behind the abandoned sleep
    finally:
        await store.aclose()


@pytest.fixture
async def pg_jmap(
    imap_user: Any, tmp_path: Path, own_cluster: PostgresServer
) -> AsyncIterator[Jmap]:
    base = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(base, cache=CacheConfig(url=own_cluster.url()))
    async with TestClient(TestServer(make_app(cfg))) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        yield client


@pytest.mark.dovecot
async def test_requests_during_an_outage_are_server_unavailable_then_recover(
    pg_jmap: Jmap, own_cluster: PostgresServer
) -> None:
    """PostgreSQL restarted under the proxy: a request during the outage gets
    ``serverUnavailable`` (RFC 8620 §3.6.2: it may succeed later), and the next one after
    it succeeds without restarting the proxy (CORE-ERR serverUnavailable)."""
    before = await pg_jmap.ok("Mailbox/get", {"ids": None})
    await asyncio.to_thread(own_cluster._run, "pg_ctl", "-D", str(own_cluster.data),
                            "-m", "fast", "-w", "stop")  # fmt: skip
    body = await pg_jmap.request([["Mailbox/get", {"accountId": pg_jmap.account_id}, "c0"]])
    name, args, _ = body["methodResponses"][0]
    assert (name, args["type"]) == ("error", "serverUnavailable")
    await asyncio.to_thread(own_cluster._start)
    # the cache reconnects at its next transaction; the coordinator of the instances (on
    # the same database) within a few seconds: until then serverUnavailable, nothing else
    deadline = time.monotonic() + 20
    while True:
        body = await pg_jmap.request([["Mailbox/get", {"accountId": pg_jmap.account_id}, "c0"]])
        name, after, _ = body["methodResponses"][0]
        if name == "Mailbox/get":
            break
        assert (name, after["type"]) == ("error", "serverUnavailable")
        assert time.monotonic() < deadline, "the proxy did not recover"
        await asyncio.sleep(0.5)
    assert after["state"] == before["state"]
    assert {m["id"] for m in after["list"]} == {m["id"] for m in before["list"]}
