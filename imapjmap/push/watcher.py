"""Watching the upstream for changes while someone listens for push.

Theory of operation
-------------------
An account with at least one push listener gets one watcher: a loop around the account's
:class:`~imapjmap.upstream.watch.Watch`, which waits on a connection of its own (outside
the request pool) for the next change the server reports or the next periodic check.
How the server is watched (NOTIFY, IDLE with LIST-STATUS compared, IDLE on the mailbox
of all mail, polling) is the profile's push strategy, said by the upstream
(``upstream.imap_watch``); nothing here depends on it.

Each thing the watch heard triggers one refresh of the account (through the request
pool, so the watch's connection only listens) and one :meth:`Hub.poke`.  The watcher
reaches the sync engine only through the account's
:class:`~imapjmap.sync.freshness.Freshness` (attached, lost, an event) and
:meth:`AccountSync.refresh`; an event that arrives during a refresh makes that refresh
unclean there, so it is never lost.

Rule 1: from the moment the watch is set (leaving :meth:`WatchSource.watch`'s set-up)
        the watcher is attached, if the watch reports changes: once a refresh after it
        has seen everything, requests need no freshness round trip while it reports
        nothing.  A watch that only polls never attaches.
Rule 2: a failure disconnects, reports the watcher lost (requests go back to asking
        the server at once), and reconnects with exponential backoff.
Rule 3: the watcher stops when the last listener leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Literal, Protocol

from imapjmap.errors import ProxyError
from imapjmap.sync.engine import AccountSync
from imapjmap.tasks import cancel_and_wait
from imapjmap.upstream.api import Heard, RefreshSource, Watch, WatchSource

log = logging.getLogger(__name__)

_DEBOUNCE: Final = 0.05  # let a burst of events (a MOVE: EXPUNGE + new) settle
_BACKOFF_MAX: Final = 60.0


class Watched(RefreshSource, WatchSource, Protocol):
    """The account's server, as its watcher reaches it: watched, and refreshed from."""


class Watcher:
    """One account's upstream watcher (started and stopped by the push hub's callbacks)."""

    def __init__(
        self,
        account_id: str,
        upstream: Watched,
        sync: AccountSync,
        poke: Callable[[], Awaitable[None]],
        poll_interval: float,
        status_interval: float = 0.0,
    ) -> None:
        self.account_id = account_id
        self._upstream = upstream
        self._sync = sync
        self._poke = poke
        self._poll_interval = poll_interval
        self._status_interval = status_interval  # 0: no LIST-STATUS comparison
        self.rearms = 0  # watches set again (NOTIFY), for diagnostics and tests
        self.checks = 0  # periodic refreshes, the same
        self.events = 0  # changes the server reported, the same
        self._lists = 0  # listings compared by the watches before the current one
        self._watch: Watch | None = None
        self._attached = False  # told the account's freshness that this watcher watches
        self._task: asyncio.Task[None] | None = None
        self.mode: Literal["notify", "idle", "poll", "reconnecting", "stopped"] = "stopped"

    @property
    def lists(self) -> int:
        """LIST-STATUS comparisons made so far, for diagnostics and tests."""
        return self._lists + (self._watch.lists if self._watch is not None else 0)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._detach()
        try:
            await cancel_and_wait(task)
        finally:
            self.mode = "stopped"

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                async with self._upstream.watch(
                    poll_interval=self._poll_interval, status_interval=self._status_interval
                ) as watch:
                    backoff = 1.0
                    self._watch = watch
                    try:
                        await self._follow(watch)
                    finally:
                        self._detach()  # before the connection is closed (Rule 2)
                        self._lists += watch.lists
                        self._watch = None
            except ProxyError as exc:
                log.info(
                    "push watcher %s: %s; reconnecting in %.0fs", self.account_id, exc, backoff
                )
            finally:
                self._detach()
            self.mode = "reconnecting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _follow(self, watch: Watch) -> None:
        """Refresh once for what came before the watch, then once for each thing it hears."""
        self.mode = watch.mode  # set: a change from now on is heard
        if watch.reports:
            self._attach()  # Rule 1
            await self._sync.refresh(self._upstream)  # nothing missed before the watch
            await self._poke()
        while True:
            heard = await watch.next()
            if heard is Heard.CHANGED:
                await self._changed()
                continue
            if heard is Heard.REARMED:
                self.rearms += 1
            else:
                self.checks += 1
            await self._check()

    def _attach(self) -> None:
        self._attached = True
        self._sync.freshness.watcher_attached()

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            self._sync.freshness.watcher_lost()

    async def _changed(self) -> None:
        """The server reported a change: refresh once, then publish."""
        self.events += 1
        await self._check()

    async def _check(self) -> None:
        """Refresh once, then publish; the cache is stale from now until that refresh (a
        request meanwhile asks the server itself)."""
        self._sync.freshness.note_event()
        await asyncio.sleep(_DEBOUNCE)
        await self._sync.refresh(self._upstream)
        await self._poke()
