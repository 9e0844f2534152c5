"""Failed logins counted over the instances that share one cache (``http.throttle`` Rule 6,
``store.login_failures``): two throttles on one cache stand for two instances.  Runs on
SQLite and, with ``--cache-backend=postgresql``, on PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from imapjmap.cluster.local import Alone
from imapjmap.config import Config, ImapConfig
from imapjmap.http.auth import Authenticator
from imapjmap.http.throttle import (
    ADDRESS,
    QUEUE,
    USERNAME,
    FailureWindow,
    LoginThrottle,
    Refusal,
    SharedThrottle,
)
from imapjmap.imap.pool import ImapPools
from imapjmap.methods.context import Account
from imapjmap.store import login_failures as lf
from imapjmap.store.db import Store, Tx
from tests.unit.shared_cache import Clock, two_stores

T = TypeVar("T")


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one cache, as two instances open it."""
    async with two_stores(tmp_path) as pair:
        yield pair


class Counting:
    """A store that counts the transactions asked of it (``None``: refuses them all)."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.reads = 0
        self.writes = 0

    async def read_small(self, fn: Callable[[Tx], T], *, account: str = "") -> T:
        self.reads += 1
        assert self.store is not None, "no read expected"
        return await self.store.read_small(fn, account=account)

    async def run(self, fn: Callable[[Tx], T], *, account: str = "") -> T:
        self.writes += 1
        assert self.store is not None, "no write expected"
        return await self.store.run(fn, account=account)


def instance(store: Store | Counting | None, clock: Clock) -> SharedThrottle:
    """One instance's throttle: 4 failures per address in 300 s, 2 per username in 100 s."""
    local = LoginThrottle(
        FailureWindow(4, 300.0, clock=clock), FailureWindow(2, 100.0, clock=clock)
    )
    return SharedThrottle(local, cast(Store | None, store), clock=clock)


# --- the rows --------------------------------------------------------------------------------


async def test_rows_are_counted_pruned_and_forgotten_by_key(stores: tuple[Store, Store]) -> None:
    a, b = stores
    failures = [
        lf.Failure(ADDRESS, "192.0.2.1", 100.0, 400.0),
        lf.Failure(USERNAME, "alice", 100.0, 200.0),
        lf.Failure(USERNAME, "alice", 150.0, 250.0),
        lf.Failure(USERNAME, "alice", 160.0, 260.0),
        lf.Failure(USERNAME, "bob", 160.0, 260.0),
    ]
    await a.run(lambda tx: lf.record(tx, failures), account=QUEUE)
    asks = [
        lf.Ask(USERNAME, "alice", 100.0, 2),  # the two latest after 100
        lf.Ask(USERNAME, "alice", 0.0, 10),
        lf.Ask(ADDRESS, "alice", 0.0, 10),  # a kind of its own
        lf.Ask(ADDRESS, "192.0.2.1", 0.0, 10),
    ]
    found = await b.read_small(lambda tx: lf.recent(tx, asks), account=QUEUE)
    assert found == [[160.0, 150.0], [160.0, 150.0, 100.0], [], [100.0]]
    # a later write prunes every key's expired rows
    late = [lf.Failure(ADDRESS, "192.0.2.9", 255.0, 555.0)]
    await b.run(lambda tx: lf.record(tx, late, prune_before=255.0), account=QUEUE)
    found = await a.read_small(lambda tx: lf.recent(tx, asks), account=QUEUE)
    assert found == [[160.0], [160.0], [], [100.0]]
    assert await a.run(lambda tx: lf.forget(tx, USERNAME, "alice")) == 1
    assert await a.run(lf.count) == 3  # bob's, and both addresses'


# --- two instances -------------------------------------------------------------------------


async def test_a_username_counts_over_the_instances(stores: tuple[Store, Store]) -> None:
    clock = Clock()
    a, b = (instance(store, clock) for store in stores)
    await a.failed("10.0.0.1", "Alice")
    clock.now += 1
    assert await b.check("10.0.0.2", "alice") is None  # one failure of two allowed
    await b.failed("10.0.0.2", "ALICE")
    clock.now += 1
    # the next one, on either instance, whatever the case
    assert await a.check("10.0.0.3", "alice") == Refusal("username", 98)
    assert await b.check(None, "aLiCe") == Refusal("username", 98)
    assert await a.check("10.0.0.3", "bob") is None  # other users are not affected
    clock.now += 98
    assert await b.check("10.0.0.3", "alice") is None  # the first left the window


async def test_an_address_counts_over_the_instances(stores: tuple[Store, Store]) -> None:
    clock = Clock()
    a, b = (instance(store, clock) for store in stores)
    for n in range(4):  # one /64 guessing four users, on alternate instances
        await (a, b)[n % 2].failed(f"2001:db8:1:2::{n}", f"u{n}")
    for throttle in (a, b):
        assert await throttle.check("2001:db8:1:2::99", "carol") == Refusal("address", 300)
        assert await throttle.check("2001:db8:1:3::1", "carol") is None
    # a Bearer token the profile URL refused counts for its address alone
    await a.failed("10.0.0.9", None)
    assert await b.check("10.0.0.9", None) is None


async def test_a_success_clears_the_username_everywhere_but_not_the_address(
    stores: tuple[Store, Store],
) -> None:
    clock = Clock()
    a, b = (instance(store, clock) for store in stores)
    for n in range(2):
        await a.failed("10.0.0.1", "alice")
        await a.failed("10.0.0.1", f"x{n}")
    assert await b.check("10.0.0.2", "alice") == Refusal("username", 100)
    await b.succeeded("Alice")  # b found alice's failures in its check
    assert await a.check("10.0.0.2", "alice") is None
    assert await a.check("10.0.0.1", "bob") == Refusal("address", 300)


async def test_failures_expire_and_are_pruned(stores: tuple[Store, Store]) -> None:
    clock = Clock()
    a, b = (instance(store, clock) for store in stores)
    await a.failed("10.0.0.1", "alice")
    await a.failed("10.0.0.1", "alice")
    clock.now += 301  # past both windows
    assert await b.check("10.0.0.1", "alice") is None
    await b.failed("10.0.0.5", "bob")  # b's first write prunes what expired
    assert await stores[0].read_small(lf.count) == 2


async def test_the_rows_hold_the_throttles_keys_only(stores: tuple[Store, Store]) -> None:
    """What the cache learns of a failed login: the address's /64 and the folded name, the
    time and the expiry; never the password, which the throttle is never given."""
    clock = Clock()
    throttle = instance(stores[0], clock)
    await throttle.failed("2001:db8:1:2::7", "Alice@Example.ORG")
    rows = await stores[0].read(lambda tx: tx.all("SELECT * FROM login_failures ORDER BY kind"))
    assert rows == [
        ("address", "2001:db8:1:2::/64", clock.now, clock.now + 300.0),
        ("username", "alice@example.org", clock.now, clock.now + 100.0),
    ]


async def test_without_a_shared_cache_each_instance_counts_its_own() -> None:
    """One instance alone (no store given): the process's counts, as before."""
    clock = Clock()
    a, b = instance(None, clock), instance(None, clock)
    await a.failed("10.0.0.1", "alice")
    await a.failed("10.0.0.1", "alice")
    assert await a.check("10.0.0.1", "alice") == Refusal("username", 100)
    assert await b.check("10.0.0.1", "alice") is None


# --- what it costs ---------------------------------------------------------------------------


async def test_a_check_reads_once_a_failure_writes_once(stores: tuple[Store, Store]) -> None:
    clock = Clock()
    counting = Counting(stores[0])
    throttle = instance(counting, clock)
    assert await throttle.check("10.0.0.1", "alice") is None
    assert (counting.reads, counting.writes) == (1, 0)  # both keys in one read
    await throttle.succeeded("alice")  # no failure known: nothing to clear
    assert (counting.reads, counting.writes) == (1, 0)
    await throttle.failed("10.0.0.1", "alice")
    await throttle.failed("10.0.0.1", "alice")
    assert (counting.reads, counting.writes) == (1, 2)
    assert await throttle.check("10.0.0.1", "alice") == Refusal("username", 100)
    await throttle.succeeded("alice")  # failures known: one write clears them
    assert (counting.reads, counting.writes) == (2, 3)


async def test_a_cache_that_fails_leaves_the_instances_own_count(tmp_path: Path) -> None:
    clock = Clock()
    store = await Store.open(str(tmp_path / "cache.db"))
    throttle = instance(store, clock)
    await throttle.failed("10.0.0.1", "alice")
    await store.aclose()  # every transaction now fails with CacheUnavailable
    assert await throttle.check("10.0.0.1", "alice") is None  # logged, not raised
    await throttle.failed("10.0.0.1", "alice")  # logged, not raised
    # the instance's own count stands in
    assert await throttle.check("10.0.0.1", "alice") == Refusal("username", 100)
    await throttle.succeeded("alice")
    assert await throttle.check("10.0.0.1", "alice") is None


class Shared(Alone):
    """A coordinator that says other instances may share the cache."""

    shared = True


async def test_a_remembered_login_asks_the_cache_nothing() -> None:
    """Several instances: a request whose login is remembered as verified never reaches
    the throttle's counts (no round trip), as with one instance."""
    cfg = Config(imap=ImapConfig())
    pools = ImapPools(cfg.imap)
    counting = Counting(None)  # any transaction fails the test
    auth = Authenticator(cfg, cast(Store, counting), pools, cluster=Shared())
    pool = await pools.ensure("Aalice", "alice", "secret")
    auth._accounts["Aalice"] = Account("Aalice", "alice", "e1")
    auth._logins["basic\0alice"] = "Aalice"
    auth._verified["Aalice"] = auth._mac("Aalice", "secret")
    header = "Basic " + base64.b64encode(b"alice:secret").decode()
    for _ in range(3):
        who = await auth.authenticate(header)
        assert who.pool is pool
    assert (counting.reads, counting.writes) == (0, 0)
    await pools.aclose()
