"""PushSubscription deliveries started and stopped while other changes of the account run
(RFC 8620 §7.2, CORE-PUSH-02): a destroy is final, whatever a reload or an activation of
the same subscription was doing when it came (push.subscriptions Rules 1 and 2).

Each race is driven at one exact point: a read of the cache (or of the hub's states) is
held until the other change has run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from imapjmap.cluster.api import DELIVER, role_key
from imapjmap.cluster.local import Alone
from imapjmap.errors import ProxyError
from imapjmap.push.hub import Hub
from imapjmap.push.service import PushService
from imapjmap.push.subscriptions import Subscriptions
from imapjmap.push.watcher import Watched
from imapjmap.store import push as store_push
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync.engine import AccountSync

_T = TypeVar("_T")
ACCOUNT = "A1"


class Poster:
    """Records the POSTs instead of sending them."""

    def __init__(self) -> None:
        self.posts: asyncio.Queue[bytes] = asyncio.Queue()

    async def post(self, url: str, body: bytes, *, ttl: int, encoding: str | None) -> int:
        await self.posts.put(body)
        return 201


class Held:
    """A gate on one kind of store read: each waits, once it has read, until
    :meth:`release` (so what it returns is what the cache held before the wait)."""

    def __init__(self, store: Store, method: str) -> None:
        self.reached = asyncio.Event()
        self._released = asyncio.Event()
        real = getattr(store, method)

        async def held(fn: Callable[[Tx], _T], *, account: str = "") -> _T:
            result: _T = await real(fn, account=account)
            self.reached.set()
            await self._released.wait()
            return result

        setattr(store, method, held)

    def release(self) -> None:
        self._released.set()


class Shared(Alone):
    """A cluster of which this instance holds every role it wants (as the holder of a
    delivery does), while the subscriptions change through other instances."""

    shared = True  # type: ignore[assignment]


def _row(subscription_id: str = "P1") -> store_push.PushSubscriptionRow:
    now = time.time()
    return store_push.PushSubscriptionRow(
        account_id=ACCOUNT,
        id=subscription_id,
        device_client_id="dev",
        url="https://push.example/x",
        keys=None,
        verification_code="code",
        verified=True,
        expires=now + 3600,
        types=None,
        created_at=now,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "cache.sqlite3"))
    await store.run(lambda tx: q.ensure_account(tx, ACCOUNT, "alice"))
    try:
        yield store
    finally:
        await store.aclose()


def _subscriptions(store: Store, cluster: Alone) -> tuple[Hub, Subscriptions, Poster]:
    hub = Hub(store, cluster)
    subscriptions = Subscriptions(hub, store, cluster)
    poster = Poster()
    subscriptions.poster = poster
    return hub, subscriptions, poster


async def test_a_reload_that_read_a_subscription_before_its_destroy_does_not_restart_it(
    store: Store,
) -> None:
    """Another instance announced a change (say, the verification) and this one reloads; the
    subscription is destroyed through this instance while the reload's read is on its way.
    The reload read the row: it must not start it after the destroy stopped it (it did: the
    subscription was delivered, and the account watched, until the next restart)."""
    cluster = Alone()
    hub, subscriptions, _ = _subscriptions(store, cluster)
    row = _row()
    await store.run(lambda tx: store_push.put(tx, row))
    held = Held(store, "read")
    reload = asyncio.ensure_future(subscriptions.reload(ACCOUNT))
    await asyncio.wait_for(held.reached.wait(), 5)
    # the destroy, as PushSubscription/set does it: the row, then the deliveries
    await store.run(lambda tx: store_push.delete(tx, ACCOUNT, row.id))
    destroy = asyncio.ensure_future(subscriptions.deactivate(ACCOUNT, row.id, announce=False))
    await asyncio.sleep(0.05)
    held.release()
    await asyncio.wait_for(asyncio.gather(reload, destroy), 5)
    assert subscriptions.running(ACCOUNT) == []
    assert hub.listeners(ACCOUNT) == 0
    assert not cluster.holds(DELIVER, role_key(ACCOUNT, row.id))
    await subscriptions.aclose()


async def test_a_delivery_stopped_while_it_starts_leaves_no_listener_nor_role(
    store: Store,
) -> None:
    """A delivery is stopped while it is still registering its hub listener (whose first
    read of the account's states is on its way).  The listener and the delivery role must
    not be added after it was taken down (they were: the account stayed watched, and the
    role was taken again, for a subscription that no longer existed)."""
    cluster = Alone()
    hub, subscriptions, _ = _subscriptions(store, cluster)
    row = _row()
    await store.run(lambda tx: store_push.put(tx, row))
    held = Held(store, "read_small")
    start = asyncio.ensure_future(subscriptions.activate(row, announce=False))
    await asyncio.wait_for(held.reached.wait(), 5)
    stop = asyncio.ensure_future(subscriptions.deactivate(ACCOUNT, row.id, announce=False))
    await asyncio.sleep(0.05)
    held.release()
    await asyncio.wait_for(asyncio.gather(start, stop), 5)
    assert subscriptions.running(ACCOUNT) == []
    assert hub.listeners(ACCOUNT) == 0
    assert not cluster.holds(DELIVER, role_key(ACCOUNT, row.id))
    await subscriptions.aclose()


async def test_the_holder_of_a_delivery_posts_nothing_once_it_is_destroyed_elsewhere(
    store: Store,
) -> None:
    """This instance delivers the subscription; another destroys it (the row is gone from
    the shared cache) and this one has not heard yet when a change comes: it must not POST
    it (it did, until it heard of the destroy)."""
    cluster = Shared()
    hub, subscriptions, poster = _subscriptions(store, cluster)
    row = _row()
    await store.run(lambda tx: store_push.put(tx, row))
    await subscriptions.activate(row, announce=False)
    assert cluster.holds(DELIVER, role_key(ACCOUNT, row.id))
    await store.run(lambda tx: q.next_seq(tx, ACCOUNT, ["Mailbox"]))
    await hub.poke(ACCOUNT)
    first = await asyncio.wait_for(poster.posts.get(), 5)
    assert b"StateChange" in first  # delivered while it exists
    await store.run(lambda tx: store_push.delete(tx, ACCOUNT, row.id))  # by the other one
    await store.run(lambda tx: q.next_seq(tx, ACCOUNT, ["Mailbox"]))
    await hub.poke(ACCOUNT)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(poster.posts.get(), 0.5)
    await subscriptions.aclose()


async def test_a_subscription_whose_endpoint_is_gone_is_announced_to_the_others(
    store: Store,
) -> None:
    """A 404/410 destroys the subscription here; the other instances, which run its
    delivery task too (without the role), must hear of it and stop theirs."""
    announced: list[str] = []

    class Telling(Shared):
        async def subscriptions_changed(self, account_id: str) -> None:
            announced.append(account_id)

    cluster = Telling()
    hub, subscriptions, _ = _subscriptions(store, cluster)

    class Gone:
        async def post(self, url: str, body: bytes, *, ttl: int, encoding: str | None) -> int:
            return 410

    subscriptions.poster = Gone()
    row = _row()
    await store.run(lambda tx: store_push.put(tx, row))
    await subscriptions.activate(row, announce=False)
    await store.run(lambda tx: q.next_seq(tx, ACCOUNT, ["Mailbox"]))
    await hub.poke(ACCOUNT)
    deadline = time.monotonic() + 5
    while subscriptions.running(ACCOUNT) or not announced:
        assert time.monotonic() < deadline, "the gone subscription was not stopped and announced"
        await asyncio.sleep(0.02)
    assert announced == [ACCOUNT]
    assert hub.listeners(ACCOUNT) == 0
    assert await store.read(lambda tx: store_push.get(tx, ACCOUNT, row.id)) is None
    await subscriptions.aclose()


# --- the hub's first and last listeners of an account ----------------------------------------


async def test_two_listeners_added_at_once_still_make_a_first_listener(store: Store) -> None:
    """Two listeners of an account come together (a stream and a subscription's delivery);
    the hub's first read of the account's states is on its way when the second comes.  One
    of them is the first: the account must be watched (neither was, before)."""
    hub = Hub(store)
    firsts: list[str] = []

    async def first(account_id: str) -> None:
        firsts.append(account_id)

    hub.on_first_listener = first
    held = Held(store, "read_small")
    one = asyncio.ensure_future(hub.subscribe(ACCOUNT, None))
    await asyncio.wait_for(held.reached.wait(), 5)
    two = asyncio.ensure_future(hub.subscribe(ACCOUNT, None))
    await asyncio.sleep(0.05)
    held.release()
    await asyncio.wait_for(asyncio.gather(one, two), 5)
    assert hub.listeners(ACCOUNT) == 2
    assert firsts == [ACCOUNT]


class Unreachable:
    """An upstream whose watch never connects (its watcher keeps trying)."""

    @contextlib.asynccontextmanager
    async def watch(self, *, poll_interval: float, status_interval: float) -> AsyncIterator[Any]:
        raise ProxyError("unreachable")
        yield  # an async generator: the context manager


class SlowToTell(Alone):
    """The coordinator takes its time to tell the others that the last listener left."""

    def __init__(self) -> None:
        super().__init__()
        self.told = asyncio.Event()

    async def listening(self, account_id: str, *, on: bool) -> None:
        if not on:
            await self.told.wait()


async def test_a_listener_that_comes_while_the_last_one_leaves_keeps_the_watcher(
    store: Store,
) -> None:
    """The last listener of an account leaves, and while the coordinator is told so a new
    one comes: the watcher must stay (it was stopped, and nobody started it again until the
    next request)."""
    cluster = SlowToTell()
    service = PushService(
        store,
        lambda _: cast(Watched, Unreachable()),
        lambda _: cast(AccountSync, None),
        cluster=cluster,
    )
    try:
        old = await service.hub.subscribe(ACCOUNT, None)
        assert ACCOUNT in service.watchers
        leaving = asyncio.ensure_future(service.hub.unsubscribe(old))
        await asyncio.sleep(0.05)  # it waits for the coordinator
        await service.hub.subscribe(ACCOUNT, None)
        cluster.told.set()
        await asyncio.wait_for(leaving, 5)
        assert ACCOUNT in service.watchers
    finally:
        cluster.told.set()
        await service.aclose()
