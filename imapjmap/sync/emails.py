"""Email reconciliation: one mailbox's messages against its cached locations.

Theory of operation
-------------------
Each mailbox row carries two cursors: what the last LIST-STATUS said (uidvalidity, uidnext,
highestmodseq, messages) and what its email rows reflect (``synced_*``).  Equal cursors mean
nothing to do.  Otherwise the mailbox is selected and only the difference is fetched, by one
of the :class:`Path` s that :func:`choose_path` picks:

* QRESYNC: ``SELECT box (QRESYNC (uidvalidity modseq))`` returns ``VANISHED (EARLIER)`` and
  the changed flags in the same round trip; when the connection already has the mailbox
  selected (the refresh's anchor, see ``sync.engine`` Rule 5), ``UID FETCH 1:* (FLAGS)
  (CHANGEDSINCE modseq VANISHED)`` says the same without reopening it (RFC 7162 §3.2.6),
  which on Dovecot saves the 100+ ms a 100,000-message Maildir takes to open;
* CONDSTORE: ``UID FETCH 1:n (FLAGS) (CHANGEDSINCE modseq)`` plus a ``UID SEARCH`` of the
  known range to see expunges;
* neither: the flags of every known UID are fetched again and compared;
* then new messages: ``UID FETCH uidnext:*`` with the list items.

A UIDVALIDITY change drops every location of the mailbox and fetches it again; Emails are
re-attached by id (X-GUID, EMAILID...), so only what really changed shows in /changes.

The work is cut in three, as the mailbox sync's is (:mod:`imapjmap.sync.mailboxes`):

* the plan, pure: :func:`choose_path` says how to ask, :func:`plan_changes` turns what the
  server reported (a :class:`Report`) and what the cache holds into a :class:`Delta`;
  :func:`split_first`, :func:`plan_reattach`, :func:`plan_first` and :func:`plan_batch` do
  the same for a first sync or a reset;
* :func:`apply` writes one :class:`Delta` in the caller's transaction;
* :class:`MailboxSync` runs it: between the pure steps it awaits the server through
  :class:`~imapjmap.upstream.sync_reads.SyncReads` (a refresh's connection lends them:
  :meth:`~imapjmap.upstream.refresh_reads.RefreshReads.sync_reads`) and the cache through
  the store.

Rule 1: locations, Email rows, Threads, counts and the synced cursor of one batch are
        written in one transaction; the sequence number is taken only if a JMAP-visible
        change happened.
Rule 2: a location flagged ``\\Deleted`` is kept but hidden (EML-KW-01); an Email with no
        visible location is destroyed for JMAP, and comes back under the same id if one
        reappears.
Rule 3: the first sync of a big mailbox goes newest first in batches, each committed on its
        own, so the newest mail is served while the rest fills in.
Rule 4: a server-specific :class:`ApplyHook` (Gmail mode's labels, :mod:`imapjmap.sync.gmail`)
        runs first in each batch's transaction, so what it derives lands with the batch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from imapjmap.errors import ImapProtocolViolation
from imapjmap.imap.models import FetchRecord, UidSet
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import records
from imapjmap.sync.mailboxes import MAILBOX_TYPE
from imapjmap.sync.parsing import NewMessage, Parser, prepare
from imapjmap.upstream.sync_reads import Changes, SyncReads

log = logging.getLogger(__name__)

EMAIL_DELIVERY_TYPE: Final = "EmailDelivery"  # RFC 8621 §1.5, push only
BATCH: Final = 1000  # messages per FETCH (and per transaction, but see WRITE_BATCHES)
# a fill's batches parsed while a transaction ran are written together, up to this many: each
# transaction rewrites the index pages its random keys (Email, Thread and Message-IDs) land
# on, most of every such index once a mailbox has 100,000 messages, so fewer transactions
# write less
WRITE_BATCHES: Final = 5
FIRST_BATCH_WAIT: Final = 1  # batches a request waits for before the rest goes background
# counts follow the changed threads up to this many of them, else the mailboxes are recounted
COUNT_THREADS: Final = 500
# Emails re-derived per read after their locations changed (two statements a chunk)
RECOMPUTE_CHUNK: Final = 500
# expunges + flag changes: the counts follow their threads up to this many, and their
# locations are read this many at a time
FEW_UIDS: Final = 2000
PROBE_BATCH: Final = BATCH * 5  # messages per id-only FETCH after a UIDVALIDITY change


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int | None
    uidnext: int | None
    modseq: int | None
    messages: int | None


class ApplyHook(Protocol):
    """Server-specific work at the start of a batch's transaction (Rule 4).

    It may take UIDs out of ``delta.gone`` (keep those locations for now) and write rows
    of its own; it returns the email ids to re-derive and the mailbox ids to recount.
    """

    def __call__(
        self, tx: Tx, account_id: str, mailbox_id: str, delta: Delta
    ) -> tuple[set[str], set[str]]: ...


@dataclass(slots=True)
class Delta:
    """The plan of one transaction: what one round of fetching found, to be written."""

    new: list[FetchRecord] = field(default_factory=list)
    flags: dict[int, tuple[tuple[str, ...], int | None]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)
    reset: bool = False  # UIDVALIDITY changed: forget every location first
    cursor: Cursor | None = None  # set on the last batch only
    counts: bool = True  # recount the mailbox (skipped by the middle batches of a fill)
    first: bool = False  # a batch of a first sync or reset: counts are recounted in full
    # mailboxes left uncounted by the middle batches of a fill, counted by its last one
    uncounted: set[str] = field(default_factory=set)
    delivery: bool = False  # new mail arrived in an inbox: the EmailDelivery push type
    remap: dict[int, tuple[str, tuple[str, ...], int | None]] = field(default_factory=dict)
    labels: dict[int, tuple[str, ...]] = field(default_factory=dict)  # Gmail: uid → X-GM-LABELS
    hook: ApplyHook | None = None
    prepared: list[NewMessage] | None = None  # prepare(new), when done before the transaction


# -- the plan ----------------------------------------------------------------------------------


class Path(enum.Enum):
    """How the changes of a mailbox since its synced cursor are asked for."""

    FULL = "full"  # nothing synced, or another UIDVALIDITY: every message is read again
    QRESYNC_SELECTED = "qresync-selected"  # CHANGEDSINCE ... VANISHED on the open mailbox
    QRESYNC = "qresync"  # SELECT (QRESYNC ...)
    CHANGEDSINCE = "changedsince"  # CONDSTORE: changed flags, and a SEARCH for expunges
    REFETCH = "refetch"  # every flag again, and a SEARCH for expunges


def choose_path(
    synced: Cursor | None,
    status: Cursor,
    name: str,
    *,
    qresync: bool,
    condstore: bool,
    selected: tuple[str, int | None] | None,
) -> Path:
    """The path for a mailbox whose STATUS said ``status`` and whose email rows reflect
    ``synced``, on a connection with these extensions enabled and ``selected`` open."""
    if synced is None or synced.uidvalidity != status.uidvalidity:
        return Path.FULL
    if synced.modseq and qresync:
        if selected == (name, status.uidvalidity):
            return Path.QRESYNC_SELECTED
        return Path.QRESYNC
    if synced.modseq and condstore:
        return Path.CHANGEDSINCE
    return Path.REFETCH


def starts_over(path: Path, synced: Cursor | None, now: Cursor) -> bool:
    """Whether the mailbox is read as new: nothing synced, or a UIDVALIDITY other than the
    synced one at the STATUS or at the SELECT (``now``)."""
    return path is Path.FULL or synced is None or synced.uidvalidity != now.uidvalidity


def known_top(synced: Cursor) -> int:
    """The highest UID the synced cursor can know of (0: none)."""
    return (synced.uidnext or 1) - 1


def new_from(synced: Cursor, now: Cursor) -> int | None:
    """The lowest UID a message new since ``synced`` can have; None when UIDNEXT says none
    arrived (a server without UIDNEXT is asked)."""
    start = max(synced.uidnext or 1, 1)
    if now.uidnext is None or now.uidnext > start:
        return start
    return None


@dataclass(slots=True)
class Report:
    """What the server said about a mailbox synced before, since its synced cursor."""

    cursor: Cursor  # the mailbox now: the synced cursor once this is written
    changes: Changes = field(default_factory=Changes)  # VANISHED, changed flags
    present: Collection[int] | None = None  # searched paths: the known range's UIDs now
    suspects_present: Collection[int] = ()  # the suspects the server still holds
    new: list[FetchRecord] = field(default_factory=list)  # new messages, list items


def plan_changes(
    report: Report,
    *,
    known: Collection[int] = (),
    suspects: Collection[int] = (),
    inbox: bool = False,
    hook: ApplyHook | None = None,
) -> Delta:
    """The plan for a mailbox synced before: ``known`` are its UIDs in the cache (needed
    when ``report.present`` was searched), ``suspects`` the UIDs a write found missing."""
    delta = Delta(
        new=report.new,
        cursor=report.cursor,
        delivery=bool(report.new) and inbox,
        hook=hook,
    )
    for vanished in report.changes.vanished:
        delta.gone.update(vanished)
    changed = report.changes.changed
    if changed:
        delta.flags.update(_flag_records(changed))
        delta.labels.update(_label_records(changed))
    if report.present is not None:
        present = report.present
        delta.gone.update(uid for uid in known if uid not in present)
    if suspects:
        there = report.suspects_present
        delta.gone.update(uid for uid in suspects if uid not in there)
    return delta


def _flag_records(records_: Sequence[FetchRecord]) -> dict[int, tuple[tuple[str, ...], int | None]]:
    return {
        r.uid: (r.flags or (), r.modseq)
        for r in records_
        if r.uid is not None and r.flags is not None
    }


def _label_records(records_: Sequence[FetchRecord]) -> dict[int, tuple[str, ...]]:
    return {
        r.uid: r.x_gm_labels for r in records_ if r.uid is not None and r.x_gm_labels is not None
    }


def split_first(uids: UidSet) -> tuple[list[int], UidSet]:
    """A first sync's newest batch, which the request waits for, and the UIDs filled in
    after it (Rule 3)."""
    first = next(uids.newest_first(BATCH * FIRST_BATCH_WAIT), [])
    rest = uids.below(first[-1]) if first else UidSet()
    return first, rest


def plan_reattach(
    probed: Mapping[int, FetchRecord], ids: Mapping[int, str], known: Collection[str]
) -> Delta:
    """A reset's plan before any message is fetched in full: every location of the mailbox
    goes, and the probed messages whose Email ``ids`` the cache ``known`` come back at once."""
    delta = Delta(reset=True, first=True)
    for uid, email_id in ids.items():
        if email_id in known:
            record = probed[uid]
            delta.remap[uid] = (email_id, tuple(record.flags or ()), record.modseq)
            if record.x_gm_labels is not None:
                delta.labels[uid] = record.x_gm_labels
    return delta


def plan_first(
    base: Delta,
    new: list[FetchRecord],
    prepared: list[NewMessage],
    *,
    rest: UidSet,
    cursor: Cursor,
    hook: ApplyHook | None = None,
) -> Delta:
    """The first batch of a first sync (``base`` empty) or of a reset (``base`` from
    :func:`plan_reattach`): the cursor moves only if nothing is left to fill in."""
    return dataclasses.replace(
        base,
        reset=True,
        first=True,
        new=new,
        prepared=prepared,
        cursor=None if rest else cursor,
        hook=hook,
    )


def plan_batch(
    new: list[FetchRecord],
    prepared: list[NewMessage],
    *,
    last: bool,
    cursor: Cursor | None,
    uncounted: set[str],
    hook: ApplyHook | None = None,
) -> Delta:
    """A batch of a fill: the middle ones leave the counts (their mailboxes gather in
    ``uncounted``), the last one counts them and moves the cursor."""
    return Delta(
        new=new,
        prepared=prepared,
        first=True,
        counts=last,
        uncounted=uncounted,
        cursor=cursor if last else None,
        hook=hook,
    )


# -- the run -----------------------------------------------------------------------------------


def _finished(task: asyncio.Future[Any]) -> bool:
    """Done without an error: a failed batch is awaited on its own, so it raises in turn."""
    return task.done() and not task.cancelled() and task.exception() is None


def _status(row: q.MailboxRow) -> Cursor:
    return Cursor(row.uidvalidity, row.uidnext, row.highestmodseq, row.messages)


class MailboxSync:
    """Syncs one mailbox of one account (created per refresh)."""

    def __init__(
        self,
        store: Store,
        account_id: str,
        mailbox: q.MailboxRow,
        synced: Cursor | None,
        hook: ApplyHook | None = None,
        suspects: Collection[int] = (),
    ) -> None:
        self.store = store
        self.account_id = account_id
        self.mailbox = mailbox
        self.synced = synced
        self.hook = hook
        self.suspects = suspects  # UIDs to look up by UID (AccountSync.suspect)

    async def run(self, reads: SyncReads) -> UidSet:
        """Bring the mailbox up to date; returns UIDs still to fill in (first sync)."""
        synced, status, name = self.synced, _status(self.mailbox), self.mailbox.imap_name
        path = choose_path(
            synced,
            status,
            name,
            qresync=reads.qresync,
            condstore=reads.condstore,
            selected=reads.selected,
        )
        if path is Path.QRESYNC_SELECTED and synced is not None and synced.modseq:
            # the cursor is the STATUS this refresh read: the refresh answered it from this
            # session's view, made current by the NOOP behind its LIST, and the FETCH sees
            # that same view, so what it returns covers at least the cursor
            now, changes = status, await reads.changes_in_selected(synced.modseq)
        elif path is Path.FULL and reads.selected == (name, status.uidvalidity) and status.uidnext:
            # the mailbox the refresh keeps open (sync.engine, Rule 5): its STATUS was read
            # from this view just now, and opening it again costs Dovecot seconds at a
            # million messages
            now, changes = status, Changes()
        else:
            since = None
            if path is Path.QRESYNC and synced is not None and synced.modseq:
                since = (synced.uidvalidity or 0, synced.modseq)
            opened = await reads.open(name, since)
            now = Cursor(opened.uidvalidity, opened.uidnext, opened.highestmodseq, opened.exists)
            changes = opened.changes
        if starts_over(path, synced, now) or synced is None:
            return await self._full(reads, now)
        report = Report(now, changes)
        known: Collection[int] = ()
        top = known_top(synced)
        if path in (Path.CHANGEDSINCE, Path.REFETCH) and top >= 1:
            since_modseq = synced.modseq if path is Path.CHANGEDSINCE else None
            changed = await reads.changed_flags(top, since_modseq)
            report.changes = Changes(changes.vanished, changed)
            known = await self.store.run(
                lambda tx: em.locations_of_mailbox(tx, self.account_id, self.mailbox.id),
                account=self.account_id,
            )
            report.present = await reads.uids(1, top)
        if self.suspects:
            report.suspects_present = await reads.which(self.suspects)
        start = new_from(synced, now)
        if start is not None:
            report.new = await reads.fetch_new(list(await reads.uids(start)))
        delta = plan_changes(
            report,
            known=known,
            suspects=self.suspects,
            inbox=self.mailbox.role == "inbox",
            hook=self.hook,
        )
        await self.store.run(
            lambda tx: apply(tx, self.account_id, self.mailbox.id, delta), account=self.account_id
        )
        return UidSet()

    async def _full(self, reads: SyncReads, cursor: Cursor) -> UidSet:
        """First sync or UIDVALIDITY reset: newest first, in batches (Rule 3).

        After a reset, every message is first probed for its id only (cheap), and messages
        whose Email is already known are re-attached at once; only the others are fetched
        in full — so a reset shows in /changes only as what really changed.
        """
        started = time.monotonic()
        base = Delta()
        if self.synced is None and cursor.messages:
            # the newest by message number: listing every UID costs Dovecot seconds at a
            # million messages, and the fill searches those below on its own connection
            uids = await reads.newest(BATCH * FIRST_BATCH_WAIT, cursor.messages)
            if uids and cursor.messages > len(uids):
                self.search_below = uids.ranges[0][0]
        else:
            uids = await reads.uids()
        if self.synced is not None:
            base = await self._reattach(reads, uids)
            uids = UidSet.of(u for u in uids if u not in base.remap)
        first, rest = split_first(uids)
        if self.search_below > 1:
            rest = UidSet(((1, self.search_below - 1), *rest.ranges))  # searched by fill()
        new = await reads.fetch_new(first)
        prepared = await asyncio.to_thread(prepare, new, self.account_id)
        delta = plan_first(base, new, prepared, rest=rest, cursor=cursor, hook=self.hook)
        await self.store.run(
            lambda tx: apply(tx, self.account_id, self.mailbox.id, delta), account=self.account_id
        )
        if rest:
            log.info(
                "mailbox %s: newest %d of %d messages synced in %.1fs; the rest follows",
                self.mailbox.imap_name,
                len(first),
                len(uids),
                time.monotonic() - started,
            )
            self.pending_cursor = cursor
        return rest

    async def _reattach(self, reads: SyncReads, uids: UidSet) -> Delta:
        """Probe every message for its Email id after a UIDVALIDITY change."""
        probed: dict[int, FetchRecord] = {}
        for chunk in uids.newest_first(PROBE_BATCH):
            probed.update((r.uid, r) for r in await reads.fetch_ids(chunk) if r.uid is not None)
        ids = {uid: records.email_id_for(r) for uid, r in probed.items()}
        known = await self.store.run(
            lambda tx: set(em.existing_ids(tx, self.account_id, list(ids.values()))),
            account=self.account_id,
        )
        return plan_reattach(probed, ids, known)

    async def fill(
        self,
        reads: SyncReads,
        uids: UidSet,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """The rest of a first sync, newest first; ``changed`` runs after each transaction
        (the push hub).

        Batches are fetched ahead and parsed in worker processes (:mod:`.parsing`) while the
        current one is written, so the IMAP server, the parsing and the cache work at the
        same time; the FETCH commands themselves go one after the other.  A transaction
        writes every batch parsed by then, up to :data:`WRITE_BATCHES`.
        """
        await reads.open(self.mailbox.imap_name)
        if self.search_below > 1:  # the first batch was found by number (_full)
            found = await reads.uids(1, self.search_below - 1)
            uids = UidSet(found.ranges + tuple(r for r in uids.ranges if r[0] >= self.search_below))
        if not uids:  # expunged meanwhile: the batch that writes the cursor has nothing
            delta = plan_batch([], [], last=True, cursor=self.pending_cursor, uncounted=set())
            await self.store.run(
                functools.partial(
                    apply, account_id=self.account_id, mailbox_id=self.mailbox.id, delta=delta
                ),
                account=self.account_id,
            )
            return
        total = len(uids)
        self.fill_total, self.fill_done = total, 0
        # made as they are fetched: a million UIDs are never all in a list at once
        batches = uids.newest_first(BATCH)
        uncounted: set[str] = set()
        parser = Parser(total)
        parser.warm_up()
        one_at_a_time = asyncio.Lock()

        async def fetch(batch: Sequence[int]) -> tuple[list[FetchRecord], list[NewMessage]]:
            async with one_at_a_time:
                raw = await reads.fetch_unparsed(batch)
            try:
                # only a hook reads the records themselves (sending them back costs)
                return await parser.parse(raw, batch, self.account_id, self.hook is not None)
            except ImapProtocolViolation:
                reads.unparsable()
                raise

        # the parsers and the FETCH run ahead of the writer by up to WRITE_BATCHES batches:
        # what piled up while a transaction ran is written in the next one
        ahead = collections.deque(
            asyncio.ensure_future(fetch(b))
            for b in itertools.islice(batches, parser.workers + WRITE_BATCHES)
        )
        try:
            index = 0
            while ahead:
                records_, prepared = await ahead.popleft()
                taken = 1
                while taken < WRITE_BATCHES and ahead and _finished(ahead[0]):
                    more_records, more = ahead.popleft().result()
                    records_ += more_records
                    prepared += more
                    taken += 1
                for batch in itertools.islice(batches, taken):
                    ahead.append(asyncio.ensure_future(fetch(batch)))
                index += taken
                last = not ahead
                delta = plan_batch(
                    records_,
                    prepared,
                    last=last,
                    cursor=self.pending_cursor,
                    uncounted=uncounted,
                    hook=self.hook,
                )
                await self.store.run(
                    functools.partial(
                        apply, account_id=self.account_id, mailbox_id=self.mailbox.id, delta=delta
                    ),
                    account=self.account_id,
                )
                if changed is not None:
                    await changed()
                done = min(index * BATCH, total)
                if done // (10 * BATCH) > self.fill_done // (10 * BATCH) or last:
                    log.info(
                        "mailbox %s: %d of %d remaining messages synced",
                        self.mailbox.imap_name,
                        done,
                        total,
                    )
                self.fill_done = done
        finally:
            for task in ahead:
                task.cancel()
            # a cancelled FETCH leaves the session broken: the pool replaces it
            await asyncio.gather(*ahead, return_exceptions=True)

    pending_cursor: Cursor | None = None
    # a first sync whose newest batch was found by message number: fill() searches the
    # UIDs below this one (0: it was given every UID)
    search_below: int = 0
    # a background first sync's progress, in messages (read by the metrics)
    fill_total: int = 0
    fill_done: int = 0


# -- the transaction ---------------------------------------------------------------------------


class _Seq:
    """Takes the account's next sequence number at the first visible change (Rule 1), and
    records each JMAP type that the transaction changes once."""

    def __init__(self, tx: Tx, account_id: str) -> None:
        self.tx = tx
        self.account_id = account_id
        self.value: int | None = None
        self._types: set[str] = set()

    def take(self, *types: str) -> int:
        fresh = [t for t in types if t not in self._types]
        if fresh or self.value is None:
            self.value = q.next_seq(self.tx, self.account_id, fresh)
            self._types.update(fresh)
        return self.value


def apply(tx: Tx, account_id: str, mailbox_id: str, delta: Delta) -> None:
    seq = _Seq(tx, account_id)
    threads: set[str] = set()  # threads whose membership may have shrunk or revived
    grown: set[str] = set()  # threads that only gained emails
    new = delta.prepared if delta.prepared is not None else prepare(delta.new, account_id)
    counts = _Counts(tx, account_id, full=delta.reset or delta.first or not delta.counts)
    _before(tx, account_id, mailbox_id, delta, new, counts)
    hooked, recount = (
        delta.hook(tx, account_id, mailbox_id, delta) if delta.hook else (set(), set())
    )
    touched = _apply_locations(tx, account_id, mailbox_id, delta) | hooked
    counts.covers(touched)  # only threads read before were written to so far
    added = bool(new)
    if new:
        # another copy of a known Email: re-derive it
        touched |= _NewEmails(tx, account_id, seq, grown, counts).add(mailbox_id, new)
    _recompute(tx, account_id, touched, seq, threads)
    for thread_id in threads:
        em.touch_thread(tx, account_id, thread_id, seq.take(em.THREAD_TYPE))
    if grown - threads:
        em.grow_threads(tx, account_id, grown - threads, seq.take(em.THREAD_TYPE))
    if delta.delivery:
        seq.take(EMAIL_DELIVERY_TYPE)
    if not delta.counts:
        if touched or recount:
            delta.uncounted |= recount | em.mailboxes_of(tx, account_id, touched)
    elif touched or added or delta.reset or delta.uncounted:
        counts.covers(touched)
        counts.finish(
            lambda: (
                {mailbox_id} | recount | delta.uncounted | em.mailboxes_of(tx, account_id, touched)
            ),
            seq,
        )
    if delta.cursor is not None:
        c = delta.cursor
        em.set_synced_cursor(
            tx, account_id, mailbox_id, c.uidvalidity, c.uidnext, c.modseq, c.messages
        )


def _before(
    tx: Tx,
    account_id: str,
    mailbox_id: str,
    delta: Delta,
    new: Sequence[NewMessage],
    counts: _Counts,
) -> None:
    """What the counts need before anything is written: the threads of the Emails at the
    UIDs that changed, of the Emails the new messages name, and the new messages' own."""
    if counts.full:
        return
    uids = delta.gone | delta.flags.keys() | delta.labels.keys()
    if len(uids) > FEW_UIDS or delta.remap:
        counts.full = True
        return
    ids = {loc.email_id for loc in em.locations_at(tx, account_id, mailbox_id, uids).values()}
    ids.update(m.email_id for m in new)
    upstream = {m.upstream_thread for m in new if m.upstream_thread}
    counts.snapshot(upstream | set(em.thread_ids_of(tx, account_id, ids).values()))


def _apply_locations(tx: Tx, account_id: str, mailbox_id: str, delta: Delta) -> set[str]:
    """Resets, re-attached copies, expunges and flag changes; the email ids touched."""
    touched: set[str] = set()
    if delta.reset:
        touched.update(em.remove_mailbox_locations(tx, account_id, mailbox_id))
    for uid, (email_id, flags, modseq) in delta.remap.items():
        em.put_location(
            tx, account_id, em.Location(mailbox_id, uid, email_id, modseq, flags, _deleted(flags))
        )
        touched.add(email_id)
    if not delta.gone and not delta.flags:
        return touched  # a batch of new messages only: no need to read what is known
    # read FEW_UIDS locations at a time, never the whole mailbox: another client marking
    # 5,000 of a million messages read must not load the million
    uids = sorted(delta.gone | delta.flags.keys())
    for start in range(0, len(uids), FEW_UIDS):
        chunk = uids[start : start + FEW_UIDS]
        known = em.locations_at(tx, account_id, mailbox_id, chunk)
        for uid in chunk:
            loc = known.get(uid)
            if loc is None:
                continue
            if uid in delta.gone:  # an expunge wins over a flag change of the same UID
                em.remove_location(tx, account_id, mailbox_id, uid)
                touched.add(loc.email_id)
                continue
            flags, modseq = delta.flags[uid]
            if loc.flags == flags and loc.modseq == modseq:
                continue
            em.put_location(
                tx,
                account_id,
                dataclasses.replace(loc, flags=flags, modseq=modseq, deleted=_deleted(flags)),
            )
            touched.add(loc.email_id)
    return touched


def _deleted(flags: Sequence[str]) -> bool:
    return "\\deleted" in map(str.lower, flags)


def _recompute(tx: Tx, account_id: str, email_ids: set[str], seq: _Seq, threads: set[str]) -> None:
    """Re-derive the Emails whose locations changed, reading them in chunks: another
    client's flag change to thousands of messages reads two statements a chunk, not two an
    Email (each a round trip on PostgreSQL).  Re-deriving one Email writes its own row only,
    so what was read for the others stays true."""
    ids = sorted(email_ids)
    for start in range(0, len(ids), RECOMPUTE_CHUNK):  # a chunk's rows in memory at once
        rows, locations = em.emails_and_locations(
            tx, account_id, ids[start : start + RECOMPUTE_CHUNK]
        )
        for email_id, row in rows.items():
            _recompute_one(tx, account_id, row, locations.get(email_id, []), seq, threads)


def _recompute_one(
    tx: Tx,
    account_id: str,
    row: em.EmailRow,
    where: list[em.Location],
    seq: _Seq,
    threads: set[str],
) -> None:
    email_id = row.id
    view = em.email_view(where)
    would_change = (row.destroyed_seq is not None) == bool(view[0]) or (
        row.destroyed_seq is None and (view[0] != row.mailbox_ids or view[1] != row.keywords)
    )
    if not would_change:
        return
    value = seq.take(em.EMAIL_TYPE)
    outcome = em.recompute_email(tx, account_id, email_id, value, read=(row, where))
    if outcome in ("destroyed", "revived"):
        threads.add(row.thread_id)


class _NewEmails:
    """Writes one batch of new messages: their Emails, locations and local Threads.

    The statements are per batch, not per message: one query for the ids already known,
    one for the thread_refs of every Message-ID the batch names (kept up to date in
    ``refs`` as the batch threads itself), and one multi-row write each for the Emails,
    the locations and the thread_refs.  The result is the same as handling the messages
    one by one in order: a Message-ID seen earlier in the batch threads a later message,
    and before a thread merge (which updates rows in place) what is pending is written.
    """

    def __init__(
        self, tx: Tx, account_id: str, seq: _Seq, grown: set[str], counts: _Counts | None = None
    ) -> None:
        self.tx = tx
        self.account_id = account_id
        self.seq = seq
        self.grown = grown
        self.counts = counts
        self.rows: list[em.EmailValues] = []  # new Emails not yet written
        self.refs: dict[str, tuple[str, str]] = {}  # Message-ID → (thread, base subject)
        self.members: dict[str, set[str]] = {}  # thread → its Message-IDs in ``refs``
        self.dirty: set[str] = set()  # Message-IDs of ``refs`` not yet written

    def add(self, mailbox_id: str, messages: Sequence[NewMessage]) -> set[str]:
        """Write ``messages``; returns the ids of known Emails that got another copy.

        A new Email is written complete — its one location decides mailboxIds and
        keywords — so the bulk path of a first sync costs no re-derivation; one whose only
        copy is ``\\Deleted`` is written as a tombstone, so it never appears.
        """
        ids = list(dict.fromkeys(m.email_id for m in messages))
        known = set(em.existing_ids(self.tx, self.account_id, ids))
        local = [m for m in messages if m.upstream_thread is None]
        if local:
            wanted = dict.fromkeys(i for m in local for i in _thread_ids(m))
            for message_id, ref in em.thread_refs(self.tx, self.account_id, wanted).items():
                self._set_ref(message_id, *ref)
            self.dirty.clear()
        again: set[str] = set()
        locations: list[em.Location] = []
        here, nowhere = em.mailbox_ids_value({mailbox_id: True}), em.mailbox_ids_value({})
        value: int | None = None  # one transaction, one seq: taken at the first new Email
        for m in messages:
            deleted = _deleted(m.flags)
            locations.append(em.Location(mailbox_id, m.uid, m.email_id, m.modseq, m.flags, deleted))
            if m.email_id in known:
                again.add(m.email_id)
                continue
            known.add(m.email_id)
            if value is None:
                value = self.seq.take(em.EMAIL_TYPE, em.THREAD_TYPE)
            thread_id = m.upstream_thread or self._local_thread(m, value)
            # the parsed row's columns as they are, but for what only the writer knows
            columns = m.columns
            self.rows.append(
                (
                    *columns[: em.THREAD_COLUMN],
                    thread_id,
                    *columns[em.THREAD_COLUMN + 1 : em.FILLED_BY_WRITER],
                    nowhere if deleted else here,
                    value,
                    value,
                    value if deleted else None,
                )
            )
            if not deleted:
                self.grown.add(thread_id)
        self._flush()
        em.put_locations(self.tx, self.account_id, locations)
        return again

    def _flush(self) -> None:
        if self.rows:
            if self.counts is not None:
                self.counts.snapshot({row[em.THREAD_COLUMN] for row in self.rows})
            em.insert_email_values(self.tx, self.rows)
            self.rows.clear()
        if self.dirty:
            em.set_thread_refs(self.tx, self.account_id, ((m, *self.refs[m]) for m in self.dirty))
            self.dirty.clear()

    def _set_ref(self, message_id: str, thread_id: str, base: str) -> None:
        old = self.refs.get(message_id)
        if old == (thread_id, base):
            return  # as stored, or as already pending
        if old is not None and old[0] != thread_id:
            self.members[old[0]].discard(message_id)
        self.refs[message_id] = (thread_id, base)
        self.members.setdefault(thread_id, set()).add(message_id)
        self.dirty.add(message_id)

    def _local_thread(self, message: NewMessage, seq: int) -> str:
        """Threads from Message-ID / In-Reply-To / References, joined only when the base
        subjects agree (as Cyrus does), so a reply to an unrelated list mail starts its own."""
        ids = _thread_ids(message)
        base_subject = message.base_subject
        found = {
            t
            for t, base in (self.refs[i] for i in ids if i in self.refs)
            if not base or not base_subject or base == base_subject
        }
        if not found:
            thread_id = records.new_thread_id(message.email_id)
        else:
            thread_id = min(found)
            others = found - {thread_id}
            if others:
                # merge_threads updates the rows in place: what is pending goes first; it
                # re-counts both sides itself (the merged ones become empty)
                if self.counts is not None:
                    self.counts.snapshot(found)
                self._flush()
                em.merge_threads(self.tx, self.account_id, thread_id, others, seq)
                # emptied for good: growing one at the end would leave a live Thread
                # without Emails (merge_threads has tombstoned those that had a row)
                self.grown -= others
                for other in others:
                    for message_id in self.members.pop(other, set()):
                        self.refs[message_id] = (thread_id, self.refs[message_id][1])
                        self.members.setdefault(thread_id, set()).add(message_id)
        for message_id in ids:
            self._set_ref(message_id, thread_id, base_subject)
        return thread_id


def _thread_ids(message: NewMessage) -> list[str]:
    return [m for m in (message.own_message_id, *message.refs) if m]


class _Counts:
    """Mailbox counts of one transaction, kept up to date from the threads it changes.

    A mailbox's counts are a sum over its threads (:func:`em.thread_counts`), so when the
    change is confined to a set T of threads, new = stored − part_before(T) + part_after(T).
    Each thread's part before is read just before the first write that can change it
    (:meth:`snapshot`); a thread written to without one, too many threads, or a first sync
    or reset (``full``) falls back to recounting the mailboxes (:func:`update_counts`), the
    reference.
    """

    def __init__(self, tx: Tx, account_id: str, *, full: bool) -> None:
        self.tx = tx
        self.account_id = account_id
        self.full = full
        self.before: dict[str, dict[str, em.Counts]] = {}  # thread → mailbox → its part

    def snapshot(self, thread_ids: Iterable[str]) -> None:
        """Read the parts of threads about to change (those not read yet)."""
        if self.full:
            return
        fresh = [t for t in thread_ids if t not in self.before]
        if not fresh:
            return
        if len(self.before) + len(fresh) > COUNT_THREADS:
            self.full = True
            self.before.clear()
            return
        parts = em.thread_counts(self.tx, self.account_id, fresh)
        for thread_id in fresh:
            self.before[thread_id] = parts.get(thread_id, {})

    def covers(self, email_ids: Iterable[str]) -> None:
        """Changed Emails must be in threads read before: else recount in full."""
        if self.full:
            return
        threads = em.thread_ids_of(self.tx, self.account_id, email_ids).values()
        if any(t not in self.before for t in threads):
            self.full = True

    def finish(self, full_mailboxes: Callable[[], set[str]], seq: _Seq) -> None:
        if self.full:
            update_counts(self.tx, self.account_id, full_mailboxes(), seq)
            return
        diff: dict[str, list[int]] = {}
        for sign, parts in (
            (-1, self.before),
            (1, em.thread_counts(self.tx, self.account_id, self.before)),
        ):
            for boxes in parts.values():
                for mailbox_id, part in boxes.items():
                    acc = diff.setdefault(mailbox_id, [0, 0, 0, 0])
                    for i, value in enumerate(part):
                        acc[i] += sign * value
        counts: dict[str, em.Counts] = {}
        for mailbox_id, change in diff.items():
            if not any(change):
                continue
            row = q.mailbox(self.tx, self.account_id, mailbox_id)
            if row is None:
                continue
            total, unread, threads, unread_threads = (
                old + d
                for old, d in zip(
                    (row.total_emails, row.unread_emails, row.total_threads, row.unread_threads),
                    change,
                    strict=True,
                )
            )
            if (
                min(unread, unread_threads) < 0
                or unread > total
                or unread_threads > threads
                or threads > total
            ):
                # stored counts that were not right: the reference instead
                counts.update(em.mailbox_counts(self.tx, self.account_id, [mailbox_id]))
            else:
                counts[mailbox_id] = (total, unread, threads, unread_threads)
        _write_counts(self.tx, self.account_id, counts, seq)


def update_counts(tx: Tx, account_id: str, mailbox_ids: set[str], seq: _Seq) -> None:
    """Mailbox counts from the email cache (MBX-04): \\Deleted excluded, threads counted."""
    counts = em.mailbox_counts(tx, account_id, mailbox_ids)
    _write_counts(tx, account_id, {m: counts.get(m, (0, 0, 0, 0)) for m in mailbox_ids}, seq)


def _write_counts(tx: Tx, account_id: str, counts: dict[str, em.Counts], seq: _Seq) -> None:
    for mailbox_id, (total, unread, threads, unread_threads) in counts.items():
        row = q.mailbox(tx, account_id, mailbox_id)
        if row is None:
            continue
        if (row.total_emails, row.unread_emails, row.total_threads, row.unread_threads) == (
            total,
            unread,
            threads,
            unread_threads,
        ):
            continue
        value = seq.take(MAILBOX_TYPE)
        q.update_mailbox(
            tx,
            dataclasses.replace(
                row,
                total_emails=total,
                unread_emails=unread,
                total_threads=threads,
                unread_threads=unread_threads,
            ),
            props_changed=False,
            seq=value,
        )


def drop_dead_mailboxes(tx: Tx, account_id: str) -> None:
    """Locations in mailboxes that no longer exist go; their Emails are re-derived."""
    # the refresh that tombstones a mailbox runs this in the same transaction, so looking at
    # tombstones is enough (and cheap: no scan of every location of the account)
    dead = set(em.dead_mailboxes_with_locations(tx, account_id))
    if not dead:
        return
    seq = _Seq(tx, account_id)
    threads: set[str] = set()
    touched: set[str] = set()
    counts = _Counts(tx, account_id, full=False)
    for mailbox_id in dead:
        held = {
            loc.email_id for loc in em.locations_of_mailbox(tx, account_id, mailbox_id).values()
        }
        if len(held) > COUNT_THREADS:
            counts.full = True
        if not counts.full:
            counts.snapshot(em.thread_ids_of(tx, account_id, held).values())
        touched.update(em.forget_mailbox(tx, account_id, mailbox_id))
    _recompute(tx, account_id, touched, seq, threads)
    for thread_id in threads:
        em.touch_thread(tx, account_id, thread_id, seq.take(em.THREAD_TYPE))
    counts.covers(touched)
    counts.finish(lambda: em.mailboxes_of(tx, account_id, touched), seq)
