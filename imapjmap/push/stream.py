"""One push consumer's view of the hub: what it asked for, what it was told, where to resume.

Theory of operation
-------------------
An EventSource response (RFC 8620 §7.3) and a WebSocket with push enabled (RFC 8887 §4.3.5)
both need the same three things on top of a hub :class:`~imapjmap.push.hub.Listener`:

* a *resume token* — the EventSource event ``id`` and the WebSocket ``pushState`` — that
  says "this client has seen every change of its types up to account seq N".  It is written
  like a type state, ``s<N>.<epoch>`` (:mod:`imapjmap.jmap.state`), so a token from another
  life of the cache (another epoch) is recognised and not misread;
* a catch-up when a client comes back with such a token: the types whose state moved
  since, sent at once (:meth:`PushStream.open`);
* no repeats: a type is only sent again when its state is newer than the last one this
  client was given (the catch-up and the live queue may overlap).

Rule 1: subscribe first, read the catch-up second: a change that lands in between is then
        in the queue, in the catch-up, or both (deduplicated) — never lost.
Rule 2: :meth:`PushStream.close` always unsubscribes; callers use ``async with`` so a
        cancelled or failed consumer never leaves a listener (and a watcher) behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from types import TracebackType
from typing import Any

from imapjmap.jmap import state as jstate
from imapjmap.push.hub import Hub, Listener


class PushStream:
    """A consumer of one account's StateChanges (see the module docstring)."""

    def __init__(
        self, hub: Hub, account_id: str, epoch: str, types: Collection[str] | None
    ) -> None:
        self._hub = hub
        self.account_id = account_id
        self._epoch = epoch
        self.types = frozenset(types) if types is not None else None
        self._listener: Listener | None = None
        self._sent: dict[str, int] = {}  # type -> seq of the state last sent
        self._seq = 0
        self._floor = 0  # the client has seen every change up to this seq

    async def __aenter__(self) -> PushStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self, resume: str | None, *, initial: bool) -> dict[str, str]:
        """Start listening; return what to send at once (may be empty).

        Args:
            resume: a token this server gave out earlier (``Last-Event-ID``, ``pushState``),
                or None.  A valid one gives the types changed since; an invalid one counts
                as None.
            initial: with no valid ``resume``, whether to return every current state
                (EventSource's first event) or nothing (WebSocket push).
        """
        self._listener = await self._hub.subscribe(self.account_id, self.types)
        since = self.decode(resume) if resume is not None else None
        if since is not None:
            self._seq = self._floor = since
            return self._take(await self._hub.changed_since(self.account_id, since))
        if initial:
            return self._take(await self._hub.current(self.account_id))
        self._seq = self._floor = await self._hub.high_water(self.account_id)
        return {}

    async def next(self, timeout: float | None) -> dict[str, str] | None:
        """The next change not yet sent (types filtered), or None after ``timeout`` seconds."""
        assert self._listener is not None, "open() first"
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(remaining):
                    change = await self._listener.queue.get()
            except TimeoutError:
                return None
            news = self._take(change)
            if news:
                return news

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await self._hub.unsubscribe(listener)

    @property
    def token(self) -> str:
        """The resume token for everything sent so far."""
        return jstate.encode(jstate.State(self._epoch, self._seq))

    def state_change(self, change: dict[str, str]) -> dict[str, Any]:
        return self._hub.state_change(self.account_id, change)

    def decode(self, token: str) -> int | None:
        """The account seq a resume token stands for; None when it is not one of ours."""
        decoded = jstate.decode(token.strip(), self._epoch)
        if decoded is None or decoded.after_id is not None:
            return None
        return decoded.seq

    def _take(self, change: dict[str, str]) -> dict[str, str]:
        """The part of ``change`` this client wants and was not told yet: a state no newer
        than the one last sent for its type, or than the resume point, is dropped (a poke
        may publish states that the catch-up already covered)."""
        news: dict[str, str] = {}
        for data_type, state in change.items():
            if self.types is not None and data_type not in self.types:
                continue
            seq = self._seq_of(state)
            if seq <= self._sent.get(data_type, -1) or (seq and seq <= self._floor):
                continue
            self._sent[data_type] = seq
            self._seq = max(self._seq, seq)
            news[data_type] = state
        return news

    def _seq_of(self, state: str) -> int:
        decoded = jstate.decode(state, self._epoch)
        return decoded.seq if decoded is not None else 0
