"""The PostgreSQL coordinator of several instances (imapjmap.cluster.pg) against a real
PostgreSQL: two coordinators in one process stand for two instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import psycopg
import pytest

from imapjmap.cluster.api import DELIVER, REQUEST, UPLOAD, WATCH, Vouched
from imapjmap.cluster.pg import PgCoordinator, lock_key, slot_key

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


# --- slots: per-account limits held over the instances ------------------------------------


async def _slot_locks_held(url: str, account_id: str, limit: int) -> int:
    """How many of the account's request slots PostgreSQL sees held, by anyone."""
    keys = [slot_key(REQUEST, account_id, n) for n in range(limit + 2)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
            " AND granted AND ((classid::bigint << 32) | objid::bigint) = ANY(%s)",
            (keys,),
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _taken_within(it: PgCoordinator, account_id: str, limit: int, timeout: float) -> None:
    started = time.monotonic()
    while await it.take_slot(REQUEST, account_id, limit) is None:
        assert time.monotonic() - started < timeout, "no slot came back in time"
        await asyncio.sleep(0.02)


async def test_slots_hold_the_limit_over_instances_core_sess_04(cluster_url: str) -> None:
    """maxConcurrentRequests per account over two instances (CORE-SESS-04): two slots in
    all, wherever they are taken; one try takes one lock, never more."""
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        first = await a.take_slot(REQUEST, "acc", 2)
        assert first is not None
        assert await _slot_locks_held(cluster_url, "acc", 2) == 1
        second = await b.take_slot(REQUEST, "acc", 2)
        assert second is not None
        assert await a.take_slot(REQUEST, "acc", 2) is None
        assert await b.take_slot(REQUEST, "acc", 2) is None
        assert await a.take_slot(UPLOAD, "acc", 2) is not None  # another limit's slots
        assert await a.take_slot(REQUEST, "other", 2) is not None  # another account's
        assert await _slot_locks_held(cluster_url, "acc", 2) == 2
        await b.give_slot(REQUEST, "acc", second, linger=0)  # given back to PostgreSQL at once
        await until(lambda: not b._leases[REQUEST, "acc"].held)
        assert await a.take_slot(REQUEST, "acc", 2) is not None
        assert await b.take_slot(REQUEST, "acc", 2) is None


async def test_an_idle_slot_is_taken_again_without_a_round_trip(cluster_url: str) -> None:
    """A slot given back with a linger stays this instance's: taking it again asks nothing
    of PostgreSQL; after the linger it is given back."""
    async with coordinator(cluster_url) as a:
        token = await a.take_slot(REQUEST, "acc", 2)
        assert token is not None
        await a.give_slot(REQUEST, "acc", token, linger=0.3)
        asked: list[str] = []
        query = a._query

        async def counted(sql: str, params: tuple[object, ...]) -> object:
            asked.append(sql)
            return await query(sql, params)

        a._query = counted  # type: ignore[method-assign]
        for _ in range(3):
            token = await a.take_slot(REQUEST, "acc", 2)
            assert token is not None
            await a.give_slot(REQUEST, "acc", token, linger=0.3)
        assert asked == []
        assert await _slot_locks_held(cluster_url, "acc", 2) == 1
        await until(lambda: bool(asked))  # the linger ran out: given back
        await until(lambda: not a._leases[REQUEST, "acc"].held)
        assert await _slot_locks_held(cluster_url, "acc", 2) == 0


async def test_an_idle_slot_goes_to_the_instance_that_waits(cluster_url: str) -> None:
    """An instance that finds every slot held asks for one: the other gives its idle slot
    up at once (not after its linger) and says so, which wakes the waiter."""
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        token = await a.take_slot(REQUEST, "acc", 1)
        assert token is not None
        await a.give_slot(REQUEST, "acc", token, linger=60)  # kept idle for a minute
        started = time.monotonic()
        assert await b.take_slot(REQUEST, "acc", 1) is None  # asks a for it
        await b.wait_slot(REQUEST, "acc", 5.0)
        assert await b.take_slot(REQUEST, "acc", 1) is not None
        assert time.monotonic() - started < 2.0
        assert await a.take_slot(REQUEST, "acc", 1) is None


async def test_a_dead_instances_slots_come_back(cluster_url: str) -> None:
    """PostgreSQL ends an instance's session (it died): its slots are free for the others
    at once; the dead session's tokens are not given back twice when it connects again."""
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        tokens = [await a.take_slot(REQUEST, "acc", 2) for _ in range(2)]
        assert None not in tokens
        assert await b.take_slot(REQUEST, "acc", 2) is None
        async with await psycopg.AsyncConnection.connect(cluster_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = ''"
                " AND pid = ANY(%s)",
                ([a._locks.info.backend_pid, a._listen.info.backend_pid],),  # type: ignore[union-attr]
            )
        # PostgreSQL ends the sessions a moment after it is asked to
        for _ in range(2):
            await _taken_within(b, "acc", 2, timeout=2.0)
        await until(lambda: a._locks is not None and a._generation == 2)
        for token in tokens:
            await a.give_slot(REQUEST, "acc", token or 0, linger=0)  # taken on the dead session
        assert await a.take_slot(REQUEST, "acc", 2) is None  # b holds both
        assert await _slot_locks_held(cluster_url, "acc", 2) == 2


async def test_a_take_cancelled_in_its_round_trip_leaks_no_slot(cluster_url: str) -> None:
    """The request that asked for a slot goes away while PostgreSQL grants it: the slot is
    this instance's, idle, and given back soon after (else it would be held for good)."""
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:
        taking = asyncio.create_task(a.take_slot(REQUEST, "acc", 1))
        await asyncio.sleep(0)  # its round trip has started
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        await until(lambda: bool(a._leases[REQUEST, "acc"].held))
        assert a._leases[REQUEST, "acc"].busy == 0
        await _taken_within(b, "acc", 1, timeout=3.0)
        assert not a._leases[REQUEST, "acc"].held


async def test_postgresql_probes_the_lock_session_of_a_vanished_machine(cluster_url: str) -> None:
    """A machine that vanishes sends no TCP reset: PostgreSQL's TCP keepalives on the lock
    session end it (and free the instance's slots, roles and sync locks) within about 25 s
    instead of the system default's two hours."""
    async with coordinator(cluster_url) as a:
        assert a._locks is not None
        cursor = await a._locks.execute(
            "SELECT current_setting('tcp_keepalives_idle'),"
            " current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count')"
        )
        assert await cursor.fetchone() == ("10", "5", "3")


async def test_listeners_elsewhere_coming_and_going_are_told_once(cluster_url: str) -> None:
    """The watcher of an account whose listeners are all on other instances runs where the
    login is: that instance is told when the first comes and the last leaves."""
    told: list[tuple[str, bool]] = []
    async with coordinator(cluster_url) as a, coordinator(cluster_url) as b:

        async def on_listened(account: str) -> None:
            told.append((account, a.listened_elsewhere(account)))

        a.on_listened = on_listened
        await b.listening("acc", on=True)
        await until(lambda: told == [("acc", True)])
        await b.listening("acc", on=True)  # said again (a hello's answer): no news
        await b.listening("acc", on=False)
        await until(lambda: told == [("acc", True), ("acc", False)])


async def test_a_vouch_takes_the_first_yes_and_no_answer_is_no(cluster_url: str) -> None:
    """A push token's claim goes to every instance; those holding the login answer."""
    async with (
        coordinator(cluster_url) as asker,
        coordinator(cluster_url) as stale,
        coordinator(cluster_url) as holder,
    ):
        asked: list[tuple[str, str]] = []

        def says(verdict: bool | None) -> Callable[[str, str], bool | None]:
            def answer(account: str, claim: str) -> bool | None:
                asked.append((account, claim))
                return verdict if account == "acc" else None

            return answer

        stale.on_vouch = says(False)  # a login holding another password: a no
        holder.on_vouch = says(True)
        assert await asker.vouch("acc", "the claim", 2.0) == Vouched(())
        assert ("acc", "the claim") in asked
        # the yes names the login's shares, as the holder knows them (for the stream's push)
        stale.on_shares = lambda account: ("Astale",)
        holder.on_shares = lambda account: ("Ashare1", "Ashare2") if account == "acc" else None
        assert await asker.vouch("acc", "the claim", 2.0) == Vouched(("Ashare1", "Ashare2"))
        holder.on_vouch = says(None)
        started = time.monotonic()
        assert not await asker.vouch("acc", "the claim", 2.0)  # a no, then the grace
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        assert not await asker.vouch("other", "the claim", 0.5)  # nobody holds it
        assert time.monotonic() - started >= 0.5
        assert not asker._vouches  # every question forgotten
