"""Freshness: bring an account's cache up to date with the upstream, cheaply.

Theory of operation
-------------------
A JMAP request first asks its :class:`AccountSync` to refresh.  A refresh costs one IMAP
round trip when nothing changed: ``LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED STATUS
(...))`` where LIST-STATUS exists.  Extra round trips happen only for what moved: a STATUS
for the source id of a mailbox seen for the first time, a STATUS per mailbox on servers
without LIST-STATUS (the documented cost of such servers).

Rule 1: whether a request asks the upstream, shares the run in flight or the next one is
        decided by the account's :class:`~imapjmap.sync.freshness.Freshness`, which this
        class tells when a run starts, lists and ends; the push watcher tells it the rest.
        A caller never trusts a LIST that may predate its request: it shares a run whose
        LIST has not gone out yet, or (with a quiet watcher) one that began after the
        last event; otherwise it awaits the run in flight, then starts the next one,
        shared in turn by everyone who came while the first ran: never more than one run
        behind the one in flight.  The run is a task of its own, awaited through
        ``asyncio.shield``: a caller cancelled because its client went away stops
        waiting, and the run goes on for the others.
Rule 2: the store is written in one transaction per refresh (see ``sync.mailboxes``).
Rule 3: nothing here decides JMAP states; ``store.queries.next_seq`` does.
Rule 4: in Gmail mode (the profile's ``labels``) only All Mail, Trash and Spam are STATUSed
        and synced; the labels come with All Mail's messages (:mod:`imapjmap.sync.gmail`).
Rule 5: on Dovecot with LIST-STATUS (the profile's ``anchor``) the refresh connection keeps
        INBOX (or a far bigger mailbox: the *anchor*, see :func:`_choose_anchor`) selected
        between refreshes.  Dovecot opens a mailbox to answer its STATUS, which for a
        100,000-message Maildir takes 100-150 ms (it re-reads the mailbox's index and
        uidlist), but answers the selected mailbox's STATUS from the session's open view.
        That view is stale until the session syncs, so the LIST-STATUS goes out with a NOOP
        behind it in the same write (:meth:`RefreshReads.list_with_status`): still one round
        trip, and its cost no longer grows with the mailbox.  If Dovecot closed that
        connection (it does when another client deletes the selected mailbox), the refresh
        runs once more on another; so it does after any connection lost under it
        (``ImapConnectionLost``: Dovecot 2.3's imap process can die of a lock-order panic
        on ``dovecot.list.index.log`` while another connection of the user works), but not
        after a timeout or a refused connect, whose second try would only double the wait.
        The first run, with no anchor known yet, examines INBOX before its listing: at a
        million messages each open (the STATUS of a mailbox not selected, an EXAMINE) cost
        Dovecot 8-9 s, and the first sync of INBOX then needs no second one.
Rule 6: a run that found the cache matching the listing and no mailbox to sync remembers
        that listing (as described, rights and source ids included) with the cache's rows
        it compared: the *settled* listing.  The next run whose listing is the same skips
        reading and comparing the cache (a reader-thread hop and four queries, the larger
        part of a no-change request's CPU).  Only a refresh writes the rows compared and
        the cursors, and one that writes replaces the settled listing; a write of ours
        (``force``, a suspect UID, a Gmail write's grace) forgets it, as does a run in
        flight when such a write came.  It is good for ``SETTLED_FOR`` seconds at most,
        after which the cache is read again whatever the listing says.
Rule 7: instances sharing the cache never sync one account at once: a run lists and writes
        holding the account's sync lock (:meth:`Coordinator.sync_lock`), so it lists after
        another instance's run has written.  When that lock is not had within the
        configured wait the run ends without listing, and its callers read the cache as the
        other instance's sync left it.  A run that has a settled listing (Rule 6) lists
        first without the lock (two round trips to the coordinator spared on the usual
        request): finding that listing, it is done, as the cache matches what the server
        says now; finding another, it takes the lock and lists again under it (a listing
        taken before another instance's sync must not be written over what it wrote).
        A mailbox another instance is filling in (its first sync, in the background) is
        left to it: that instance holds its fill lock.
Rule 8: the connection that keeps the anchor never selects another mailbox during a run:
        the other mailboxes whose cursors moved (a first sync, a message moved out of
        INBOX) are synced on a spare connection of the pool, lent only if one is free at
        once (a run that waited for a second connection could wait for itself).  Without
        one they are synced on the same connection and the anchor is opened again after
        them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from imapjmap.cluster.api import Coordinator
from imapjmap.cluster.local import Alone
from imapjmap.errors import ImapConnectionLost, ImapUnavailable, ProxyError
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store import write_grace as shared_grace
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails, records
from imapjmap.sync import mailboxes as mbx
from imapjmap.sync.freshness import Ask, Freshness
from imapjmap.sync.gmail import Grace, LabelHook, is_synced, is_synced_entry, system_folders
from imapjmap.upstream.refresh_reads import (
    ListEntry,
    MailboxStatus,
    RefreshReads,
    RefreshSource,
    UidSet,
)

log = logging.getLogger(__name__)

_XGUID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
ANCHOR_MIN: Final = 10_000  # messages: below this a STATUS costs Dovecot a few ms at most
SETTLED_FOR: Final = 2.0  # seconds a settled listing spares reading the cache (Rule 6)
FIRST_ANCHOR: Final = "INBOX"  # kept open before any listing has said the sizes (Rule 5)
# LIST attributes saying whether a mailbox got mail since a session last opened it (RFC 3501
# §7.2.2): they flip as any session opens mailboxes (Dovecot adds \UnMarked once a mailbox
# was opened) and nothing here uses them, so a listing differing only in them is the same
_MARKS: Final = frozenset({"\\marked", "\\unmarked"})


@dataclass(frozen=True, slots=True)
class _Cached:
    """What the cache holds of an account's mailboxes, read in one transaction on a reader."""

    account_id: str
    rows: list[q.MailboxRow]
    cursors: dict[str, tuple[int | None, int | None, int | None, int | None]]
    delimiter: str | None
    dead_locations: bool  # destroyed mailboxes whose messages are still placed in them
    prefix: str  # a share's account: what its names start with (AccountSync's ``prefix``)

    def unchanged(self, listed: Sequence[mbx.Listed], delimiter: str | None) -> bool:
        """Whether the upstream's listing needs no write: same mailboxes, same cursors."""
        if delimiter != self.delimiter or self.dead_locations:
            return False
        change = mbx.plan(
            listed, self.rows, delimiter=delimiter, account_id=self.account_id, prefix=self.prefix
        )
        return not change


@dataclass(frozen=True, slots=True)
class _Settled:
    """A listing the cache was found to match, with nothing to sync (Rule 6)."""

    listed: list[mbx.Listed]
    delimiter: str | None
    cached: _Cached
    writes: int  # AccountSync._writes when the run that found it began
    until: float  # loop time after which the cache is read again

    def matches(self, listed: list[mbx.Listed], delimiter: str | None) -> bool:
        return listed == self.listed and delimiter == self.delimiter


class AccountSync:
    """Refreshes one account's cache; shared by every request of that account.

    ``prefix``: the account is a share of another user's folders, all named under it
    (``shared/alice/``); its top-level mailboxes' names leave it out."""

    def __init__(
        self,
        store: Store,
        account_id: str,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
        prefix: str = "",
        cluster: Coordinator | None = None,
    ) -> None:
        self._store = store
        self.account_id = account_id
        self.prefix = prefix
        self._cluster: Coordinator = cluster if cluster is not None else Alone()
        self._on_change = on_change  # told after every refresh (e.g. the push hub)
        self._freshness = Freshness()
        self._task: asyncio.Task[None] | None = None
        self._runs = 0  # runs started so far; the one in flight is number _runs
        self._refreshes = 0  # completed refreshes
        self._fills: dict[str, asyncio.Task[None]] = {}  # mailbox id → first-sync fill
        self._filling: dict[str, emails.MailboxSync] = {}  # mailbox id → its job
        self._grace = Grace()  # Gmail mode: our recent writes (eventual consistency)
        self._writes = 0  # writes of ours so far: a settled listing is forgotten (Rule 6)
        self._settled: _Settled | None = None
        self._anchor: str | None = None  # the mailbox kept selected between refreshes (Rule 5)
        # mailbox id → UIDs a write found missing: checked by UID on the next refresh
        self._suspects: dict[str, set[int]] = {}
        self._anchor_keeper: RefreshReads | None = None  # the connection that keeps it

    @property
    def freshness(self) -> Freshness:
        """What the push watcher tells about the upstream (Rule 1)."""
        return self._freshness

    @property
    def refreshes(self) -> int:
        """Refreshes completed so far (diagnostics and tests)."""
        return self._refreshes

    async def note_writes(self, written: Iterable[str], destroyed: Iterable[str]) -> None:
        """Gmail mode: Emails about to be written keep their copies for a grace (the server
        is eventually consistent); those destroyed keep none (:class:`gmail.Grace`).  With
        instances sharing the cache the grace goes there too, for their refreshes: one
        write transaction, before the writes go upstream."""
        written, destroyed = list(written), list(destroyed)
        self._wrote()
        self._grace.forget(destroyed)
        self._grace.note(written)
        if not self._cluster.shared or not (written or destroyed):
            return
        now = self._grace.wall()
        ends = now + self._grace.seconds

        def note(tx: Tx) -> None:
            shared_grace.note(tx, self.account_id, written, destroyed, ends=ends, now=now)

        await self._store.run(note, account=self.account_id)

    async def refresh(self, source: RefreshSource, *, force: bool = False) -> None:
        """Bring the cache up to what the upstream says now, sharing runs (Rule 1).

        ``force``: a write of ours just landed upstream, so even a quiet watcher's cache
        is stale until a run lists after it.
        """
        if force:
            self._wrote()
            self._freshness.own_write()
        ask = self._freshness.request()
        if ask is Ask.NO:
            return
        task = self._task
        if ask is Ask.JOIN and task is not None:
            await asyncio.shield(task)
            return
        runs = self._runs
        if task is not None and not task.done():
            await asyncio.shield(task)  # it may have listed before this call began
        if self._runs == runs:  # nobody started the next run meanwhile
            self._runs += 1
            self._freshness.refresh_started()
            self._task = asyncio.get_running_loop().create_task(self._refresh(source))
            # every caller may have gone (their requests cancelled) before the run ends:
            # its failure is then nobody's to see, and must not be logged as unretrieved
            self._task.add_done_callback(_retrieved)
        task = self._task
        assert task is not None
        await asyncio.shield(task)

    def _wrote(self) -> None:
        self._writes += 1
        self._settled = None

    async def _refresh(self, source: RefreshSource) -> None:
        complete = False
        try:
            if not await self._settled_unlocked(source):
                async with self._cluster.sync_lock(self.account_id) as held:
                    if not held:
                        return  # another instance's sync outlasted the wait (Rule 7)
                    try:
                        await self._refresh_on(source, self._anchor)
                    except ImapUnavailable as exc:
                        if self._anchor is None and not isinstance(exc, ImapConnectionLost):
                            raise
                        self._lost_anchor(exc)
                        await self._refresh_on(source, None)
            self._refreshes += 1
            complete = not self._fills and not self._grace.holding
        finally:
            self._freshness.refresh_ended(complete=complete)
        await self._changed()

    async def _settled_unlocked(self, source: RefreshSource) -> bool:
        """With instances sharing the cache, a run that has a settled listing lists first
        without the sync lock (Rule 7): whether it found that listing, and so is done."""
        if not self._cluster.shared or self._settled is None:
            return False
        try:
            return await self._refresh_on(source, self._anchor, settled_only=True)
        except ImapUnavailable as exc:
            if self._anchor is None and not isinstance(exc, ImapConnectionLost):
                raise
            self._lost_anchor(exc)
            return False

    def _lost_anchor(self, exc: ImapUnavailable) -> None:
        log.info("account %s: refresh connection lost (%s); once more", self.account_id, exc)
        self._anchor = self._anchor_keeper = None

    async def _refresh_on(
        self, source: RefreshSource, anchor: str | None, *, settled_only: bool = False
    ) -> bool:
        """One run on a connection; ``settled_only``: stop (False) unless the listing is
        the settled one, before reading or writing the cache."""
        async with source.refresh_reads(prefer=anchor) as reads:
            anchor = await self._first_anchor(reads, anchor)
            anchored = anchor is not None and reads.kept_open == anchor and reads.profile.anchor
            if reads.kept_open is not None and not anchored:
                # servers answer STATUS of the selected mailbox from the session's own,
                # possibly stale, view (RFC 3501 §6.3.10 advises against it); with the
                # anchor selected, the NOOP in front of the LIST makes that view current
                await reads.keep_open(None)
            writes = self._writes
            self._freshness.listed()  # from here on, a caller may not join this run
            entries, statuses = await reads.list_with_status(sync_selected=anchored)
            loop = asyncio.get_running_loop()
            settled = self._still_settled(writes)
            if settled is not None:
                cached = settled.cached  # the rows are what a read would give (Rule 6)
            else:
                cached = await self._store.read(self._snapshot, account=self.account_id)
            wanted, fixed = None, set[str]()
            if reads.profile.labels:
                wanted, fixed = is_synced_entry, system_folders(entries)
            listed = await _describe(reads, entries, statuses, cached.rows, wanted, fixed)
            delimiter = next((e.delimiter for e in entries if e.delimiter), None)
            if settled is not None and settled.matches(listed, delimiter) and self._quiet():
                await self._settle(reads, cached.rows)
                return True
            if settled_only:  # (a settled listing gone stale while listing was read)
                return False
            if settled is not None:
                self._settled = None
                cached = await self._store.read(self._snapshot, account=self.account_id)
                if cached.rows != settled.cached.rows:  # source ids come from the rows
                    listed = await _describe(reads, entries, statuses, cached.rows, wanted, fixed)
            if cached.unchanged(listed, delimiter):
                # the usual refresh: nothing to record, so the writer (one for every
                # account) is not asked at all
                synced = await self._sync_emails(source, reads, cached)
                if not synced and self._quiet() and self._writes == writes:
                    until = loop.time() + SETTLED_FOR
                    self._settled = _Settled(listed, delimiter, cached, writes, until)
                return True

            def write(tx: Tx) -> tuple[int | None, _Cached]:
                rows = q.live_mailboxes(tx, self.account_id)
                change = mbx.plan(
                    listed,
                    rows,
                    delimiter=delimiter,
                    account_id=self.account_id,
                    prefix=self.prefix,
                )
                q.set_delimiter(tx, self.account_id, delimiter)
                seq = mbx.apply(tx, self.account_id, change)
                emails.drop_dead_mailboxes(tx, self.account_id)
                return seq, self._snapshot(tx)  # what the email sync starts from

            seq, cached = await self._store.run(write, account=self.account_id)
            if seq is not None:
                log.info("account %s: mailboxes changed (seq %d)", self.account_id, seq)
            await self._sync_emails(source, reads, cached)
            return True

    async def _first_anchor(self, reads: RefreshReads, anchor: str | None) -> str | None:
        """With no anchor yet (Rule 5), INBOX examined before the listing, whose STATUS of it
        then costs nothing: Dovecot would open it for the STATUS and once more for its
        first sync (seconds each at a million messages)."""
        if anchor is not None or not reads.profile.anchor or self.prefix:
            return anchor
        await reads.keep_open(FIRST_ANCHOR)
        return FIRST_ANCHOR

    def _still_settled(self, writes: int) -> _Settled | None:
        """The settled listing, unless a write came or it is too old (Rule 6)."""
        settled = self._settled
        late = settled is not None and asyncio.get_running_loop().time() > settled.until
        if settled is not None and (settled.writes != writes or late):
            settled = self._settled = None
        return settled

    def _quiet(self) -> bool:
        """No suspect UID, first sync or Gmail grace: a listing may settle (Rule 6)."""
        return not self._suspects and not self._fills and not self._grace.holding

    def _snapshot(self, tx: Tx) -> _Cached:
        account = q.account(tx, self.account_id)
        return _Cached(
            self.account_id,
            q.live_mailboxes(tx, self.account_id),
            em.synced_cursors(tx, self.account_id),
            account.delimiter if account is not None else None,
            bool(em.dead_mailboxes_with_locations(tx, self.account_id)),
            self.prefix,
        )

    async def _changed(self) -> None:
        if self._on_change is not None:
            await self._on_change()

    def suspect(self, mailbox_id: str, uids: Iterable[int]) -> None:
        """UIDs a write could not prove there (docs/design.md, "Writes"): the next refresh
        asks the server whether they still exist, even if the mailbox's cursor has not
        moved, so an expunge the cursors did not show is not kept in the cache for good."""
        self._wrote()
        self._suspects.setdefault(mailbox_id, set()).update(uids)

    async def _sync_emails(
        self, source: RefreshSource, reads: RefreshReads, cached: _Cached
    ) -> bool:
        """Sync every mailbox whose cursor moved (one SELECT each; none when idle); whether
        there was any."""
        async with contextlib.AsyncExitStack() as stack:
            return await self._sync_mailboxes(source, reads, cached, stack)

    async def _sync_mailboxes(
        self,
        source: RefreshSource,
        reads: RefreshReads,
        cached: _Cached,
        stack: contextlib.AsyncExitStack,
    ) -> bool:
        synced_any = False
        rows, cursors = cached.rows, cached.cursors
        labels = reads.profile.labels
        anchor = _choose_anchor(rows) if reads.profile.anchor else None
        # the anchor last: a message moved out of it is then found in its new mailbox
        # before it leaves the anchor (an Email updated, not destroyed and created again).
        # The connection that keeps the anchor open leaves it selected (Rule 8): the other
        # mailboxes go to a spare connection; without one, the anchor is opened again after
        # them
        keeps = anchor is not None and reads.kept_open == anchor
        others: RefreshReads | None = None
        for row in sorted(rows, key=lambda row: row.imap_name == anchor):
            if row.uidvalidity is None or row.id in self._fills:
                continue  # \Noselect, or a first sync still filling in the background
            if labels and not is_synced(row):
                continue  # a label: its messages come with All Mail's (Rule 4)
            now = (row.uidvalidity, row.uidnext, row.highestmodseq, row.messages)
            synced = cursors.get(row.id)
            # without CONDSTORE no cursor moves on a flag change: those mailboxes are
            # re-read on every refresh (the documented cost of such servers)
            same = synced is not None and tuple(synced) == now and row.highestmodseq is not None
            due = labels and self._grace.take_due(row.id)  # a held copy to check again
            suspects = self._suspects.pop(row.id, set())
            if same and not due and not suspects:
                continue
            synced_any = True
            if not await self._cluster.try_fill(self.account_id, row.id):
                # another instance is filling it in (Rule 7); what it wrote is in the cache
                if suspects:
                    self._suspects.setdefault(row.id, set()).update(suspects)
                continue
            job = emails.MailboxSync(
                self._store,
                self.account_id,
                row,
                emails.Cursor(*synced) if synced else None,
                hook=LabelHook(self._grace, shared=self._cluster.shared) if labels else None,
                suspects=suspects,
            )
            on = reads
            if keeps and anchor is not None and row.imap_name != anchor:
                if others is None:
                    others = await stack.enter_async_context(source.spare_reads(avoid=anchor))
                    if others is not None and others.kept_open is not None:
                        # a view not brought up to date since: not to be read from
                        await others.keep_open(None)
                    others = others or reads  # no spare connection: the anchor is reopened
                on = others
            try:
                rest = await job.run(on.sync_reads(records.HEADER_FIELDS))
            except BaseException:
                await self._cluster.end_fill(self.account_id, row.id)
                raise
            if rest:
                self._start_fill(source, job, rest)  # the fill lock is its until it ends
            else:
                await self._cluster.end_fill(self.account_id, row.id)
        await self._settle(reads, rows)
        return synced_any

    async def _settle(self, reads: RefreshReads, rows: Sequence[q.MailboxRow]) -> None:
        """Leave the connection ready for the next refresh's LIST-STATUS: with the anchor
        selected when no other connection keeps it (Rule 5), else with nothing selected."""
        anchor = _choose_anchor(rows) if reads.profile.anchor else None
        keeper = self._anchor_keeper
        kept_elsewhere = (
            keeper is not None
            and keeper != reads
            and not keeper.broken
            and keeper.kept_open == anchor
        )
        if anchor is None or kept_elsewhere:
            await reads.keep_open(None)
            self._anchor = anchor if kept_elsewhere else None
            return
        await reads.keep_open(anchor)
        self._anchor, self._anchor_keeper = anchor, reads

    def _start_fill(self, source: RefreshSource, job: emails.MailboxSync, uids: UidSet) -> None:
        refresh = self._task

        async def fill() -> None:
            # the refresh that found the mailbox finishes its own IMAP work first: the
            # fill's connection, FETCH and parsing workers would make it wait for a core
            if refresh is not None:
                await asyncio.wait({refresh})
            try:
                # not on the connection that keeps the anchor (Rule 5): a refresh during
                # the fill would LIST-STATUS from one without it, and Dovecot open it again
                async with source.refresh_reads(avoid=self._anchor) as reads:
                    await job.fill(reads.sync_reads(records.HEADER_FIELDS), uids, self._changed)
            except Exception:
                log.exception("background sync of %s failed", job.mailbox.imap_name)
            finally:
                self._fills.pop(job.mailbox.id, None)
                self._filling.pop(job.mailbox.id, None)
                with contextlib.suppress(ProxyError):
                    await self._cluster.end_fill(self.account_id, job.mailbox.id)

        self._filling[job.mailbox.id] = job
        self._fills[job.mailbox.id] = asyncio.get_running_loop().create_task(fill())

    def first_sync_progress(self) -> tuple[int, int] | None:
        """Messages synced and to sync by the first syncs filling in behind requests, or
        None when none is (the operator's progress: metrics, the command line)."""
        jobs = list(self._filling.values())
        if not jobs:
            return None
        return sum(j.fill_done for j in jobs), sum(j.fill_total for j in jobs)

    async def wait_filled(self) -> None:
        """Wait until no first sync is still filling in (tests, benchmarks)."""
        while self._fills:
            await asyncio.gather(*self._fills.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the refresh in flight and the first syncs filling in (before the cache
        closes: a run left going would fail on a closed cache)."""
        tasks = [*self._fills.values(), *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _choose_anchor(rows: Sequence[q.MailboxRow]) -> str | None:
    """INBOX, unless another mailbox is far bigger (Rule 5).

    INBOX cannot be deleted, and a mailbox held open while another client deletes and
    recreates it makes Dovecot's Maildir index complain ("duplicate transaction log
    sequence") to that client as well; so another mailbox is kept open only where its
    STATUS cost is what a request would otherwise pay: ten times INBOX's size and at
    least ``ANCHOR_MIN`` messages.
    """
    selectable = [row for row in rows if row.uidvalidity is not None]
    inbox = next((row for row in selectable if row.role == "inbox"), None)
    biggest = max(selectable, key=lambda row: row.messages or 0, default=None)
    if biggest is None:
        return None
    if inbox is None:
        return biggest.imap_name
    big = biggest.messages or 0
    if big >= ANCHOR_MIN and big >= 10 * (inbox.messages or 0):
        return biggest.imap_name
    return inbox.imap_name


async def _describe(
    reads: RefreshReads,
    entries: Sequence[ListEntry],
    statuses: Sequence[MailboxStatus],
    known: Sequence[q.MailboxRow],
    wanted: Callable[[ListEntry], bool] | None = None,
    fixed: Collection[str] = (),
) -> list[mbx.Listed]:
    """Pair LIST entries with STATUS, source ids and rights, asking only what is missing.

    ``wanted``: the mailboxes to STATUS at all (Gmail mode: All Mail, Trash, Spam); the
    others are described without STATUS (no cursor, never synced).  ``fixed``: the names
    of system folders the server will not rename or delete (Gmail mode).
    """
    by_name = {s.name: s for s in statuses}
    known_by_name = {row.imap_name: row for row in known}
    out: list[mbx.Listed] = []
    for entry in map(_unmarked, entries):
        if entry.has("\\NonExistent"):
            continue  # listed only because it is subscribed (LIST-EXTENDED)
        if wanted is not None and not wanted(entry):
            rights = await reads.rights(entry.name)
            out.append(mbx.Listed(entry, None, None, rights, entry.name in fixed))
            continue
        selectable = not entry.has("\\Noselect")
        status = by_name.get(entry.name)
        if status is None and selectable:
            status = await reads.status(entry.name)
            if status is None:
                # Listed but gone: Dovecot's list index can trail a DELETE made by another
                # session for a moment; LIST-STATUS then omits its STATUS line.
                continue
        old = known_by_name.get(entry.name)
        source_id = await _source_id(reads, entry.name, status, old, selectable)
        rights = await reads.rights(entry.name)
        out.append(mbx.Listed(entry, status, source_id, rights, entry.name in fixed))
    return out


def _unmarked(entry: ListEntry) -> ListEntry:
    """``entry`` without \\Marked or \\UnMarked (Rule 6: a settled listing must not be
    lost to another session opening a mailbox)."""
    if not any(attribute.lower() in _MARKS for attribute in entry.attributes):
        return entry
    kept = frozenset(a for a in entry.attributes if a.lower() not in _MARKS)
    return replace(entry, attributes=kept)


async def _source_id(
    reads: RefreshReads,
    name: str,
    status: MailboxStatus | None,
    old: q.MailboxRow | None,
    selectable: bool,
) -> str | None:
    """The upstream's stable mailbox id (MAILBOXID, Dovecot X-GUID), reusing the cache."""
    if status is not None and status.mailboxid:
        return status.mailboxid
    if status is not None and status.x_guid and _XGUID_RE.match(status.x_guid):
        return "M" + status.x_guid.lower()
    same = old is not None and status is not None and old.uidvalidity == status.uidvalidity
    if same and old is not None and old.source_id:
        return old.source_id
    if not selectable:
        return None
    item = reads.profile.mailbox_id_item
    if not item:
        return None
    got = await reads.status(name, item)
    if got is None:
        return None
    if got.mailboxid:
        return got.mailboxid
    if got.x_guid and _XGUID_RE.match(got.x_guid):
        return "M" + got.x_guid.lower()
    return None
