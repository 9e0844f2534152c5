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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter, deque
from collections.abc import AsyncIterator

from imapjmap.jmap.errors import RequestError, RequestErrorType


class RequestSlots:
    def __init__(self, limit: int, wait: float, max_waiting: int) -> None:
        self.limit = limit
        self.wait = wait
        self.max_waiting = max_waiting
        self.running: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def waiting(self, account_id: str) -> int:
        return len(self._waiting.get(account_id, ()))

    @contextlib.asynccontextmanager
    async def slot(self, account_id: str) -> AsyncIterator[None]:
        """Hold one of the account's slots for the ``async with`` block.

        Raises:
            RequestError: limit (maxConcurrentRequests), Rules 2 and 3.
        """
        await self._acquire(account_id)
        try:
            yield
        finally:
            self._release(account_id)

    async def _acquire(self, account_id: str) -> None:
        if self.running[account_id] < self.limit and not self.waiting(account_id):
            self.running[account_id] += 1
            return
        if self.wait <= 0 or self.waiting(account_id) >= self.max_waiting:
            raise self._refusal()
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(account_id, deque())
        queue.append(handed)
        try:
            async with asyncio.timeout(self.wait):
                await handed
        except TimeoutError:
            if _got_slot(handed):
                return  # handed over just as the wait ended: it is ours (Rule 5)
            raise self._refusal() from None
        except asyncio.CancelledError:
            if _got_slot(handed):
                self._release(account_id)  # Rule 5
            raise
        finally:
            if not handed.done() or handed.cancelled():
                with contextlib.suppress(ValueError):
                    queue.remove(handed)
            if not queue and self._waiting.get(account_id) is queue:
                del self._waiting[account_id]

    def _release(self, account_id: str) -> None:
        queue = self._waiting.get(account_id)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: running stays the same
                return
        self.running[account_id] -= 1
        if self.running[account_id] <= 0:
            del self.running[account_id]

    def _refusal(self) -> RequestError:
        waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
        return RequestError(
            RequestErrorType.LIMIT,
            f"too many concurrent requests (at most {self.limit} per account){waited}",
            limit="maxConcurrentRequests",
            headers={"Retry-After": str(max(1, math.ceil(self.wait)))},
        )


def _got_slot(handed: asyncio.Future[None]) -> bool:
    return handed.done() and not handed.cancelled()
