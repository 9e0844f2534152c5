"""Fair slots: a few interchangeable resources handed out round-robin over accounts.

The cache's connections are such resources (one writer, a few readers).  Waiters queue per
key (an account id); when a slot frees, it goes to the first key in turn that waits and holds
fewer than ``per_key`` slots, and that key moves to the back of the turn.  So a key with a
hundred waiters and a key with one each get every other slot: the first cannot starve the
second, and cannot hold more than ``per_key`` slots at once however many it queues.

A holder may also *lend* its slot's share while it idles most of the time (a long read that
pauses for the others): one ``spare`` resource more may then be in use, so what one key holds
while it waits costs the other keys nothing.  The holder gives the loan back when it releases.

Pure asyncio; no threads, no I/O.  Every method is called on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque


class FairSlots:
    """``slots`` numbered resources, at most ``per_key`` held by one key at a time; and
    ``spare`` more (numbered after them), one in use per loan (:meth:`lend`)."""

    def __init__(self, slots: int, per_key: int, *, spare: int = 0) -> None:
        if slots < 1 or not 1 <= per_key <= slots or spare < 0:
            raise ValueError(f"need 1 <= per_key ({per_key}) <= slots ({slots}), spare >= 0")
        self.per_key = per_key
        self._free: deque[int] = deque(range(slots + spare))
        self._limit = slots
        self._spare = spare
        self._in_use = 0
        self._lent = 0
        self._held: Counter[str] = Counter()
        # insertion order is the turn: a key that was served is moved to the end
        self._waiting: dict[str, deque[asyncio.Future[int]]] = {}
        self._closed: BaseException | None = None

    def held(self, key: str) -> int:
        """How many slots ``key`` holds now."""
        return self._held[key]

    def waiting(self, key: str) -> int:
        """How many callers of ``key`` wait for a slot."""
        return len(self._waiting.get(key, ()))

    @property
    def in_use(self) -> int:
        """How many slots are held now, spare ones included."""
        return self._in_use

    def lend(self) -> bool:
        """A holder will idle most of the time for a while: let one more slot be used.

        Returns whether a spare was free to lend; the holder that got True calls
        :meth:`unlend` once, before it releases its slot.
        """
        if self._lent >= self._spare:
            return False
        self._lent += 1
        self._dispatch()
        return True

    def unlend(self) -> None:
        """Take back a loan of :meth:`lend` (the slots in use above the limit drain as their
        holders release them)."""
        self._lent -= 1

    async def acquire(self, key: str) -> int:
        """Wait for a slot (FIFO within ``key``, round-robin across keys); return its number.

        A caller cancelled while waiting leaves the queue and takes nothing.

        Raises:
            BaseException: the error given to :meth:`close`, for every waiter and later caller.
        """
        if self._closed is not None:
            raise self._closed
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(waiter)
        self._dispatch()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(key, waiter.result())  # granted just as the caller gave up
            else:
                self._forget(key, waiter)
            raise

    def release(self, key: str, slot: int) -> None:
        """Give back a slot that :meth:`acquire` returned for ``key``."""
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        self._in_use -= 1
        self._free.append(slot)
        self._dispatch()

    def close(self, error: BaseException) -> None:
        """Fail every waiter and every later :meth:`acquire` with ``error``."""
        self._closed = error
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)

    def _dispatch(self) -> None:
        while self._free and self._in_use < self._limit + self._lent and self._closed is None:
            key = next((k for k in self._waiting if self._held[k] < self.per_key), None)
            if key is None:
                return
            waiters = self._waiting.pop(key)
            waiter = waiters.popleft()
            if waiters:
                self._waiting[key] = waiters  # to the back of the turn
            if waiter.done():  # cancelled, its caller not yet resumed
                continue
            self._held[key] += 1
            self._in_use += 1
            waiter.set_result(self._free.popleft())

    def _forget(self, key: str, waiter: asyncio.Future[int]) -> None:
        waiters = self._waiting.get(key)
        if waiters is None:
            return
        try:
            waiters.remove(waiter)
        except ValueError:
            return
        if not waiters:
            del self._waiting[key]
        self._dispatch()
