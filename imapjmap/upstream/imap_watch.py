"""The push watch (:mod:`imapjmap.upstream.watch`) over IMAP: a dedicated connection
(outside the request pool) that tells when anything changed upstream, the way the
server's profile says (``Profile.push``).

* ``"notify"`` (RFC 5465, Dovecot): INBOX examined, then ``NOTIFY SET (selected
  (MessageNew MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge FlagChange
  MailboxName SubscriptionChange))`` makes the server report changes in every mailbox,
  unasked, at any time (Rule 2).  Every ``status_interval`` seconds a check is due, and
  NOTIFY is set again every :attr:`NotifyWatch.rearm_every` seconds (Rule 1).
* ``"idle"`` (Cyrus): IDLE on INBOX.  Every ``status_interval`` seconds the watch leaves
  IDLE for one ``LIST "" "*" RETURN (STATUS (...))`` on its own connection (LIST-STATUS,
  RFC 5819) and compares it with the last one: a mailbox whose counts, UIDNEXT or
  HIGHESTMODSEQ moved, or a mailbox created, renamed or deleted, is a change.  A check is
  also due every ``poll_interval`` seconds whatever the LIST says (servers without
  LIST-STATUS or CONDSTORE show no more than that).
* ``"idle-all"`` (Gmail mode): IDLE on the mailbox with ``\\All`` (``[Gmail]/All Mail``),
  which shows every new message and every label change; no LIST-STATUS comparison.
* ``"poll"``: a check every ``poll_interval`` seconds, and nothing reported.

Where the watch is set (NOTIFY SET, or IDLE's mailbox selected and the first LIST-STATUS
taken) is the end of :meth:`ImapWatching.watch`'s set-up: a change after it is reported,
or differs from that first listing.

Rule 1: with NOTIFY a check is due every ``status_interval`` seconds (every
        ``_KEEPALIVE`` when that is 0), and NOTIFY is set again every
        :attr:`NotifyWatch.rearm_every` seconds (at least as long).  Setting it again
        every 2 s, as before, made Dovecot 2.3.19 miss half the flag changes of the
        selected 100,000-message INBOX (plain clients side by side; leaving and entering
        IDLE as often cost nothing).  Dovecot 2.3 watches INBOX's ``dovecot.index.log``
        (and ``dovecot.list.index.log`` for the other mailboxes) through inotify, that is
        by inode, from the moment NOTIFY was set.  Rotating the log (at the first write
        once it passed 1 MB, or 32 KB and 5 minutes) renames that inode away: from then on
        NOTIFY reports that mailbox only at Dovecot's ``mailbox_idle_check_interval``
        (30 s).  A mailbox of 100,000 messages rotates at the first change after its first
        sync.  Setting NOTIFY again watches the new log; the refresh after it sees what
        the dead watch missed, and a change after the new NOTIFY SET is reported by it, so
        nothing is lost in between; between two re-arms the checks find what a dead watch
        misses.  On a healthy watch a check costs one round trip and writes nothing.
        ``NOTIFY NONE`` goes first (see :meth:`NotifyWatch._rearm`).
Rule 2: with NOTIFY, INBOX (where new mail lands, and usually the biggest mailbox) is
        examined on the watch's connection and watched as the selected mailbox, the way
        IDLE watches it.  Dovecot 2.3 reports a change to the selected mailbox about
        0.5 s after it, whatever its size and across log rotations; the same change
        reported through ``personal`` came 0.5-1.5 s late in a 100,000-message INBOX,
        and a flag change there not at all once its log had rotated (measured with plain
        clients; ``bench/push_latency.py`` measures the proxy).  The watch waits in
        IDLE: without it Dovecot 2.3.19 reported only every other change to the selected
        mailbox (one whose APPEND took under about 1 s), with it every one.  It leaves
        IDLE at each event and for each re-arm.  EXAMINE takes no ``\\Recent`` flags and
        changes nothing.
Rule 3: a timer restarts when the watcher asks for the next thing, that is after the
        refresh of the last one: a slow refresh does not make the next check due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from imapjmap.errors import ProxyError
from imapjmap.imap.commands import Command
from imapjmap.imap.models import MailboxStatus
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.shares import Share
from imapjmap.upstream.watch import Heard, WatchMode

NOTIFY_EVENTS: Final = "(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"
# the selected mailbox's changes come as EXISTS, EXPUNGE (or VANISHED) and FETCH (RFC 5465)
NOTIFY_SET: Final = (
    f"NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) (personal {NOTIFY_EVENTS})"
)
_KEEPALIVE: Final = 240.0  # below common 5-minute NAT and server idle timeouts
_REARM: Final = 60.0  # NOTIFY set again this often at most (Rule 1)
_IDLE_MAX: Final = 25 * 60.0  # RFC 2177: re-issue IDLE at least every 29 minutes

# every mailbox's (name, attributes), STATUS and rights (RFC 8440), as one LIST-STATUS says
_Snapshot = tuple[
    frozenset[tuple[str, frozenset[str]]], frozenset[MailboxStatus], frozenset[tuple[str, str]]
]


class NotifyWatch:
    """NOTIFY on every mailbox, INBOX examined and idled on (Rules 1 and 2)."""

    rearm_every: float = _REARM  # seconds between NOTIFY re-arms (Rule 1)
    mode: Final[WatchMode] = "notify"
    reports: Final = True
    lists: Final = 0

    def __init__(self, session: ImapSession, status_interval: float) -> None:
        self._session = session
        self._every = status_interval or _KEEPALIVE
        self._next_check: float | None = None  # set at the first next() (Rule 3)
        self._next_rearm: float | None = None

    async def start(self) -> None:
        await self._session.select("INBOX", readonly=True)  # Rule 2
        await self._set_notify()

    async def next(self) -> Heard:
        session, loop = self._session, asyncio.get_running_loop()
        now = loop.time()
        if self._next_check is None:
            self._next_check = now + self._every
        if self._next_rearm is None:
            self._next_rearm = now + max(self.rearm_every, self._every)
        idling = session.has("IDLE")  # NOTIFY alone may speak at any time, less reliably
        if idling:
            await session.idle_start()  # Rule 2
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(min(self._next_check, self._next_rearm)):
                await session.events.wait()
        if idling:
            await session.idle_done()
        if session.closed.is_set():
            raise ProxyError("the watcher's connection was closed")
        now = loop.time()
        due = now >= self._next_check
        self._next_check = None  # restarts after this one's refresh (Rule 3)
        if now >= self._next_rearm:
            self._next_rearm = None
            await self._rearm()  # its refresh covers any event just received
            return Heard.REARMED
        # what the server sent is covered by the refresh, which starts after it
        session.take_unsolicited()
        return Heard.DUE if due else Heard.CHANGED

    async def _set_notify(self) -> None:
        await self._session.execute(Command((NOTIFY_SET,)), what="NOTIFY")

    async def _rearm(self) -> None:
        """NOTIFY set again (Rule 1); the commands are also the connection's keepalive."""
        # NONE first: a NOTIFY SET over a live one leaves Dovecot 2.3.19 with no watch
        # every other time (seen in tests: every second change unreported), presumably as
        # the old context's inotify watch on the same file is dropped after the new one
        # was added
        await self._session.execute(Command(("NOTIFY NONE",)), what="NOTIFY")
        await self._set_notify()
        # what the server sent meanwhile is covered by the refresh, which starts after it
        self._session.take_unsolicited()


class IdleWatch:
    """IDLE on one mailbox (INBOX, or the mailbox of all mail), and LIST-STATUS compared
    for the others where the profile says so."""

    mode: Final[WatchMode] = "idle"
    reports: Final = True

    def __init__(self, session: ImapSession, poll_interval: float, status_interval: float):
        self._session = session
        self._poll_interval = poll_interval
        self._status_interval = status_interval
        self._compare = status_interval > 0 and session.profile.push_lists
        self._last: _Snapshot | None = None
        self._next_poll: float | None = None  # set at the first next() (Rule 3)
        self._next_list = 0.0
        self.lists = 0

    async def start(self) -> None:
        session = self._session
        all_mail = await _all_mail(session) if session.profile.push == "idle-all" else None
        await session.select(all_mail or "INBOX", readonly=True)
        # first the snapshot, then the watcher's refresh: a change after the snapshot
        # differs from it, one before it is in the refresh (and the watched mailbox's since
        # the SELECT come with IDLE)
        if self._compare:
            self._last = await self._snapshot()

    async def next(self) -> Heard:
        session, loop = self._session, asyncio.get_running_loop()
        if self._next_poll is None:
            self._next_poll = loop.time() + self._poll_interval
            self._next_list = loop.time() + self._status_interval
        while True:
            await session.idle_start()
            deadline = min(self._next_poll, loop.time() + _IDLE_MAX)
            if self._compare:
                deadline = min(deadline, self._next_list)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await session.events.wait()
            reply = await session.idle_done()
            moved = bool(reply.fetches or reply.exists is not None or reply.expunged)
            moved = moved or bool(reply.vanished)
            if self._compare and (moved or loop.time() >= self._next_list):
                # after an event in the watched mailbox too: the refresh that follows then
                # covers what this list shows, so the next comparison does not report the
                # same change again
                now = await self._snapshot()
                self._next_list = loop.time() + self._status_interval
                moved = moved or now != self._last
                self._last = now
            if moved:
                self._next_poll = None  # restarts after this one's refresh (Rule 3)
                return Heard.CHANGED
            if loop.time() >= self._next_poll:
                self._next_poll = None
                return Heard.DUE

    async def _snapshot(self) -> _Snapshot:
        """What one LIST-STATUS says of every mailbox, in a form that compares."""
        session = self._session
        entries, statuses = await session.list_mailboxes()
        self.lists += 1
        names = frozenset((e.name, frozenset(a.lower() for a in e.attributes)) for e in entries)
        return names, frozenset(statuses), frozenset(session.listed_rights.items())


class ShareWatch:
    """A share's folders (another user's, :mod:`imapjmap.upstream.shares`): one LIST-STATUS
    of the share's names compared every ``status_interval`` seconds (every
    ``poll_interval`` without LIST-STATUS, when a check is due whatever it says).  Neither
    IDLE on the login's INBOX nor NOTIFY's ``personal`` hears the owner's changes there.
    As with :class:`IdleWatch`'s comparisons, a change is reported within
    ``status_interval`` seconds (``reports``: requests trust the cache meanwhile); without
    LIST-STATUS nothing is compared, and requests keep asking the server."""

    mode: Final[WatchMode] = "poll"

    def __init__(
        self, session: ImapSession, prefix: str, poll_interval: float, status_interval: float
    ) -> None:
        self._session = session
        self._pattern = prefix + "*"
        self._poll_interval = poll_interval
        self._every = status_interval if session.has("LIST-STATUS") else 0.0
        self.reports = bool(self._every)
        self._last: _Snapshot | None = None
        self._next_poll: float | None = None
        self.lists = 0

    async def start(self) -> None:
        if self._every:
            self._last = await self._snapshot()

    async def next(self) -> Heard:
        loop = asyncio.get_running_loop()
        if self._next_poll is None:
            self._next_poll = loop.time() + self._poll_interval
        while True:
            wait = self._next_poll - loop.time()
            if self._every:
                wait = min(wait, self._every)
            await asyncio.sleep(max(0.0, wait))
            if loop.time() >= self._next_poll:
                self._next_poll = None
                return Heard.DUE
            now = await self._snapshot()
            moved, self._last = now != self._last, now
            if moved:
                self._next_poll = None
                return Heard.CHANGED

    async def _snapshot(self) -> _Snapshot:
        session = self._session
        entries, statuses = await session.list_mailboxes(pattern=self._pattern)
        self.lists += 1
        names = frozenset((e.name, frozenset(a.lower() for a in e.attributes)) for e in entries)
        return names, frozenset(statuses), frozenset(session.listed_rights.items())


class PollWatch:
    """Nothing reported: a check every ``poll_interval`` seconds."""

    mode: Final[WatchMode] = "poll"
    reports: Final = False
    lists: Final = 0

    def __init__(self, poll_interval: float) -> None:
        self._poll_interval = poll_interval

    async def start(self) -> None:
        pass

    async def next(self) -> Heard:
        await asyncio.sleep(self._poll_interval)
        return Heard.DUE


async def _all_mail(session: ImapSession) -> str | None:
    """The mailbox with RFC 6154's ``\\All`` attribute (Gmail's All Mail, localised)."""
    entries, _ = await session.list_mailboxes(with_status=False)
    return next((e.name for e in entries if e.has("\\All")), None)


class ImapWatching:
    """:class:`~imapjmap.upstream.watch.WatchSource` over ``self.pool`` (a base of
    :class:`~imapjmap.upstream.imap.ImapUpstream`)."""

    __slots__ = ()
    pool: ImapPool
    share: Share | None  # a share's account is watched by ShareWatch

    @contextlib.asynccontextmanager
    async def watch(
        self, *, poll_interval: float, status_interval: float
    ) -> AsyncIterator[NotifyWatch | IdleWatch | PollWatch | ShareWatch]:
        session = await self.pool.open_dedicated()
        try:
            push = session.profile.push
            watch: NotifyWatch | IdleWatch | PollWatch | ShareWatch
            if self.share is not None:
                watch = ShareWatch(session, self.share.prefix, poll_interval, status_interval)
            elif push == "notify":
                watch = NotifyWatch(session, status_interval)
            elif push == "poll":
                watch = PollWatch(poll_interval)
            else:
                watch = IdleWatch(session, poll_interval, status_interval)
            await watch.start()
            yield watch
        finally:
            await session.close()
