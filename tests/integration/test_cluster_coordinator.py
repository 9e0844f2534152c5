"""The PostgreSQL coordinator of several instances (imapjmap.cluster.pg) against a real
PostgreSQL: two coordinators in one process stand for two instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import psycopg
import pytest

from imapjmap.cluster.api import DELIVER, WATCH
from imapjmap.cluster.pg import PgCoordinator, lock_key

TAKEOVER = 0.2


@asynccontextmanager
async def coordinator(url: str, **kwargs: float) -> AsyncIterator[PgCoordinator]:
    it = PgCoordinator(url, takeover_interval=TAKEOVER, sweep_interval=0.3, **kwargs)
    await it.start()
    try:
        yield it
    finally:
        await it.aclose()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``condition()`` held (the test fails past ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_sync_lock_is_exclusive_and_waits_bounded(cluster_url: str) -> None:
    async with coordinator(cluster_url) as a, coordinator(cluster_url, sync_wait=0.3) as b:
        async with a.sync_lock("acc") as held_a:
            assert held_a
            started = time.monotonic()
            async with b.sync_lock("acc") as held_b:
                assert not held_b  # waited, in vain, then gave up
            assert 0.25 <= time.monotonic() - started < 2
            async with b.sync_lock("other") as other:
                assert other  # one account's lock is not another's
        async with b.sync_lock("acc") as held_b:
            assert held_b


async def test_sync_lock_waits_for_the_holder_to_finish(cluster_url: str) -> None:
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        order: list[str] = []

        async def first() -> None:
            async with a.sync_lock("acc"):
                order.append("a in")
                await asyncio.sleep(0.2)
                order.append("a out")

        task = asyncio.create_task(first())
        await until(lambda: bool(order))
        async with b.sync_lock("acc") as held:
            assert held
            order.append("b in")
        await task
        assert order == ["a in", "a out", "b in"]


async def test_role_has_one_holder_and_moves_when_it_dies(cluster_url: str) -> None:
    granted: list[tuple[str, str, str]] = []
    async with coordinator(cluster_url) as b:

        async def on_b(role: str, key: str) -> None:
            granted.append(("b", role, key))

        b.on_granted = on_b
        async with coordinator(cluster_url) as a:

            async def on_a(role: str, key: str) -> None:
                granted.append(("a", role, key))

            a.on_granted = on_a
            await a.want(WATCH, "acc")
            await b.want(WATCH, "acc")
            await asyncio.sleep(3 * TAKEOVER)
            assert granted == [("a", WATCH, "acc")]
            assert a.holds(WATCH, "acc") and not b.holds(WATCH, "acc")
        # a's session ended (as when its process is killed): b takes over
        waited = await until(lambda: b.holds(WATCH, "acc"))
        assert waited < 3 * TAKEOVER + 0.5
        assert granted[-1] == ("b", WATCH, "acc")


async def test_dropped_role_goes_to_the_next_who_wants_it(cluster_url: str) -> None:
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        await a.want(DELIVER, "acc s1")
        await b.want(DELIVER, "acc s1")
        assert a.holds(DELIVER, "acc s1")
        await a.drop(DELIVER, "acc s1")
        assert not a.holds(DELIVER, "acc s1")
        await until(lambda: b.holds(DELIVER, "acc s1"))
        await a.want(DELIVER, "acc s1")
        await asyncio.sleep(2 * TAKEOVER)
        assert not a.holds(DELIVER, "acc s1")


async def test_changes_and_listeners_cross_instances(cluster_url: str) -> None:
    heard: list[tuple[str, str, Mapping[str, int]]] = []
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:

        async def on_change(account: str, epoch: str, seqs: Mapping[str, int]) -> None:
            heard.append((account, epoch, dict(seqs)))

        b.on_change = on_change
        await b.listening("acc", on=True)
        await until(lambda: a.listened_elsewhere("acc"))
        assert not b.listened_elsewhere("acc")  # its own listeners are not elsewhere
        await a.publish("acc", "E1", {"Email": 7, "Mailbox": 3})
        await until(lambda: bool(heard))
        assert heard == [("acc", "E1", {"Email": 7, "Mailbox": 3})]
        await b.listening("acc", on=False)
        await until(lambda: not a.listened_elsewhere("acc"))


async def test_a_newcomer_learns_who_listens(cluster_url: str) -> None:
    async with coordinator(cluster_url) as a:
        await a.listening("acc", on=True)
        async with coordinator(cluster_url) as b:
            await until(lambda: b.listened_elsewhere("acc"))


async def test_a_dead_instances_listeners_are_forgotten(cluster_url: str) -> None:
    async with coordinator(cluster_url) as b:
        a = PgCoordinator(cluster_url, takeover_interval=TAKEOVER)
        await a.start()
        await a.listening("acc", on=True)
        await until(lambda: b.listened_elsewhere("acc"))
        # dies without a word: its connections are cut, its last message never sent
        assert a._locks is not None and a._listen is not None
        task = a._task
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        a._locks.pgconn.finish()
        a._listen.pgconn.finish()
        await until(lambda: not b.listened_elsewhere("acc"))
        await a.aclose()


async def test_first_sync_lock_is_taken_once(cluster_url: str) -> None:
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        assert await a.try_fill("acc", "M1")
        assert not await b.try_fill("acc", "M1")
        assert await b.try_fill("acc", "M2")
        await a.end_fill("acc", "M1")
        assert await b.try_fill("acc", "M1")


@pytest.mark.parametrize("key", ["", "acc", "a" * 255, "acc s1"])
def test_lock_keys_are_64_bit_and_namespaced(key: str) -> None:
    for namespace in ("sync", "watch", "deliver"):
        assert -(2**63) <= lock_key(namespace, key) < 2**63
    assert lock_key("sync", key) != lock_key("watch", key)


async def test_a_lost_connection_gives_up_every_role_then_takes_them_again(
    cluster_url: str,
) -> None:
    """PostgreSQL ends the coordinator's sessions (as a restart does): its roles are
    reported lost at once (another instance may hold them now), and taken again once it
    has connected anew."""
    events: list[tuple[str, str, str]] = []
    async with coordinator(cluster_url) as a:

        async def granted(role: str, key: str) -> None:
            events.append(("granted", role, key))

        async def lost(role: str, key: str) -> None:
            events.append(("lost", role, key))

        a.on_granted, a.on_lost = granted, lost
        await a.want(WATCH, "acc")
        assert a.holds(WATCH, "acc")
        async with await psycopg.AsyncConnection.connect(cluster_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await until(lambda: ("lost", WATCH, "acc") in events)
        assert not a.holds(WATCH, "acc")
        await until(lambda: a.holds(WATCH, "acc"))
        assert events == [
            ("granted", WATCH, "acc"),
            ("lost", WATCH, "acc"),
            ("granted", WATCH, "acc"),
        ]
        async with a.sync_lock("acc") as held:
            assert held
