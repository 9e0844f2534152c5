"""The push hub: turns cache changes into RFC 8620 §7.1 StateChange objects for listeners.

Theory of operation
-------------------
Every type's state is a seq in ``type_states``.  After anything may have changed an
account (a refresh, a write, a watcher event), :meth:`Hub.poke` reads the account's type
states once and compares them with the last ones it published; the types whose state moved
go out as ONE StateChange to every listener of that account, each listener filtering by the
types it asked for.  The published states are the same strings ``/get`` returns.

Rule 1: a listener only ever receives its own account's changes (the queue is registered
        under the account id of the authenticated user).
Rule 2: a slow listener never blocks the others: each has a bounded queue, and when it is
        full the oldest change is dropped — the next one carries the newer states anyway.
Rule 3: the hub knows nothing about IMAP; watchers call :meth:`poke` after a refresh.
Rule 4: instances sharing the cache share their changes (:mod:`imapjmap.cluster`): a poke
        reads the states also when another instance has listeners of the account, and
        publishes the types that moved; a change another instance published reaches this
        hub's listeners through :meth:`heard`, for the types whose seq is above the one
        published here (states only ever grow within an epoch, so one heard late or twice
        changes nothing).  The hub tells the coordinator when an account's first listener
        comes and its last goes.

``EmailDelivery`` (RFC 8621 §1.5) is a push-only type whose state moves when new mail
arrives in an inbox; the sync engine records it like any other type.

``Quota`` (RFC 9425) is a type only accounts whose server reports quotas have: a first
event names it once it has a state.  Its state moves when the quotas are read again; a
poke that finds Email's state moved has them read (:mod:`imapjmap.push.quota`, through
:attr:`Hub.on_email_moved`) when someone listens for Quota and the quotas were read
before (a Quota state exists), and carries both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from imapjmap.cluster.api import Coordinator
from imapjmap.cluster.local import Alone
from imapjmap.jmap import state as jstate
from imapjmap.store import queries as q
from imapjmap.store.db import Store

log = logging.getLogger(__name__)

PUSH_TYPES: Final = (
    "Mailbox",
    "Email",
    "Thread",
    "EmailDelivery",
    "Identity",
    "EmailSubmission",
    "Quota",
)
# types of a capability some accounts lack: in a first event only once they have a state
_OPTIONAL_TYPES: Final = frozenset({"Quota"})
_QUEUE: Final = 64


@dataclass(eq=False)
class Listener:
    """One push consumer (an EventSource stream, a WebSocket, a PushSubscription)."""

    account_id: str
    types: frozenset[str] | None  # None: every type
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE)
    )

    def offer(self, change: dict[str, Any]) -> None:
        filtered = {t: s for t, s in change.items() if self.types is None or t in self.types}
        if not filtered:
            return
        if self.queue.full():
            self.queue.get_nowait()  # Rule 2: the newest change supersedes the oldest
        self.queue.put_nowait(filtered)


class Hub:
    """Per-process fan-out of StateChanges; one per aiohttp app."""

    def __init__(self, store: Store, cluster: Coordinator | None = None) -> None:
        self._store = store
        self._cluster: Coordinator = cluster if cluster is not None else Alone()
        self._listeners: dict[str, set[Listener]] = {}
        self._published: dict[str, dict[str, int]] = {}
        self._epochs: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_first_listener: Callable[[str], Awaitable[None]] | None = None
        self.on_last_listener: Callable[[str], Awaitable[None]] | None = None
        # Email's state moved: read the quotas again, saying whether Quota's state moved
        self.on_email_moved: Callable[[str], Awaitable[bool]] | None = None

    def listeners(self, account_id: str) -> int:
        return len(self._listeners.get(account_id, ()))

    def all_listeners(self) -> int:
        """Listeners of every account (EventSource, WebSocket, PushSubscription)."""
        return sum(len(group) for group in self._listeners.values())

    async def subscribe(self, account_id: str, types: Collection[str] | None) -> Listener:
        return await self.add(Listener(account_id, frozenset(types) if types is not None else None))

    async def add(self, listener: Listener) -> Listener:
        """Register a listener made by the caller (one whose ``offer`` does more)."""
        account_id = listener.account_id
        group = self._listeners.setdefault(account_id, set())
        group.add(listener)
        first = len(group) == 1  # now: a second add during the read below is not the first
        if account_id not in self._published:
            self._published[account_id] = await self._read(account_id)
        if first:
            await self._cluster.listening(account_id, on=True)
            if self.on_first_listener is not None:
                await self.on_first_listener(account_id)
        return listener

    async def unsubscribe(self, listener: Listener) -> None:
        group = self._listeners.get(listener.account_id)
        if group is None or listener not in group:
            return
        group.discard(listener)
        if not group:
            del self._listeners[listener.account_id]
            await self._cluster.listening(listener.account_id, on=False)
            if self.on_last_listener is not None:
                await self.on_last_listener(listener.account_id)

    async def current(self, account_id: str) -> dict[str, str]:
        """Every push type's current state string (for a first event or a resume)."""
        seqs = await self._read(account_id)
        return {
            t: self._encode(account_id, seqs.get(t, 0))
            for t in PUSH_TYPES
            if t not in _OPTIONAL_TYPES or t in seqs
        }

    async def changed_since(self, account_id: str, seq: int) -> dict[str, str]:
        """The types whose state moved after the account-wide ``seq`` (Last-Event-ID)."""
        seqs = await self._read(account_id)
        return {
            t: self._encode(account_id, s) for t, s in seqs.items() if s > seq and t in PUSH_TYPES
        }

    async def high_water(self, account_id: str) -> int:
        """The account-wide seq: an event id that lets a client resume (CORE-PUSH-03)."""
        seqs = await self._read(account_id)
        return max(seqs.values(), default=0)

    async def poke(self, account_id: str) -> None:
        """Publish whatever changed for this account since the last poke (cheap when
        nobody listens, here or elsewhere: no read at all)."""
        here = bool(self._listeners.get(account_id))
        if not here and not self._cluster.listened_elsewhere(account_id):
            return
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            seqs = await self._read(account_id)
            before = self._published.get(account_id)
            moved = {
                t: s for t, s in seqs.items() if s != (before or {}).get(t) and t in PUSH_TYPES
            }
            self._published[account_id] = seqs
        # a client holds a Quota state only once the quotas were read (by Quota/get): until
        # then no StateChange of Quota means anything to anyone, and none costs a reading.
        # An instance that never published the account (its listeners are elsewhere, Rule 4)
        # cannot tell whether Quota moved: it reads the quotas all the same
        quota_known = "Quota" in seqs and ("Quota" not in moved or before is None)
        if "Email" in moved and quota_known and self._wanted(account_id, "Quota"):
            await self._quotas(account_id, moved)
        if not moved:
            return
        if self._cluster.shared:  # Rule 4
            await self._cluster.publish(account_id, self._epochs[account_id], moved)
        self._offer(account_id, moved)

    def _wanted(self, account_id: str, data_type: str) -> bool:
        """Whether a listener of the account (here, or perhaps elsewhere) takes the type."""
        here = self._listeners.get(account_id, ())
        return any(
            listener.types is None or data_type in listener.types for listener in here
        ) or self._cluster.listened_elsewhere(account_id)

    async def _quotas(self, account_id: str, moved: dict[str, int]) -> None:
        """Read the quotas again after mail moved; Quota's new state joins ``moved``."""
        if self.on_email_moved is None or not await self.on_email_moved(account_id):
            return
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            seq = (await self._read(account_id)).get("Quota")
            published = self._published.setdefault(account_id, {})
            if seq is not None and seq != published.get("Quota"):
                published["Quota"] = seq
                moved["Quota"] = seq

    async def heard(self, account_id: str, epoch: str, seqs: Mapping[str, int]) -> None:
        """Another instance published these seqs of the account (Rule 4)."""
        if not self._listeners.get(account_id):
            return
        if epoch != self._epochs.get(account_id):
            await self.poke(account_id)  # a cache made anew: read what it says now
            return
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            published = self._published.setdefault(account_id, {})
            moved = {t: s for t, s in seqs.items() if t in PUSH_TYPES and s > published.get(t, 0)}
            published.update(moved)
        if moved:
            self._offer(account_id, moved)

    def _offer(self, account_id: str, moved: Mapping[str, int]) -> None:
        change = {t: self._encode(account_id, s) for t, s in moved.items()}
        log.debug("push %s: %s", account_id, sorted(change))
        for listener in list(self._listeners.get(account_id, ())):
            listener.offer(change)

    def state_change(self, account_id: str, change: dict[str, str]) -> dict[str, Any]:
        """The RFC 8620 §7.1 StateChange object."""
        return {"@type": "StateChange", "changed": {account_id: change}}

    async def _read(self, account_id: str) -> dict[str, int]:
        def read(tx: Any) -> tuple[dict[str, int], str | None]:
            row = q.account(tx, account_id)
            return q.type_states(tx, account_id), row.epoch if row else None

        # a few rows: on the event loop (store Rule 10).  Every API request pokes while an
        # EventSource listens; on a reader thread, the pokes of 20 busy clients queued
        # behind each other for the account's reader, and a watcher's poke behind them.
        seqs, epoch = await self._store.read_small(read, account=account_id)
        if epoch is not None:
            self._epochs[account_id] = epoch
        return seqs

    def _encode(self, account_id: str, seq: int) -> str:
        return jstate.encode(jstate.State(self._epochs[account_id], seq))
