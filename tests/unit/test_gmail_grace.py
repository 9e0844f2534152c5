"""Gmail mode's grace over the instances that share one cache (``sync.gmail`` "Grace",
``store.write_grace``): two stores on one cache stand for two instances.  Runs on SQLite
and, with ``--cache-backend=postgresql``, on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from imapjmap.cluster.api import Coordinator
from imapjmap.cluster.local import Alone
from imapjmap.store import queries as q
from imapjmap.store import write_grace as gg
from imapjmap.store.db import Store, Tx
from imapjmap.sync.emails import Delta
from imapjmap.sync.engine import AccountSync
from imapjmap.sync.gmail import Grace, LabelHook
from tests.unit.shared_cache import Clock, two_stores

NOW = 1_700_000_000.0


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one cache, as two instances open it, with accounts A and B."""
    async with two_stores(tmp_path) as (first, second):

        def accounts(tx: Tx) -> None:
            q.ensure_account(tx, "A", "alice")
            q.ensure_account(tx, "B", "bob")

        await first.run(accounts)
        yield first, second


def rows(tx: Tx) -> list[tuple[Any, ...]]:
    return tx.all("SELECT account_id, email_id, ends FROM write_grace ORDER BY 1, 2")


async def test_a_grace_written_by_one_instance_is_read_by_the_other(
    stores: tuple[Store, Store],
) -> None:
    first, second = stores
    await first.run(lambda tx: gg.note(tx, "A", ["M1", "M2"], [], ends=NOW + 30, now=NOW))
    await first.run(lambda tx: gg.note(tx, "B", ["M1"], [], ends=NOW + 30, now=NOW))
    assert await second.read(lambda tx: gg.active(tx, "A", NOW + 1)) == {
        "M1": NOW + 30,
        "M2": NOW + 30,
    }
    assert await second.read(lambda tx: gg.active(tx, "B", NOW + 1)) == {"M1": NOW + 30}
    assert await second.read(lambda tx: gg.active(tx, "A", NOW + 30)) == {}  # ended


async def test_a_later_write_extends_a_destroy_ends_and_ended_rows_are_pruned(
    stores: tuple[Store, Store],
) -> None:
    first, second = stores
    await first.run(lambda tx: gg.note(tx, "A", ["M1", "M2", "M3"], [], ends=NOW + 30, now=NOW))
    await first.run(lambda tx: gg.note(tx, "B", ["M9"], [], ends=NOW + 30, now=NOW))
    await second.run(lambda tx: gg.note(tx, "A", ["M1"], ["M2"], ends=NOW + 40, now=NOW + 10))
    assert await first.read(lambda tx: gg.active(tx, "A", NOW + 10)) == {
        "M1": NOW + 40,
        "M3": NOW + 30,
    }
    # a write after M3's grace ended deletes its row; another account's rows stay
    await second.run(lambda tx: gg.note(tx, "A", ["M4"], [], ends=NOW + 60, now=NOW + 30))
    assert await first.read(rows) == [
        ("A", "M1", NOW + 40),
        ("A", "M4", NOW + 60),
        ("B", "M9", NOW + 30),
    ]


def test_grace_takes_the_graces_other_instances_wrote() -> None:
    """Their ends are Unix times; the grace's own clock is another (monotonic)."""
    grace = Grace(10.0, Clock(100.0), wall=Clock(NOW))
    grace.note(["M1"])
    shared = {"M1": NOW + 5.0, "M2": NOW + 20.0, "M3": NOW - 1.0}
    assert grace.active(shared) == {"M1": 110.0, "M2": 120.0}  # M3's ended
    assert grace.active() == {"M1": 110.0}  # not adopted for good


class Shared(Alone):
    """A coordinator of instances sharing the cache, for what ``shared`` decides."""

    shared = True


class NoStore:
    """A store that must not be asked anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the cache was asked ({name})")


async def test_one_instance_writes_no_grace_to_the_cache() -> None:
    sync = AccountSync(cast(Store, NoStore()), "A")
    await sync.note_writes(["M1"], ["M2"])


async def test_instances_sharing_the_cache_write_the_grace_there(
    stores: tuple[Store, Store],
) -> None:
    first, second = stores
    sync = AccountSync(first, "A", cluster=cast(Coordinator, Shared()))
    await sync.note_writes(["M1"], [])
    found = await second.read(lambda tx: gg.active(tx, "A", 0.0))
    assert set(found) == {"M1"}


class NoTx:
    """A transaction in which nothing may be asked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the transaction was asked ({name})")


def test_a_sync_batch_with_nothing_gone_reads_no_grace() -> None:
    """The shared grace costs a refresh nothing unless a copy vanished (and one instance,
    whose grace is its own, nothing at all)."""
    delta = Delta()
    LabelHook(Grace(), shared=True)._hold(cast(Tx, NoTx()), "A", "box", delta)
    delta.gone.add(7)
    LabelHook(Grace(), shared=False)._hold(cast(Tx, NoTx()), "A", "box", delta)
    assert delta.gone == {7}
