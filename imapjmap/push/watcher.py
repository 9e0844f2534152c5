"""Watching the upstream for changes while someone listens for push.

Theory of operation
-------------------
An account with at least one push listener gets one watcher: a dedicated IMAP connection
(outside the request pool) that tells us when anything changed upstream.

* With NOTIFY (RFC 5465, Dovecot): INBOX examined, then ``NOTIFY SET (selected
  (MessageNew MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge FlagChange
  MailboxName SubscriptionChange))`` makes the server report changes in every mailbox,
  unasked, at any time (Rule 5).  Every ``push.status_interval`` seconds the watcher sets
  NOTIFY again and refreshes the account once (Rule 4).
* Without NOTIFY (Cyrus): IDLE on INBOX.  Every ``push.status_interval`` seconds the
  watcher leaves IDLE for one ``LIST "" "*" RETURN (STATUS (...))`` on its own connection
  (LIST-STATUS, RFC 5819) and compares it with the last one: a mailbox whose counts,
  UIDNEXT or HIGHESTMODSEQ moved, or a mailbox created, renamed or deleted, is an event.
  The account is also refreshed every ``push.poll_interval`` seconds whatever the LIST
  says (servers without LIST-STATUS or CONDSTORE show no more than that).  In Gmail mode
  the IDLE is on ``[Gmail]/All Mail`` (found by ``\\All``), which shows every new message
  and every label change, and there is no LIST-STATUS comparison.

Any event triggers one refresh of the account (through the request pool, so the watcher's
connection only listens) and one :meth:`Hub.poke`.  The watcher reaches the sync engine
only through the account's :class:`~imapjmap.sync.freshness.Freshness` (attached, lost,
an event) and :meth:`AccountSync.refresh`; an event that arrives during a refresh makes
that refresh unclean there, so it is never lost.

Rule 1: from the moment the watch is set (NOTIFY SET, or IDLE's mailbox selected and the
        first LIST-STATUS taken) the watcher is attached: once a refresh after it has
        seen everything, requests need no freshness round trip while it reports nothing.
Rule 2: a failure disconnects, reports the watcher lost (requests go back to asking
        the server at once), and reconnects with exponential backoff.
Rule 3: the watcher stops when the last listener leaves.
Rule 4: with NOTIFY the account is refreshed every ``push.status_interval`` seconds
        (every ``_KEEPALIVE`` when that is 0), and NOTIFY is set again, then the account
        refreshed, every ``Watcher.rearm_every`` seconds (at least as long).  Setting it
        again every 2 s, as before, made Dovecot 2.3.19 miss half the flag changes of the
        selected 100,000-message INBOX (plain clients side by side; leaving and entering
        IDLE as often cost nothing).  Dovecot 2.3 watches INBOX's
        ``dovecot.index.log`` (and ``dovecot.list.index.log`` for the other mailboxes)
        through inotify, that is by inode, from the moment NOTIFY was set.  Rotating the
        log (at the first write once it passed 1 MB, or 32 KB and 5 minutes) renames that
        inode away: from then on NOTIFY reports that mailbox only at Dovecot's
        ``mailbox_idle_check_interval`` (30 s).  A mailbox of 100,000 messages rotates
        at the first change after its first sync.  Setting NOTIFY again watches the new
        log; the refresh after it sees what the dead watch missed, and a change after the
        new NOTIFY SET is reported by it, so nothing is lost in between; between two
        re-arms the refreshes find what a dead watch misses.  On a healthy watch a
        refresh costs one round trip and writes nothing.  ``NOTIFY NONE`` goes
        first (see :meth:`Watcher._rearm`).
Rule 5: with NOTIFY, INBOX (where new mail lands, and usually the biggest mailbox) is
        examined on the watcher's connection and watched as the selected mailbox, the way
        IDLE watches it.  Dovecot 2.3 reports a change to the selected mailbox about
        0.5 s after it, whatever its size and across log rotations; the same change
        reported through ``personal`` came 0.5-1.5 s late in a 100,000-message INBOX,
        and a flag change there not at all once its log had rotated (measured with plain
        clients; ``bench/push_latency.py`` measures the proxy).  The watcher waits in
        IDLE: without it Dovecot 2.3.19 reported only every other change to the selected
        mailbox (one whose APPEND took under about 1 s), with it every one.  It leaves
        IDLE at each event and for each re-arm.  EXAMINE takes no ``\\Recent`` flags and
        changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from imapjmap.errors import ProxyError
from imapjmap.imap.commands import Command
from imapjmap.imap.models import MailboxStatus
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.sync.engine import AccountSync
from imapjmap.upstream.api import RefreshSource

log = logging.getLogger(__name__)

NOTIFY_EVENTS: Final = "(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"
# the selected mailbox's changes come as EXISTS, EXPUNGE (or VANISHED) and FETCH (RFC 5465)
NOTIFY_SET: Final = (
    f"NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) (personal {NOTIFY_EVENTS})"
)
_KEEPALIVE: Final = 240.0  # below common 5-minute NAT and server idle timeouts
_REARM: Final = 60.0  # NOTIFY set again this often at most (Rule 4)
_IDLE_MAX: Final = 25 * 60.0  # RFC 2177: re-issue IDLE at least every 29 minutes
_DEBOUNCE: Final = 0.05  # let a burst of events (a MOVE: EXPUNGE + new) settle

# every mailbox's (name, attributes), STATUS and rights (RFC 8440), as one LIST-STATUS says
_Snapshot = tuple[
    frozenset[tuple[str, frozenset[str]]], frozenset[MailboxStatus], frozenset[tuple[str, str]]
]


class Watcher:
    """One account's upstream watcher (started and stopped by the push hub's callbacks)."""

    rearm_every: float = _REARM  # seconds between NOTIFY re-arms (Rule 4)

    def __init__(
        self,
        account_id: str,
        pool: ImapPool,
        sync: AccountSync,
        poke: Callable[[], Awaitable[None]],
        poll_interval: float,
        status_interval: float = 0.0,
        *,
        source: RefreshSource,
    ) -> None:
        self.account_id = account_id
        self._pool = pool
        self._source = source  # what the account's refreshes read
        self._sync = sync
        self._poke = poke
        self._poll_interval = poll_interval
        self._status_interval = status_interval  # 0: no LIST-STATUS comparison
        self.lists = 0  # LIST-STATUS comparisons made, for diagnostics and tests
        self.rearms = 0  # NOTIFY set again (Rule 4), for diagnostics and tests
        self.checks = 0  # refreshes every status_interval with NOTIFY (Rule 4), the same
        self.events = 0  # changes the server reported, the same
        self._attached = False  # told the account's freshness that this watcher watches
        self._task: asyncio.Task[None] | None = None
        self.mode = "stopped"  # "notify" | "idle" | "reconnecting" | "stopped"

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._detach()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.mode = "stopped"

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            session: ImapSession | None = None
            try:
                session = await self._pool.open_dedicated()
                backoff = 1.0
                if session.profile.push == "notify":
                    await self._notify(session)
                else:
                    await self._idle(session)
            except ProxyError as exc:
                log.info(
                    "push watcher %s: %s; reconnecting in %.0fs", self.account_id, exc, backoff
                )
            finally:
                self._detach()
                if session is not None:
                    await session.close()
            self.mode = "reconnecting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)

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
        await self._sync.refresh(self._source)
        await self._poke()

    async def _notify(self, session: ImapSession) -> None:
        await session.select("INBOX", readonly=True)  # Rule 5
        await self._set_notify(session)
        self.mode = "notify"
        self._attach()
        await self._sync.refresh(self._source)  # nothing missed before NOTIFY
        await self._poke()
        every = self._status_interval or _KEEPALIVE
        loop = asyncio.get_running_loop()
        next_check = loop.time() + every
        next_rearm = loop.time() + max(self.rearm_every, every)
        idling = session.has("IDLE")  # NOTIFY alone may speak at any time, less reliably
        while True:
            if idling:
                await session.idle_start()  # Rule 5
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(next_check, next_rearm)):
                    await session.events.wait()
            if idling:
                await session.idle_done()
            if session.closed.is_set():
                raise ProxyError("the watcher's connection was closed")
            if loop.time() >= next_rearm:
                await self._rearm(session)  # its refresh covers any event just received
                next_rearm = loop.time() + max(self.rearm_every, every)
            elif loop.time() >= next_check:
                self.checks += 1  # Rule 4: what a dead watch missed
                session.take_unsolicited()
                await self._check()
            else:
                session.take_unsolicited()
                await self._changed()
            next_check = loop.time() + every

    async def _set_notify(self, session: ImapSession) -> None:
        await session.execute(Command((NOTIFY_SET,)), what="NOTIFY")

    async def _rearm(self, session: ImapSession) -> None:
        """NOTIFY set again, then one refresh for what a dead watch missed (Rule 4); the
        commands are also the connection's keepalive."""
        # NONE first: a NOTIFY SET over a live one leaves Dovecot 2.3.19 with no watch
        # every other time (seen in tests: every second change unreported), presumably as
        # the old context's inotify watch on the same file is dropped after the new one
        # was added
        await session.execute(Command(("NOTIFY NONE",)), what="NOTIFY")
        await self._set_notify(session)
        self.rearms += 1
        # what the server sent meanwhile is covered by the refresh, which starts after it
        session.take_unsolicited()
        await self._check()

    async def _idle(self, session: ImapSession) -> None:
        """IDLE on INBOX and compare LIST-STATUS for the rest (servers without NOTIFY), or
        IDLE on the mailbox of all mail (the profile's push strategy)."""
        profile = session.profile
        if profile.push == "poll":
            await self._poll_only()
            return
        watched = (await _all_mail(session) if profile.push == "idle-all" else None) or "INBOX"
        await session.select(watched, readonly=True)
        compare = self._status_interval > 0 and profile.push_lists
        # first the snapshot, then a refresh: a change after the snapshot differs from
        # it, one before it is in the refresh (and INBOX's since the SELECT come with IDLE)
        last = await self._snapshot(session) if compare else None
        self._attach()
        await self._sync.refresh(self._source)
        await self._poke()
        self.mode = "idle"
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self._poll_interval
        next_list = loop.time() + self._status_interval
        while True:
            await session.idle_start()
            deadline = min(next_poll, loop.time() + _IDLE_MAX)
            if compare:
                deadline = min(deadline, next_list)
            try:
                async with asyncio.timeout_at(deadline):
                    await session.events.wait()
            except TimeoutError:
                pass
            reply = await session.idle_done()
            moved = bool(reply.fetches or reply.exists is not None or reply.expunged)
            moved = moved or bool(reply.vanished)
            if compare and (moved or loop.time() >= next_list):
                # after an INBOX event too: the refresh below then covers what this list
                # shows, so the next comparison does not report the same change again
                now = await self._snapshot(session)
                next_list = loop.time() + self._status_interval
                moved = moved or now != last
                last = now
            if moved:
                await self._changed()
            elif loop.time() >= next_poll:
                await self._check()
            if moved or loop.time() >= next_poll:
                next_poll = loop.time() + self._poll_interval

    async def _snapshot(self, session: ImapSession) -> _Snapshot:
        """What one LIST-STATUS says of every mailbox, in a form that compares."""
        entries, statuses = await session.list_mailboxes()
        self.lists += 1
        names = frozenset((e.name, frozenset(a.lower() for a in e.attributes)) for e in entries)
        return names, frozenset(statuses), frozenset(session.listed_rights.items())

    async def _poll_only(self) -> None:
        self.mode = "poll"
        while True:
            await asyncio.sleep(self._poll_interval)
            await self._check()


async def _all_mail(session: ImapSession) -> str | None:
    """The mailbox with RFC 6154's ``\\All`` attribute (Gmail's All Mail, localised)."""
    entries, _ = await session.list_mailboxes(with_status=False)
    return next((e.name for e in entries if e.has("\\All")), None)
