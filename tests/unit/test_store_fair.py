"""store/fair.py: slots handed out round-robin over keys, at most ``per_key`` per key."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from imapjmap.errors import ProxyError
from imapjmap.store import db
from imapjmap.store.fair import FairSlots


async def _grants(slots: FairSlots, arrivals: list[str], finish: int) -> list[str]:
    """Queue ``arrivals`` (keys, in order) behind ``slots`` full slots; release one at a time
    and return the keys in the order they were served."""
    held = [await slots.acquire("held") for _ in range(finish)]
    served: list[str] = []

    async def take(key: str) -> None:
        slot = await slots.acquire(key)
        served.append(key)
        await asyncio.sleep(0)
        slots.release(key, slot)

    tasks = [asyncio.ensure_future(take(key)) for key in arrivals]
    await asyncio.sleep(0)
    for slot in held:
        slots.release("held", slot)
    await asyncio.gather(*tasks)
    return served


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        pytest.param(["a"] * 4 + ["b"] * 2, ["a", "b", "a", "b", "a", "a"], id="alternate"),
        pytest.param(["a", "a", "b", "c", "c"], ["a", "b", "c", "a", "c"], id="three-keys"),
        pytest.param(["b", "a", "a", "a"], ["b", "a", "a", "a"], id="alone-then-fifo"),
    ],
)
async def test_one_slot_is_served_round_robin(arrivals: list[str], expected: list[str]) -> None:
    assert await _grants(FairSlots(1, 1), arrivals, finish=1) == expected


async def test_a_key_never_holds_more_than_its_share() -> None:
    slots = FairSlots(3, 2)
    first = [await slots.acquire("a"), await slots.acquire("a")]
    third = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    assert not third.done() and slots.held("a") == 2 and slots.waiting("a") == 1
    other = await asyncio.wait_for(slots.acquire("b"), 1)  # the free slot is b's
    assert sorted([*first, other]) == [0, 1, 2]
    slots.release("a", first[0])
    assert await asyncio.wait_for(third, 1) == first[0]


async def test_a_waiter_cancelled_leaves_the_queue() -> None:
    slots = FairSlots(1, 1)
    held = await slots.acquire("a")
    gone = asyncio.ensure_future(slots.acquire("b"))
    stays = asyncio.ensure_future(slots.acquire("c"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert slots.waiting("b") == 0
    slots.release("a", held)
    assert await asyncio.wait_for(stays, 1) == held
    assert slots.held("b") == 0


async def test_close_fails_the_waiters_and_later_callers() -> None:
    slots = FairSlots(1, 1)
    await slots.acquire("a")
    waiting = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    slots.close(ProxyError("closed"))
    with pytest.raises(ProxyError, match="closed"):
        await waiting
    with pytest.raises(ProxyError, match="closed"):
        await slots.acquire("c")


@pytest.mark.parametrize(
    ("slots", "per_key", "spare"), [(0, 1, 0), (2, 0, 0), (2, 3, 0), (1, 1, -1)]
)
def test_impossible_shapes_are_refused(slots: int, per_key: int, spare: int) -> None:
    with pytest.raises(ValueError, match="per_key"):
        FairSlots(slots, per_key, spare=spare)


async def test_a_loan_lets_one_spare_be_used_until_it_is_taken_back() -> None:
    slots = FairSlots(1, 1, spare=1)
    first = await slots.acquire("a")
    second = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    assert not second.done()  # a spare is no slot of its own: the limit holds
    assert slots.lend()
    spare = await asyncio.wait_for(second, 1)
    assert {first, spare} == {0, 1} and slots.in_use == 2
    assert not slots.lend()  # its one spare is lent already
    third = asyncio.ensure_future(slots.acquire("c"))
    await asyncio.sleep(0)
    slots.unlend()
    slots.release("a", first)
    await asyncio.sleep(0)
    assert not third.done()  # b still holds one: in use is at the limit again
    slots.release("b", spare)
    assert await asyncio.wait_for(third, 1) in (0, 1)
    assert slots.in_use == 1


async def test_a_loan_does_not_raise_a_keys_share() -> None:
    slots = FairSlots(1, 1, spare=1)
    held = await slots.acquire("a")
    more = asyncio.ensure_future(slots.acquire("a"))
    assert slots.lend()
    await asyncio.sleep(0)
    assert not more.done() and slots.held("a") == 1  # the lender's key waits its turn
    other = await asyncio.wait_for(slots.acquire("b"), 1)
    slots.release("b", other)
    slots.unlend()
    slots.release("a", held)
    slots.release("a", await asyncio.wait_for(more, 1))
    assert slots.in_use == 0


# --- how long a read steps aside ----------------------------------------------------------


@pytest.mark.parametrize(
    ("ran", "others", "pause"),
    [
        (0.005, [], db._YIELD_FOR),  # a short read only lets the loop in
        (0.005, ["bob"], db._YIELD_FOR),
        (1.0, [], db._LONG_READ_PAUSE),  # long, alone: two thirds of the time
        (1.0, ["alice"], db._LONG_READ_PAUSE),  # its own account's other requests don't count
        (1.0, ["bob"], db._CONTENDED_PAUSE),  # long, another account waiting: most of it
    ],
)
def test_a_long_read_steps_aside_for_other_accounts(
    ran: float, others: list[str], pause: float
) -> None:
    activity = db._Activity()
    for account in others:
        activity.mark(account)
    job = db._Job(5.0, write=False, account="alice", activity=activity)
    assert job._pause(ran) == pause


def test_an_account_idle_for_a_while_is_not_waited_for() -> None:
    activity = db._Activity()
    activity.mark("bob")
    activity._seen["bob"] -= db._OTHERS_RECENT + 0.1
    assert not activity.others_active("alice")
    activity.mark("bob")
    assert activity.others_active("alice")


def test_long_means_cpu_used_not_time_waited(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cheap read slowed down by the others (waiting, not working) keeps its short pauses;
    a read that works for a few times ``_LONG_READ_CPU`` steps aside long, however soon."""
    job = db._Job(5.0, write=False, account="alice", activity=db._Activity())
    job.arm(sqlite3.connect(":memory:"))
    time.sleep(0.15)  # waited for the GIL or the disk: longer than any pause threshold
    pauses: list[float] = []
    monkeypatch.setattr(db.time, "sleep", pauses.append)
    job.next_pause = 0
    job.step_aside()
    assert pauses == [db._YIELD_FOR]
    until = time.thread_time() + 3 * db._LONG_READ_CPU
    while time.thread_time() < until:
        pass  # working
    job.next_pause = 0
    job.step_aside()
    assert pauses[-1] == db._LONG_READ_PAUSE
    job.disarm()


async def test_long_loop_work_pauses_between_slices_while_others_use_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Store.pace``: one turn when alone or while the work is still short; once it is long
    and another account uses the cache, the share of the time a long read steps aside,
    never more than ``_MAX_LOOP_PAUSE`` at once."""
    store = await db.Store.open(":memory:")
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    long = 2 * db._LONG_READ_CPU
    try:
        await store.read(lambda tx: 1, account="alice")  # its own use does not count
        monkeypatch.setattr(db.asyncio, "sleep", sleep)
        await store.pace("alice", 0.004, long)
        monkeypatch.undo()
        await store.read(lambda tx: 1, account="bob")
        monkeypatch.setattr(db.asyncio, "sleep", sleep)
        await store.pace("alice", 0.004, 0.004)  # a cheap answer: never held back
        await store.pace("alice", 0.004, long)
        await store.pace("alice", 10.0, long)
        await store.pace("bob", 0.004, long)  # alice used it too, just before
        monkeypatch.undo()
    finally:
        await store.aclose()
    contended = 0.004 * db._CONTENDED_PAUSE / db._YIELD_EVERY
    assert pauses == [
        0,
        0,
        pytest.approx(contended),
        db._MAX_LOOP_PAUSE,
        pytest.approx(contended),
    ]


async def test_many_short_answers_of_one_account_at_once_pause_like_a_long_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One account's answers, each short, that together took more than ``_LONG_READ_CPU``
    of the loop within ``_OTHERS_RECENT`` seconds pause as a long one does while another
    account uses the cache; another account's short answers meanwhile do not."""
    store = await db.Store.open(":memory:")
    pauses: list[tuple[str, float]] = []

    async def sleep(seconds: float) -> None:
        pauses.append((account, seconds))

    slice_ = db._LONG_READ_CPU / 4
    try:
        await store.read(lambda tx: 1, account="bob")
        monkeypatch.setattr(db.asyncio, "sleep", sleep)
        for account in ["alice"] * 6 + ["bob"]:  # each answer one short slice
            await store.pace(account, slice_, slice_)
    finally:
        monkeypatch.undo()
        await store.aclose()
    contended = pytest.approx(slice_ * db._CONTENDED_PAUSE / db._YIELD_EVERY)
    assert pauses == [("alice", 0)] * 4 + [("alice", contended)] * 2 + [("bob", 0)]


async def test_work_upstream_pauses_between_parts_only_while_others_use_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Store.pace_upstream`` (the UID ranges of a big search): straight on when the
    account is alone; while another account uses the cache, the share of the time a long
    read steps aside, never more than ``_MAX_UPSTREAM_PAUSE`` at once."""
    store = await db.Store.open(":memory:")
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    try:
        await store.read(lambda tx: 1, account="alice")  # its own use does not count
        monkeypatch.setattr(db.asyncio, "sleep", sleep)
        await store.pace_upstream("alice", 0.05)
        monkeypatch.undo()
        await store.read(lambda tx: 1, account="bob")
        monkeypatch.setattr(db.asyncio, "sleep", sleep)
        await store.pace_upstream("alice", 0.05)
        await store.pace_upstream("alice", 10.0)
        monkeypatch.undo()
    finally:
        await store.aclose()
    assert pauses == [
        pytest.approx(0.05 * db._CONTENDED_PAUSE / db._YIELD_EVERY),
        db._MAX_UPSTREAM_PAUSE,
    ]


async def test_running_counts_an_accounts_transactions_until_they_end(tmp_path: Path) -> None:
    store = await db.Store.open(str(tmp_path / "cache.sqlite3"))
    release = threading.Event()
    try:
        read = asyncio.ensure_future(store.read(lambda tx: release.wait(5), account="alice"))
        for _ in range(100):
            if store.running("alice"):
                break
            await asyncio.sleep(0.01)
        assert (store.running("alice"), store.running("bob")) == (1, 0)
        release.set()
        assert await read
        assert store.running("alice") == 0
    finally:
        release.set()
        await store.aclose()
