"""store/db.py Rule 9: reads run apart, in reader processes of their own.

The functions a reader process runs must be importable there, so they are module-level
here; each test uses a real cache file (a reader process needs WAL and a path).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imapjmap.store.db import CacheUnavailable, Store, TransactionTooLong, Tx


def where_am_i(tx: Tx, tag: str) -> tuple[int, int, str, int]:
    """The process and its niceness, the argument back, and one SQL answer."""
    return os.getpid(), os.getpriority(os.PRIO_PROCESS, 0), tag, int(tx.scalar("SELECT 41 + 1"))


def spin(tx: Tx) -> None:
    """Python work that never ends: only the time budget or a stop ends it."""
    while True:
        for _ in range(1000):
            pass
        tx.check()


def fail(tx: Tx, message: str) -> None:
    raise LookupError(message)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(
        str(tmp_path / "cache.sqlite3"), processes=1, max_transaction_seconds=0.3
    )
    yield opened
    await opened.aclose()


async def test_a_read_apart_runs_in_another_process_at_a_lower_priority(store: Store) -> None:
    pid, niceness, tag, answer = await store.read_apart(where_am_i, "x", account="alice")
    assert (tag, answer) == ("x", 42)
    assert pid != os.getpid()
    assert niceness > os.getpriority(os.PRIO_PROCESS, 0)
    # the same process serves the next read: it is started once, not per read
    again = await store.read_apart(where_am_i, "y", account="alice")
    assert again[0] == pid


async def test_without_processes_a_read_apart_runs_on_a_reader_thread() -> None:
    store = await Store.open(":memory:", processes=2)  # :memory: has no readers to share
    try:
        pid, _, tag, answer = await store.read_apart(where_am_i, "x", account="alice")
    finally:
        await store.aclose()
    assert (pid, tag, answer) == (os.getpid(), "x", 42)


async def test_a_read_apart_keeps_the_time_budget(store: Store) -> None:
    """The budget counts the process's CPU, as for a read on a thread (Rule 6)."""
    with pytest.raises(TransactionTooLong) as raised:
        await store.read_apart(spin, account="alice")
    assert "cache.max_transaction_seconds" in raised.value.client_description
    assert (await store.read_apart(where_am_i, "after", account="alice"))[2] == "after"


async def test_an_error_in_the_function_reaches_the_caller(store: Store) -> None:
    with pytest.raises(LookupError, match="not there"):
        await store.read_apart(fail, "not there", account="alice")


async def test_a_cancelled_caller_stops_the_read_in_the_process(store: Store) -> None:
    unlimited = await Store.open(store.path, processes=1)  # no budget: only a stop ends it
    try:
        await unlimited.read_apart(where_am_i, "started", account="alice")
        read = asyncio.ensure_future(unlimited.read_apart(spin, account="alice"))
        await asyncio.sleep(0.2)  # spinning in the process by now
        assert unlimited.running("alice") == 1
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        await _until(lambda: unlimited.running("alice") == 0, timeout=10)  # else: forever
        assert (await unlimited.read_apart(where_am_i, "next", account="alice"))[2] == "next"
    finally:
        await unlimited.aclose()


async def test_one_account_uses_one_process_at_a_time(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "cache.sqlite3"), processes=2)
    try:
        first = asyncio.ensure_future(store.read_apart(spin, account="alice"))
        second = asyncio.ensure_future(store.read_apart(spin, account="alice"))
        await _until(lambda: store.running("alice") == 1)
        # bob gets the other process at once, though alice asked first
        assert (await store.read_apart(where_am_i, "bob", account="bob"))[2] == "bob"
        assert store.running("alice") == 1 and not second.done()
        first.cancel()
        await _until(lambda: store.running("alice") == 1 and first.done())
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    finally:
        await store.aclose()


async def test_a_reader_process_that_died_is_started_again(store: Store) -> None:
    pid = (await store.read_apart(where_am_i, "x", account="alice"))[0]
    os.kill(pid, 9)
    await asyncio.sleep(0.1)
    again = await store.read_apart(where_am_i, "y", account="alice")
    assert again[0] != pid and again[2] == "y"


async def test_aclose_ends_a_running_read_apart_within_a_second(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "cache.sqlite3"), processes=1)
    read = asyncio.ensure_future(store.read_apart(spin, account="alice"))
    await _until(lambda: store.running("alice") == 1)
    started = time.monotonic()
    await store.aclose()
    assert time.monotonic() - started < 1.5
    with pytest.raises(CacheUnavailable):
        await read
    with pytest.raises(CacheUnavailable):
        await store.read_apart(where_am_i, "late", account="alice")


async def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_caller_cancelled_while_its_process_starts_does_not_run(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "cache.sqlite3"), processes=1)
    try:
        read = asyncio.ensure_future(store.read_apart(spin, account="alice"))
        await _until(lambda: store.running("alice") == 1)  # the process is starting
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        await _until(lambda: store.running("alice") == 0, timeout=10)  # else: forever
    finally:
        await store.aclose()


async def test_aclose_ends_an_idle_reader_process_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(str(tmp_path / "cache.sqlite3"), processes=1)
    pid = (await store.read_apart(where_am_i, "x", account="alice"))[0]
    await store.aclose()
    assert not [r for r in caplog.records if "still busy" in r.getMessage()]
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(pid, 0)
