"""imapjmap.http.admission: maxConcurrentRequests with a bounded wait (CORE-ERR-04), driven
step by step with events so every interleaving is exact."""

from __future__ import annotations

import asyncio
import time

import pytest

from imapjmap.config import LimitsConfig
from imapjmap.errors import CoordinatorUnavailable
from imapjmap.http.admission import NO_CLUSTER_SLOT, RequestSlots
from imapjmap.jmap.errors import RequestError, RequestErrorType


class Holder:
    """A request that holds a slot of ``account`` until released."""

    def __init__(self, slots: RequestSlots, account: str) -> None:
        self.admitted = asyncio.Event()
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(slots, account))

    async def _run(self, slots: RequestSlots, account: str) -> None:
        async with slots.slot(account):
            self.admitted.set()
            await self.release.wait()

    async def finish(self) -> None:
        self.release.set()
        await self.task


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_under_the_limit_requests_run_at_once() -> None:
    slots = RequestSlots(limit=2, wait=5.0, max_waiting=4)
    first, second = Holder(slots, "A"), Holder(slots, "A")
    await settle()
    assert first.admitted.is_set() and second.admitted.is_set()
    await first.finish()
    await second.finish()
    assert slots.running == {}


async def test_one_over_the_limit_waits_and_runs_when_a_slot_frees() -> None:
    slots = RequestSlots(limit=1, wait=5.0, max_waiting=4)
    first = Holder(slots, "A")
    await settle()
    second = Holder(slots, "A")
    await settle()
    assert not second.admitted.is_set()
    assert slots.waiting("A") == 1
    await first.finish()
    await settle()
    assert second.admitted.is_set()
    assert slots.running["A"] == 1 and slots.waiting("A") == 0
    await second.finish()
    assert slots.running == {}


async def test_waiters_are_served_first_come_first_served() -> None:
    slots = RequestSlots(limit=1, wait=5.0, max_waiting=4)
    holder = Holder(slots, "A")
    await settle()
    waiters = []
    for _ in range(3):
        waiters.append(Holder(slots, "A"))
        await settle()
    await holder.finish()
    for index, waiter in enumerate(waiters):
        await settle()
        assert [w.admitted.is_set() for w in waiters] == [i <= index for i in range(3)]
        # a newcomer does not jump the queue while the slot changes hands
        assert slots.running["A"] == 1
        await waiter.finish()
    assert slots.running == {}


async def test_the_wait_ends_in_the_limit_error_core_err_04() -> None:
    slots = RequestSlots(limit=1, wait=0.05, max_waiting=4)
    holder = Holder(slots, "A")
    await settle()
    with pytest.raises(RequestError) as caught:
        async with slots.slot("A"):
            pytest.fail("admitted over the limit")
    error = caught.value
    assert error.type is RequestErrorType.LIMIT
    assert error.limit == "maxConcurrentRequests"
    assert error.headers == {"Retry-After": "1"}
    assert slots.waiting("A") == 0
    await holder.finish()
    assert slots.running == {}


@pytest.mark.parametrize(("wait", "max_waiting"), [(0.0, 4), (5.0, 1)])
async def test_refused_at_once_without_a_wait_or_with_a_full_queue(
    wait: float, max_waiting: int
) -> None:
    slots = RequestSlots(limit=1, wait=wait, max_waiting=max_waiting)
    holder = Holder(slots, "A")
    await settle()
    queued = Holder(slots, "A") if wait else None  # fills the queue of one
    await settle()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestError, match="too many concurrent requests"):
        async with slots.slot("A"):
            pass
    assert loop.time() - started < 0.5
    await holder.finish()
    if queued is not None:
        await settle()
        await queued.finish()
    assert slots.running == {}


async def test_another_account_never_waits_for_a_full_queue() -> None:
    slots = RequestSlots(limit=1, wait=5.0, max_waiting=2)
    busy = [Holder(slots, "A") for _ in range(3)]  # one runs, two wait
    await settle()
    assert slots.waiting("A") == 2
    other = Holder(slots, "B")
    await settle()
    assert other.admitted.is_set()
    await other.finish()
    for holder in busy:
        await settle()
        await holder.finish()
    assert slots.running == {}


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    slots = RequestSlots(limit=1, wait=5.0, max_waiting=4)
    holder = Holder(slots, "A")
    await settle()
    gone, next_one = Holder(slots, "A"), Holder(slots, "A")
    await settle()
    gone.task.cancel()  # its client went away while it waited
    await settle()
    assert slots.waiting("A") == 1
    await holder.finish()
    await settle()
    assert next_one.admitted.is_set()
    await next_one.finish()
    assert slots.running == {}


async def test_a_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on() -> None:
    """Rule 5: the slot was handed over, then the waiter's task was cancelled before it
    ran again; the slot goes to the next waiter instead of being lost."""
    slots = RequestSlots(limit=1, wait=5.0, max_waiting=4)
    holding = slots.slot("A")
    await holding.__aenter__()
    handed, next_one = Holder(slots, "A"), Holder(slots, "A")
    await settle()
    # the running request ends and, in the same step, the first waiter's client goes away
    await holding.__aexit__(None, None, None)  # hands the slot over without yielding
    handed.task.cancel()
    await settle()
    assert handed.task.cancelled() and not handed.admitted.is_set()
    assert next_one.admitted.is_set()
    await next_one.finish()
    assert slots.running == {}


async def test_a_slot_handed_over_as_the_wait_ends_is_kept() -> None:
    """Rule 5: the slot is handed over and the wait's deadline passes in one turn of the
    loop (the handover first): the request is admitted, not refused with the slot lost."""
    loop = asyncio.get_running_loop()
    slots = RequestSlots(limit=1, wait=0.05, max_waiting=4)
    token = await slots._acquire("A")
    late = Holder(slots, "A")
    await settle()
    loop.call_at(loop.time() + 0.01, slots._release, "A", token)  # due before the deadline
    time.sleep(0.1)  # block the loop: both fall due in its next turn, the handover first
    async with asyncio.timeout(2):
        await late.admitted.wait()
    await late.finish()
    assert slots.running == {}


async def test_core_err_04_fifty_clients_of_one_account_all_served_by_default() -> None:
    """50 clients of one account, each with one request in flight, under the default limits:
    8 run, the others wait their turn, none is refused (32 waiters refused 10 at once)."""
    limits = LimitsConfig()
    slots = RequestSlots(
        limits.max_concurrent_requests,
        limits.concurrent_request_wait_seconds,
        limits.max_waiting_requests,
    )
    holders = [Holder(slots, "a") for _ in range(50)]
    await settle()
    assert sum(h.admitted.is_set() for h in holders) == limits.max_concurrent_requests
    assert slots.waiting("a") == 50 - limits.max_concurrent_requests
    for holder in holders:  # each finishes in turn; the next waiter gets its slot
        await holder.admitted.wait()
        await holder.finish()
    assert not slots.running and not slots.waiting("a")


# --- Rule 6: the limit over several instances ------------------------------------------------


class FakeCluster:
    """Instances' shared slot count, in memory (the real one: PostgreSQL advisory locks,
    tests/integration/test_cluster_coordinator.py); ``down`` makes it unreachable."""

    shared = True

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.down = False
        self.given: list[int] = []

    async def take_slot(self, kind: str, account_id: str, limit: int) -> int | None:
        await asyncio.sleep(0)  # a round trip
        if self.down:
            raise CoordinatorUnavailable("cluster: not connected to PostgreSQL")
        if self.held.get(account_id, 0) >= limit:
            return None
        self.held[account_id] = self.held.get(account_id, 0) + 1
        return 1

    async def give_slot(self, kind: str, account_id: str, token: int, *, linger: float) -> None:
        self.given.append(token)
        if token == 1:
            self.held[account_id] -= 1

    async def wait_slot(self, kind: str, account_id: str, timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.01))


def two_instances(wait: float = 5.0) -> tuple[FakeCluster, RequestSlots, RequestSlots]:
    cluster = FakeCluster()
    one, other = (
        RequestSlots(limit=2, wait=wait, max_waiting=4, cluster=cluster)  # type: ignore[arg-type]
        for _ in range(2)
    )
    return cluster, one, other


async def test_the_limit_holds_over_instances_and_a_waiter_gets_a_slot_freed_elsewhere() -> None:
    """CORE-ERR-04 over two instances: two slots in all; a request on the second instance
    waits while the first runs both, and runs once one of them ends."""
    cluster, a, b = two_instances()
    first, second = Holder(a, "A"), Holder(a, "A")
    await settle()
    assert first.admitted.is_set() and second.admitted.is_set()
    late = Holder(b, "A")
    await settle()
    assert not late.admitted.is_set() and b.waiting("A") == 1
    await first.finish()
    async with asyncio.timeout(2):
        await late.admitted.wait()
    assert cluster.held["A"] == 2
    await second.finish()
    await late.finish()
    assert cluster.held["A"] == 0 and a.running == {} and b.running == {}


async def test_a_waiter_on_another_instance_gets_the_limit_error_when_its_wait_ends() -> None:
    _, a, b = two_instances(wait=0.05)
    holders = [Holder(a, "A"), Holder(a, "A")]
    await settle()
    with pytest.raises(RequestError) as refused:
        async with b.slot("A"):
            pass
    assert refused.value.type is RequestErrorType.LIMIT
    assert refused.value.limit == "maxConcurrentRequests"
    for holder in holders:
        await holder.finish()


async def test_an_unreachable_cluster_leaves_the_limit_per_instance() -> None:
    """While the cluster's PostgreSQL is down, requests are admitted on this instance's own
    count (they get serverUnavailable where they need the cluster), never a 503 here."""
    cluster, a, _ = two_instances()
    cluster.down = True
    holders = [Holder(a, "A") for _ in range(3)]
    await settle()
    assert [h.admitted.is_set() for h in holders] == [True, True, False]
    await holders[0].finish()
    async with asyncio.timeout(2):
        await holders[2].admitted.wait()
    for holder in holders[1:]:
        await holder.finish()
    assert a.running == {}
    assert set(cluster.given) == {NO_CLUSTER_SLOT}
