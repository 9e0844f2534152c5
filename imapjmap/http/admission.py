"""Admission of API requests per account: ``maxConcurrentRequests`` (RFC 8620 §2), with a
short wait for a free slot instead of an immediate refusal.

A webmail fires a burst of requests after an action (a send, a mailbox switch); refusing
the ones over the limit at once makes it show an error although the burst is over in a
moment.

Rules
1. An account runs at most ``limit`` requests at once (``POST apiUrl`` and WebSocket
   ``Request`` messages alike).
2. One more waits for a slot, first come first served, at most ``wait`` seconds; then it is
   refused with the ``limit`` request error (``maxConcurrentRequests``) and a
   ``Retry-After``.  ``wait`` 0 refuses at once.
3. At most ``max_waiting`` requests of one account wait; one more is refused at once, so a
   runaway client cannot pile up unbounded work.
4. Everything is per account: one account's queue never delays another account, whose
   requests are admitted or refused by its own counts alone.
5. A finished request hands its slot straight to the oldest waiter (no newcomer can take
   it in between); a waiter that was cancelled or timed out after being handed a slot
   gives it on, so no slot is ever lost.
6. With other instances (a shared :class:`~imapjmap.cluster.api.Coordinator`), ``limit``
   holds over all of them: a request also holds one of the account's cluster slots
   (:data:`~imapjmap.cluster.api.REQUEST`), leased by this instance for
   :data:`LINGER` seconds after use so that the next request here costs no round trip.
   While requests wait here, the oldest one's turn also comes when a slot frees on another
   instance (a poller asks the cluster, woken by the freeing instance, and at least every
   :data:`POLL_MAX` seconds: a dead instance says nothing).  Rules 2, 3 and 5 hold as on
   one instance (``max_waiting`` counts this instance's waiters).  While the cluster
   cannot be reached (its PostgreSQL restarts), the limit holds per instance: the request
   itself then gets ``serverUnavailable`` where it needs the cluster, as it did before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Final

from imapjmap.cluster.api import REQUEST, Coordinator
from imapjmap.errors import CoordinatorUnavailable
from imapjmap.jmap.errors import RequestError, RequestErrorType

log = logging.getLogger(__name__)

LINGER: Final = 1.0
"""Seconds an instance keeps an account's cluster slot after a request (Rule 6)."""
NO_CLUSTER_SLOT: Final = -1
"""The token of a request admitted while the cluster could not be reached (no coordinator
takes it back: each token is a connection's generation, counted from 1)."""
POLL_MIN: Final = 0.01
POLL_MAX: Final = 0.1
"""Seconds between two asks for a cluster slot while requests wait (doubling up to this)."""


class RequestSlots:
    def __init__(
        self, limit: int, wait: float, max_waiting: int, cluster: Coordinator | None = None
    ) -> None:
        self.limit = limit
        self.wait = wait
        self.max_waiting = max_waiting
        self.running: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[int]]] = {}
        self._cluster: Coordinator | None = None
        self._pollers: dict[str, asyncio.Task[None]] = {}
        if cluster is not None:
            self.share(cluster)

    def share(self, cluster: Coordinator) -> None:
        """Hold the limit over the instances ``cluster`` coordinates (Rule 6)."""
        self._cluster = cluster if cluster.shared else None

    def waiting(self, account_id: str) -> int:
        return len(self._waiting.get(account_id, ()))

    @contextlib.asynccontextmanager
    async def slot(self, account_id: str) -> AsyncIterator[None]:
        """Hold one of the account's slots for the ``async with`` block.

        Raises:
            RequestError: limit (maxConcurrentRequests), Rules 2 and 3.
        """
        token = await self._acquire(account_id)
        try:
            yield
        finally:
            if self._release(account_id, token):
                await self._give(account_id, token)

    async def _acquire(self, account_id: str) -> int:
        if self.running[account_id] < self.limit and not self.waiting(account_id):
            self.running[account_id] += 1  # reserved while the cluster is asked
            try:
                token = await self._take(account_id)
            except BaseException:
                self._unreserve(account_id)
                raise
            if token is not None:
                return token
            self._unreserve(account_id)
        if self.wait <= 0 or self.waiting(account_id) >= self.max_waiting:
            raise self._refusal()
        handed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(account_id, deque())
        queue.append(handed)
        if self._cluster is not None and account_id not in self._pollers:
            poller = asyncio.get_running_loop().create_task(self._poll(account_id, self._cluster))
            self._pollers[account_id] = poller
        try:
            async with asyncio.timeout(self.wait):
                return await handed
        except TimeoutError:
            if _got_slot(handed):
                return handed.result()  # handed over just as the wait ended (Rule 5)
            raise self._refusal() from None
        except asyncio.CancelledError:
            if _got_slot(handed) and self._release(account_id, handed.result()):  # Rule 5
                await self._give(account_id, handed.result())
            raise
        finally:
            with contextlib.suppress(ValueError):  # not there when handed a slot
                queue.remove(handed)
            if not queue and self._waiting.get(account_id) is queue:
                del self._waiting[account_id]

    async def _take(self, account_id: str) -> int | None:
        """A cluster slot (its token), None when all are held; 0 alone, and
        :data:`NO_CLUSTER_SLOT` while the cluster cannot be reached (Rule 6)."""
        if self._cluster is None:
            return 0
        return await cluster_slot(self._cluster, REQUEST, account_id, self.limit)

    def _hand(self, account_id: str, token: int) -> bool:
        """Give the slot to the oldest waiter still waiting; False when none is."""
        queue = self._waiting.get(account_id)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(token)
                return True
        return False

    def _release(self, account_id: str, token: int) -> bool:
        """Hand the slot on, or free it here; True when the cluster's slot is to be given
        back (:meth:`_give`)."""
        if self._hand(account_id, token):
            return False  # the slot changes hands: running stays the same
        self._unreserve(account_id)
        return self._cluster is not None

    def _unreserve(self, account_id: str) -> None:
        self.running[account_id] -= 1
        if self.running[account_id] <= 0:
            del self.running[account_id]

    async def _give(self, account_id: str, token: int) -> None:
        if self._cluster is not None:
            await self._cluster.give_slot(REQUEST, account_id, token, linger=LINGER)

    async def _poll(self, account_id: str, cluster: Coordinator) -> None:
        """While the account's requests wait here, ask the cluster for a slot freed on
        another instance (Rule 6)."""
        delay = POLL_MIN
        try:
            while self._waiting.get(account_id):
                if self.running[account_id] >= self.limit:  # a slot here frees first
                    await cluster.wait_slot(REQUEST, account_id, POLL_MAX)
                    continue
                self.running[account_id] += 1  # reserved while the cluster is asked
                try:
                    token = await cluster_slot(cluster, REQUEST, account_id, self.limit)
                except BaseException:
                    self._unreserve(account_id)
                    raise
                if token is None:
                    self._unreserve(account_id)
                    await cluster.wait_slot(REQUEST, account_id, delay)
                    delay = min(delay * 2, POLL_MAX)
                    continue
                delay = POLL_MIN
                if not self._hand(account_id, token):  # its waiters left meanwhile
                    self._unreserve(account_id)
                    await cluster.give_slot(REQUEST, account_id, token, linger=LINGER)
        finally:
            del self._pollers[account_id]

    def _refusal(self) -> RequestError:
        waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
        return RequestError(
            RequestErrorType.LIMIT,
            f"too many concurrent requests (at most {self.limit} per account){waited}",
            limit="maxConcurrentRequests",
            headers={"Retry-After": str(max(1, math.ceil(self.wait)))},
        )


async def cluster_slot(cluster: Coordinator, kind: str, account_id: str, limit: int) -> int | None:
    """``take_slot``, or :data:`NO_CLUSTER_SLOT` while the cluster cannot be reached: a
    limit then holds per instance rather than refusing everything (Rule 6)."""
    try:
        return await cluster.take_slot(kind, account_id, limit)
    except CoordinatorUnavailable as exc:
        log.debug("account %s: counted on this instance only: %s", account_id, exc)
        return NO_CLUSTER_SLOT


def _got_slot(handed: asyncio.Future[int]) -> bool:
    return handed.done() and not handed.cancelled() and handed.exception() is None
