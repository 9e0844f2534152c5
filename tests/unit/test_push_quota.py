"""Quota's state in push (QUOTA-10, :mod:`imapjmap.push.quota`): the quotas are read again
when Email's state moves and someone listens for Quota, at most once per interval, and
the hub carries Quota's new state in the same StateChange.  A real cache; the server's
quotas are a fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from imapjmap.cluster.local import Alone
from imapjmap.errors import UpstreamUnavailable
from imapjmap.push.hub import Hub
from imapjmap.push.quota import QuotaFollower
from imapjmap.store import queries as q
from imapjmap.store.db import Store
from imapjmap.sync import quota
from imapjmap.upstream.api import QuotaReading

INTERVAL = 0.2


class FakeQuotas:
    """A server whose one quota counts ``used`` messages; ``gate`` holds a reading."""

    def __init__(self, offers: bool = True) -> None:
        self.offers = offers
        self.used = 0
        self.asked = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    @property
    def offers_quota(self) -> bool:
        return self.offers

    async def quotas(self) -> list[QuotaReading]:
        self.asked += 1
        used = self.used  # what the server says is what it had when asked
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise UpstreamUnavailable("connection lost")
        return [QuotaReading("User quota", "MESSAGE", used, 100)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "cache.sqlite3"))
    await store.run(lambda tx: q.ensure_account(tx, "A1", "alice"))
    try:
        yield store
    finally:
        await store.aclose()


async def _quota_seq(store: Store) -> int:
    return await store.read(lambda tx: q.type_state(tx, "A1", "Quota"))


async def _mail_moved(store: Store) -> None:
    await store.run(lambda tx: q.next_seq(tx, "A1", ["Email"]))


async def test_a_burst_of_mail_reads_the_quotas_twice(store: Store) -> None:
    """Rule 1: one reading at once, one after the interval (which pokes), none between."""
    server, clock, poked = FakeQuotas(), Clock(), []

    async def poke(account_id: str) -> None:
        poked.append(account_id)

    follower = QuotaFollower(store, lambda _: server, poke, INTERVAL, clock)
    try:
        assert await follower.email_moved("A1") is True
        first = await _quota_seq(store)
        assert first > 0 and server.asked == 1
        for _ in range(10):
            server.used += 1
            assert await follower.email_moved("A1") is False
        assert server.asked == 1 and poked == []
        clock.now += INTERVAL
        await asyncio.sleep(INTERVAL * 2)
        assert server.asked == 2 and poked == ["A1"]
        assert await _quota_seq(store) > first
        clock.now += INTERVAL
        assert await follower.email_moved("A1") is False  # read, and nothing moved
        assert server.asked == 3
    finally:
        await follower.aclose()


async def test_a_change_during_a_reading_reads_once_more(store: Store) -> None:
    """Rule 2: the answer may predate the change heard while it was awaited."""
    server, clock, poked = FakeQuotas(), Clock(), []

    async def poke(account_id: str) -> None:
        poked.append(account_id)

    follower = QuotaFollower(store, lambda _: server, poke, INTERVAL, clock)
    try:
        server.gate = asyncio.Event()
        reading = asyncio.ensure_future(follower.email_moved("A1"))
        await asyncio.sleep(0.05)
        server.used += 1
        assert await follower.email_moved("A1") is False  # under way: not a second one now
        server.gate.set()
        assert await reading is True
        clock.now += INTERVAL
        await asyncio.sleep(INTERVAL * 2)
        assert server.asked == 2 and poked == ["A1"]
        records = await store.read(lambda tx: q.kv_get(tx, "A1", "quota.records"))
        assert records is not None and '"used": 1' in records
    finally:
        await follower.aclose()


async def test_no_reading_without_quotas_and_none_kept_after_a_failure(store: Store) -> None:
    """Rule 3 and Rule 4."""
    silent, absent = FakeQuotas(offers=False), Clock()

    async def poke(account_id: str) -> None:
        raise AssertionError("no poke expected")

    none = QuotaFollower(store, lambda _: silent, poke, INTERVAL, absent)
    assert await none.email_moved("A1") is False and silent.asked == 0
    nobody = QuotaFollower(store, lambda _: None, poke, INTERVAL, absent)
    assert await nobody.email_moved("A1") is False
    failing = FakeQuotas()
    failing.fail = True
    follower = QuotaFollower(store, lambda _: failing, poke, INTERVAL, absent)
    assert await follower.email_moved("A1") is False and failing.asked == 1
    assert await _quota_seq(store) == 0


async def test_the_hub_carries_quota_with_the_mail_that_moved_it(store: Store) -> None:
    """A listener for Quota (or every type) gets Quota's new state in the StateChange of
    the mail; a listener for other types costs no reading, and neither does mail before
    the quotas were ever read; a first event names Quota only once it has a state."""
    server = FakeQuotas()
    hub = Hub(store)
    follower = QuotaFollower(store, lambda _: server, hub.poke, 0.0)
    hub.on_email_moved = follower.email_moved
    try:
        assert "Quota" not in await hub.current("A1")
        everything = await hub.subscribe("A1", None)
        await _mail_moved(store)
        await hub.poke("A1")  # no Quota state yet: nobody holds one, nothing to read
        assert set(everything.queue.get_nowait()) == {"Email"} and server.asked == 0
        await quota.refresh(store, "A1", server)  # what Quota/get does
        await hub.poke("A1")
        assert set(everything.queue.get_nowait()) == {"Quota"} and server.asked == 1
        await hub.unsubscribe(everything)

        mail_only = await hub.subscribe("A1", ["Email"])
        await _mail_moved(store)
        await hub.poke("A1")
        assert set(mail_only.queue.get_nowait()) == {"Email"}
        assert server.asked == 1

        everything = await hub.subscribe("A1", None)
        quota_only = await hub.subscribe("A1", ["Quota"])
        server.used += 1
        await _mail_moved(store)
        await hub.poke("A1")
        change = everything.queue.get_nowait()
        assert set(change) == {"Email", "Quota"} and server.asked == 2
        assert set(quota_only.queue.get_nowait()) == {"Quota"}
        assert set(mail_only.queue.get_nowait()) == {"Email"}
        assert (await hub.current("A1"))["Quota"] == change["Quota"]

        await _mail_moved(store)  # the quota said the same: Email alone
        await hub.poke("A1")
        assert set(everything.queue.get_nowait()) == {"Email"} and server.asked == 3
        assert quota_only.queue.empty()
    finally:
        await follower.aclose()


class _Linked(Alone):
    """Another instance's coordinator as this hub sees it: listeners there, and what this
    hub publishes heard by that instance's hub."""

    shared = True

    def __init__(self, peer: Hub) -> None:
        super().__init__()
        self.peer = peer

    def listened_elsewhere(self, account_id: str) -> bool:
        return True

    async def publish(self, account_id: str, epoch: str, seqs: Mapping[str, int]) -> None:
        await self.peer.heard(account_id, epoch, seqs)


async def test_the_watchers_instance_reads_the_quotas_for_a_listener_elsewhere(
    store: Store,
) -> None:
    """Hub Rule 4 with Quota: the listener for Quota on one instance, the watcher's pokes
    on another that never published the account.  Its first poke after mail moved still
    has the quotas read, and Quota's new state reaches the listener."""
    server = FakeQuotas()
    listening = Hub(store)
    watching = Hub(store, _Linked(listening))
    follower = QuotaFollower(store, lambda _: server, watching.poke, 0.0)
    watching.on_email_moved = follower.email_moved
    try:
        await quota.refresh(store, "A1", server)  # a Quota/get, on either instance
        quota_only = await listening.subscribe("A1", ["Quota"])
        server.used += 1
        await _mail_moved(store)
        await watching.poke("A1")
        assert server.asked == 2
        assert set(quota_only.queue.get_nowait()) == {"Quota"}
    finally:
        await follower.aclose()
