"""store/db.py: opening, migrations, transactions, error translation, serialisation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imapjmap.errors import CacheCorrupt, ProxyError
from imapjmap.store import queries as q
from imapjmap.store.db import CacheUnavailable, Store, Tx, split_statements
from imapjmap.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await Store.open(":memory:")
    yield s
    await s.aclose()


def _count(tx: Tx, table: str) -> int:
    return int(tx.scalar(f"SELECT count(*) FROM {table}"))


# --- open / close --------------------------------------------------------------------------


async def test_open_run_close_memory() -> None:
    s = await Store.open(":memory:")
    assert await s.run(lambda tx: tx.scalar("SELECT 40 + 2")) == 42
    await s.aclose()
    await s.aclose()  # idempotent
    with pytest.raises(CacheUnavailable):
        await s.run(lambda tx: 1)


async def test_pragmas_on_a_file(tmp_path: Path) -> None:
    s = await Store.open(str(tmp_path / "c.sqlite3"))
    try:

        def pragmas(tx: Tx) -> tuple[object, ...]:
            return tuple(
                tx.scalar(f"PRAGMA {p}")
                for p in (
                    "journal_mode",
                    "synchronous",
                    "foreign_keys",
                    "user_version",
                    "cache_size",
                    "wal_autocheckpoint",
                    "temp_store",
                )
            )

        assert await s.run(pragmas) == ("wal", 1, 1, SCHEMA_VERSION, -16384, 10000, 2)
        assert await s.run(lambda tx: tx.scalar("PRAGMA application_id")) == APPLICATION_ID
    finally:
        await s.aclose()


async def test_runs_on_one_worker_thread_off_the_loop(store: Store) -> None:
    idents = {await store.run(lambda tx: threading.get_ident()) for _ in range(5)}
    assert len(idents) == 1
    assert threading.get_ident() not in idents


async def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(CacheUnavailable):
        await Store.open(str(tmp_path / "no" / "such" / "dir.sqlite3"))


async def test_garbage_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes\n" * 200)
    with pytest.raises(CacheCorrupt) as info:
        await Store.open(str(path))
    assert type(info.value.__cause__).__name__ == "DatabaseError"  # chained with `from`


# --- migrations ----------------------------------------------------------------------------


async def test_reopening_a_current_file_is_a_noop(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    s = await Store.open(path)
    epoch = (await s.run(lambda tx: q.ensure_account(tx, "a1", "alice"))).epoch
    schema_sql = await s.run(lambda tx: tx.all("SELECT sql FROM sqlite_master ORDER BY name"))
    await s.aclose()

    s = await Store.open(path)
    try:
        acct = await s.run(lambda tx: q.account(tx, "a1"))
        assert acct is not None and acct.epoch == epoch
        assert await s.run(lambda tx: tx.scalar("PRAGMA user_version")) == SCHEMA_VERSION
        again = await s.run(lambda tx: tx.all("SELECT sql FROM sqlite_master ORDER BY name"))
        assert again == schema_sql
    finally:
        await s.aclose()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    s = await Store.open(path)
    await s.run(lambda tx: tx.execute("PRAGMA user_version = 999"))
    await s.aclose()
    with pytest.raises(CacheCorrupt, match=r"version 999 is newer"):
        await Store.open(path)


async def test_a_later_migration_upgrades_an_existing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    s = await Store.open(path)
    await s.run(lambda tx: q.ensure_account(tx, "a1", "alice"))
    await s.aclose()

    v2 = "CREATE TABLE extra (account_id TEXT NOT NULL, x INTEGER); CREATE INDEX ex ON extra(x);"
    s = await Store.open(path, migrations=(*MIGRATIONS, v2))
    try:
        assert await s.run(lambda tx: tx.scalar("PRAGMA user_version")) == SCHEMA_VERSION + 1
        assert await s.run(lambda tx: _count(tx, "extra")) == 0
        assert await s.run(lambda tx: q.account(tx, "a1")) is not None
    finally:
        await s.aclose()


async def test_a_failing_migration_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    await (await Store.open(path)).aclose()
    broken = "CREATE TABLE half (x INTEGER); CREATE TABLE accounts (x INTEGER);"
    with pytest.raises(CacheCorrupt, match="already exists"):
        await Store.open(path, migrations=(*MIGRATIONS, broken))
    s = await Store.open(path)
    try:
        assert await s.run(lambda tx: tx.scalar("PRAGMA user_version")) == SCHEMA_VERSION
        tables = await s.run(lambda tx: tx.all("SELECT name FROM sqlite_master"))
        assert ("half",) not in tables
    finally:
        await s.aclose()


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "other.sqlite3")
    s = await Store.open(path, migrations=())
    await s.run(lambda tx: tx.execute("CREATE TABLE notes (body TEXT)"))
    await s.aclose()
    with pytest.raises(CacheCorrupt, match="another program"):
        await Store.open(path)


async def test_migration_scripts_may_hold_triggers_and_comments() -> None:
    script = """
        CREATE TABLE t (x TEXT);  -- a comment; with a semicolon
        CREATE TABLE log (x TEXT);
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            INSERT INTO log (x) VALUES ('a;b');
        END;
        CREATE INDEX i ON t (x)
    """
    statements = list(split_statements(script))
    assert len(statements) == 4
    assert statements[1].startswith("-- a comment")  # a comment rides with the next one
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    s = await Store.open(":memory:", migrations=(script,))
    try:
        await s.run(lambda tx: tx.execute("INSERT INTO t (x) VALUES ('y')"))
        assert await s.run(lambda tx: tx.all("SELECT x FROM log")) == [("a;b",)]
    finally:
        await s.aclose()
    with pytest.raises(ValueError, match="incomplete"):
        list(split_statements("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;"))


# --- transactions --------------------------------------------------------------------------


async def test_an_exception_rolls_back_rows_and_the_counter(store: Store) -> None:
    await store.run(lambda tx: q.ensure_account(tx, "a1", "alice"))

    def failing(tx: Tx) -> None:
        seq = q.next_seq(tx, "a1", ["Mailbox"])
        q.insert_mailbox(tx, q.MailboxRow("a1", "M1", "INBOX", "Inbox"), seq=seq)
        q.kv_set(tx, "a1", "k", "v")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.run(failing)

    def snapshot(tx: Tx) -> tuple[object, ...]:
        acct = q.account(tx, "a1")
        assert acct is not None
        return (
            acct.seq,
            q.type_states(tx, "a1"),
            q.live_mailboxes(tx, "a1"),
            q.kv_get(tx, "a1", "k"),
            _count(tx, "seq_log"),
        )

    assert await store.run(snapshot) == (0, {}, [], None, 0)
    assert await store.run(lambda tx: q.next_seq(tx, "a1", ["Mailbox"])) == 1


async def test_sqlite_errors_are_translated_and_chained(store: Store) -> None:
    await store.run(lambda tx: q.ensure_account(tx, "a1", "alice"))

    def same_id_twice(tx: Tx) -> None:
        q.insert_mailbox(tx, q.MailboxRow("a1", "M1", "INBOX", "Inbox"), seq=1)
        q.insert_mailbox(tx, q.MailboxRow("a1", "M1", "Other", "Other"), seq=1)

    with pytest.raises(CacheCorrupt) as info:
        await store.run(same_id_twice)
    assert type(info.value.__cause__).__name__ == "IntegrityError"
    assert await store.run(lambda tx: q.live_mailboxes(tx, "a1")) == []  # rolled back

    with pytest.raises(CacheCorrupt, match="no such table"):
        await store.run(lambda tx: tx.all("SELECT * FROM nowhere"))
    with pytest.raises(ProxyError, match="misuse"):
        await store.run(lambda tx: tx.one("SELECT ?", ()))
    # the store is still usable after errors
    assert await store.run(lambda tx: tx.scalar("SELECT 1")) == 1


async def test_a_tx_dies_with_its_transaction(store: Store) -> None:
    leaked = await store.run(lambda tx: tx)
    with pytest.raises(RuntimeError, match="outside its transaction"):
        leaked.scalar("SELECT 1")
    with pytest.raises(RuntimeError, match="outside its transaction"):
        leaked.executemany("SELECT ?", [(1,)])


async def test_a_coroutine_function_is_refused(store: Store) -> None:
    async def not_allowed(tx: Tx) -> int:
        return 1

    with pytest.raises(TypeError, match="coroutine"):
        await store.run(not_allowed)  # type: ignore[unused-coroutine]


async def test_a_busy_file_gives_cache_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    first = await Store.open(path)
    second = await Store.open(path, busy_timeout=0.05)
    holding, release = threading.Event(), threading.Event()

    def hold_the_write_lock(tx: Tx) -> None:
        holding.set()
        release.wait(10)

    try:
        blocker = asyncio.ensure_future(first.run(hold_the_write_lock))
        await asyncio.to_thread(holding.wait, 10)
        with pytest.raises(CacheUnavailable, match="locked"):
            await second.run(lambda tx: None)
        release.set()
        await blocker
        assert await second.run(lambda tx: tx.scalar("SELECT 1")) == 1
    finally:
        release.set()
        await first.aclose()
        await second.aclose()


# --- serialisation and throughput ----------------------------------------------------------


async def test_concurrent_runs_serialise(store: Store) -> None:
    await store.run(lambda tx: q.ensure_account(tx, "a1", "alice"))

    def bump(tx: Tx) -> int:
        # A deliberately non-atomic read-modify-write: only serialisation makes it correct.
        value = int(q.kv_get(tx, "a1", "counter") or "0")
        time.sleep(0)  # let other threads run, were there any
        q.kv_set(tx, "a1", "counter", str(value + 1))
        return q.next_seq(tx, "a1", ["Email"])

    n = 300
    seqs = await asyncio.gather(*(store.run(bump) for _ in range(n)))
    assert sorted(seqs) == list(range(1, n + 1))
    assert await store.run(lambda tx: q.kv_get(tx, "a1", "counter")) == str(n)
    assert await store.run(lambda tx: q.type_state(tx, "a1", "Email")) == n


async def test_throughput_sanity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = await Store.open(str(tmp_path / "bulk.sqlite3"))
    n = 100_000

    def bulk(tx: Tx) -> None:
        q.ensure_account(tx, "a1", "alice")
        seq = q.next_seq(tx, "a1", ["Mailbox"])
        for i in range(n):
            q.insert_mailbox(tx, q.MailboxRow("a1", f"M{i}", f"box/{i}", str(i)), seq=seq)

    try:
        started = time.perf_counter()
        await s.run(bulk)
        inserted = time.perf_counter() - started
        started = time.perf_counter()
        rows = await s.run(lambda tx: q.live_mailboxes(tx, "a1"))
        read = time.perf_counter() - started
    finally:
        await s.aclose()
    assert len(rows) == n
    with capsys.disabled():
        print(
            f"\n[store] {n} insert_mailbox in one transaction: {inserted:.2f}s"
            f" ({n / inserted:,.0f}/s); read back + decode: {read:.2f}s"
        )
