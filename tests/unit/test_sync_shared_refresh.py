"""AccountSync Rule 1: one refresh shared by concurrent requests, whose callers may be
cancelled (their clients went away) without stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from imapjmap.errors import ImapConnectionLost, ImapUnavailable
from imapjmap.store.db import Store
from imapjmap.sync.engine import AccountSync


class StallingSource:
    """Its one connection waits for ``go``, then fails as a lost upstream would."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.sessions = 0

    @contextlib.asynccontextmanager
    async def refresh_reads(self, **kwargs: Any) -> AsyncIterator[None]:
        self.sessions += 1
        await self.go.wait()
        raise ImapUnavailable("connection lost")
        yield  # pragma: no cover - never reached


async def test_a_cancelled_caller_leaves_the_shared_refresh_to_the_others() -> None:
    store = await Store.open(":memory:")
    try:
        sync = AccountSync(store, "A1")
        pool = StallingSource()
        leaving = asyncio.create_task(sync.refresh(pool))  # type: ignore[arg-type]
        staying = asyncio.create_task(sync.refresh(pool))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        leaving.cancel()
        await asyncio.sleep(0.01)
        pool.go.set()
        with pytest.raises(ImapUnavailable):
            await staying  # the run went on and its failure reached the caller still there
        assert leaving.cancelled() and pool.sessions == 1
    finally:
        await store.aclose()


async def test_a_run_whose_every_caller_left_fails_quietly() -> None:
    """Every request of the run was cancelled (clients gone, or the server stopping): its
    failure is nobody's, and asyncio must not log it as "never retrieved"."""
    store = await Store.open(":memory:")
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        sync = AccountSync(store, "A1")
        pool = StallingSource()
        leaving = asyncio.create_task(sync.refresh(pool))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        leaving.cancel()
        run = sync._task
        assert run is not None
        pool.go.set()
        await asyncio.wait({run})
        del run, sync, leaving  # the engine forgets it too, e.g. when the account goes
        gc.collect()  # an unretrieved exception is reported when its task is collected
        assert unretrieved == []
    finally:
        loop.set_exception_handler(None)
        await store.aclose()


async def test_closing_stops_the_run_in_flight() -> None:
    """aclose (before the cache closes, services.py) cancels a run still going, so it
    never fails later on a closed cache."""
    store = await Store.open(":memory:")
    try:
        sync = AccountSync(store, "A1")
        pool = StallingSource()
        caller = asyncio.create_task(sync.refresh(pool))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        run = sync._task
        assert run is not None and not run.done()
        await sync.aclose()
        assert run.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await caller
    finally:
        await store.aclose()


class FailingSource:
    """Each connection fails at once with the next of ``failures``."""

    def __init__(self, *failures: ImapUnavailable) -> None:
        self.failures = list(failures)
        self.sessions = 0

    @contextlib.asynccontextmanager
    async def refresh_reads(self, **kwargs: Any) -> AsyncIterator[None]:
        self.sessions += 1
        raise self.failures.pop(0)
        yield  # pragma: no cover - never reached


@pytest.mark.parametrize(
    ("first", "tries"),
    [
        (ImapConnectionLost("connection lost: closed by the server"), 2),  # another may serve
        (ImapUnavailable("LIST: timed out"), 1),  # a second try would double the wait
        (ImapUnavailable("cannot connect to imap.example: refused"), 1),
    ],
)
async def test_a_run_whose_connection_was_lost_runs_once_more(
    first: ImapUnavailable, tries: int
) -> None:
    """Rule 5: a connection lost under the run (Dovecot's process died) gets one more run on
    another connection, with no anchor known as with one; a timeout or a refused connect
    does not, and a second failure reaches the caller."""
    store = await Store.open(":memory:")
    try:
        sync = AccountSync(store, "A1")
        last = ImapUnavailable("cannot connect to imap.example: refused")
        source = FailingSource(first, last)
        with pytest.raises(ImapUnavailable) as raised:
            await sync.refresh(source)  # type: ignore[arg-type]
        assert source.sessions == tries
        assert raised.value is (last if tries == 2 else first)
    finally:
        await store.aclose()


# --- the runs the freshness machine lets requests share ---------------------------------------


class Runs:
    """``AccountSync._refresh_on`` replaced: each run lists, then waits for ``go``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fail = False
        self.started = 0
        self.go = asyncio.Event()
        self.listed = asyncio.Event()
        runs = self

        async def refresh_on(sync: AccountSync, pool: Any, anchor: str | None) -> None:
            runs.started += 1
            sync.freshness.listed()
            runs.listed.set()
            await runs.go.wait()
            if runs.fail:
                raise ImapUnavailable("connection lost")

        monkeypatch.setattr(AccountSync, "_refresh_on", refresh_on)


@pytest.fixture
async def sync() -> AsyncIterator[AccountSync]:
    store = await Store.open(":memory:")
    try:
        yield AccountSync(store, "A1")
    finally:
        await store.aclose()


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    return Runs(monkeypatch)


async def test_without_a_watcher_a_request_never_shares_a_run_that_listed_before_it(
    sync: AccountSync, runs: Runs
) -> None:
    first = asyncio.create_task(sync.refresh(None))  # type: ignore[arg-type]
    await runs.listed.wait()
    later = [asyncio.create_task(sync.refresh(None)) for _ in range(3)]  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    runs.go.set()
    await asyncio.gather(first, *later)
    assert runs.started == 2  # the three that came late share the next run
    await sync.refresh(None)  # type: ignore[arg-type]
    assert runs.started == 3 and sync.refreshes == 3


async def test_with_a_quiet_watcher_a_request_joins_the_run_in_flight_then_asks_nothing(
    sync: AccountSync, runs: Runs
) -> None:
    sync.freshness.watcher_attached()
    first = asyncio.create_task(sync.refresh(None))  # type: ignore[arg-type]
    await runs.listed.wait()
    second = asyncio.create_task(sync.refresh(None))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    runs.go.set()
    await asyncio.gather(first, second)
    assert runs.started == 1  # nothing reported since the run began: its LIST will do
    await sync.refresh(None)  # type: ignore[arg-type]
    assert runs.started == 1  # fresh: no round trip at all
    await sync.refresh(None, force=True)  # type: ignore[arg-type]
    assert runs.started == 2  # a write of ours: a LIST after it


async def test_an_event_during_a_run_is_not_lost(sync: AccountSync, runs: Runs) -> None:
    sync.freshness.watcher_attached()
    first = asyncio.create_task(sync.refresh(None))  # type: ignore[arg-type]
    await runs.listed.wait()
    sync.freshness.note_event()
    second = asyncio.create_task(sync.refresh(None))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    runs.go.set()
    await asyncio.gather(first, second)
    assert runs.started == 2  # the event may be after the first run's LIST
    await sync.refresh(None)  # type: ignore[arg-type]
    assert runs.started == 2  # the second run began after it and saw nothing new


async def test_a_failed_run_leaves_the_cache_stale(sync: AccountSync, runs: Runs) -> None:
    runs.fail = True
    sync.freshness.watcher_attached()
    runs.go.set()
    with pytest.raises(ImapUnavailable):
        await sync.refresh(None)  # type: ignore[arg-type]
    with pytest.raises(ImapUnavailable):
        await sync.refresh(None)  # type: ignore[arg-type]
    assert runs.started == 2 and sync.refreshes == 0
