"""sync/emails.py's run: for each path, the reads ``MailboxSync`` sends through the
:class:`~imapjmap.upstream.sync_reads.SyncReads` seam (only what the path needs, in order), and the
cache it leaves.  The server is a fake over a dict of records (a pure unit: the real
servers run the same paths in tests/integration/test_email_sync.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from imapjmap.imap.models import FetchRecord, UidSet
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails as se
from imapjmap.sync.emails import Cursor
from imapjmap.sync.parsing import Raw, prepare
from imapjmap.upstream.sync_reads import Changes, Opened
from tests.unit.test_sync_batch import message

A = "Aacct"
BOX = "Minbox"
SYNCED = Cursor(uidvalidity=7, uidnext=11, modseq=100, messages=10)


@dataclass
class FakeReads:
    """One mailbox upstream: ``records`` by UID, what changed since the synced cursor
    (``changes``), and the extensions and selection of the connection."""

    records: dict[int, FetchRecord]
    changes: Changes = field(default_factory=Changes)
    qresync: bool = False
    condstore: bool = False
    selected: tuple[str, int | None] | None = None
    uidvalidity: int = 7
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def open(self, name: str, since: tuple[int, int] | None = None) -> Opened:
        self.calls.append(("open", name, since))
        uidnext = max(self.records, default=0) + 1
        report = since is not None and self.qresync
        changes = self.changes if report else Changes()
        return Opened(self.uidvalidity, uidnext, 120, len(self.records), changes)

    async def changes_in_selected(self, modseq: int) -> Changes:
        self.calls.append(("changes_in_selected", modseq))
        return self.changes

    async def changed_flags(self, top: int, since: int | None) -> Sequence[FetchRecord]:
        self.calls.append(("changed_flags", top, since))
        if since is not None:
            return self.changes.changed
        return [
            FetchRecord(seq=uid, uid=uid, flags=r.flags, modseq=r.modseq)
            for uid, r in self.records.items()
            if uid <= top
        ]

    async def uids(self, low: int = 1, high: int | None = None) -> UidSet:
        self.calls.append(("uids", low, high))
        return UidSet.of(u for u in self.records if u >= low and (high is None or u <= high))

    async def newest(self, count: int, exists: int) -> UidSet:
        self.calls.append(("newest", count, exists))
        return UidSet.of(sorted(self.records)[-count:])

    async def which(self, uids: Collection[int]) -> UidSet:
        self.calls.append(("which", sorted(uids)))
        return UidSet.of(u for u in uids if u in self.records)

    async def fetch_new(self, uids: Sequence[int]) -> list[FetchRecord]:
        self.calls.append(("fetch_new", list(uids)))
        return [self.records[u] for u in uids if u in self.records]

    async def fetch_ids(self, uids: Sequence[int]) -> list[FetchRecord]:
        self.calls.append(("fetch_ids", len(uids)))
        return [self.records[u] for u in uids if u in self.records]

    async def fetch_unparsed(self, uids: Sequence[int]) -> Raw:
        raise AssertionError("a fill is not run here")

    def unparsable(self) -> None:
        raise AssertionError("nothing is parsed here")


def upstream(**kwargs: Any) -> FakeReads:
    """Messages 1-12: 1-10 were synced; since then 2 was expunged, 1 marked seen, 11 and 12
    arrived."""
    records = {n: message(n) for n in range(1, 13) if n != 2}
    records[1] = dataclasses.replace(records[1], flags=("\\Seen",), modseq=110)
    changes = Changes([UidSet.of([2])], [FetchRecord(seq=1, uid=1, flags=("\\Seen",), modseq=110)])
    return FakeReads(records, changes, **kwargs)


async def cache(synced: Cursor | None, status: Cursor, *uids: int) -> tuple[Store, q.MailboxRow]:
    store = await Store.open(":memory:")
    row = q.MailboxRow(
        A,
        BOX,
        "INBOX",
        "INBOX",
        role="inbox",
        uidvalidity=status.uidvalidity,
        uidnext=status.uidnext,
        highestmodseq=status.modseq,
        messages=status.messages,
    )

    def setup(tx: Tx) -> None:
        q.ensure_account(tx, A, "u")
        q.insert_mailbox(tx, row, seq=q.next_seq(tx, A, ["Mailbox"]))
        if synced is not None:
            new = [message(n) for n in uids]
            first = se.plan_first(se.Delta(), new, prepare(new, A), rest=UidSet(), cursor=synced)
            se.apply(tx, A, BOX, first)

    await store.run(setup)
    return store, row


NEW = [("uids", 11, None), ("fetch_new", [11, 12])]
STATUS = Cursor(7, 13, 120, 11)
PATHS: dict[str, tuple[dict[str, Any], list[tuple[Any, ...]]]] = {
    "QRESYNC, INBOX open": (
        {"qresync": True, "condstore": True, "selected": ("INBOX", 7)},
        [("changes_in_selected", 100), *NEW],
    ),
    "QRESYNC": (
        {"qresync": True, "condstore": True, "selected": ("Sent", 7)},
        [("open", "INBOX", (7, 100)), *NEW],
    ),
    "CONDSTORE": (
        {"condstore": True},
        [("open", "INBOX", None), ("changed_flags", 10, 100), ("uids", 1, 10), *NEW],
    ),
    "neither": (
        {},
        [("open", "INBOX", None), ("changed_flags", 10, None), ("uids", 1, 10), *NEW],
    ),
}


@pytest.mark.parametrize(("server", "calls"), PATHS.values(), ids=PATHS.keys())
async def test_each_path_reads_only_what_it_needs(
    server: dict[str, Any], calls: list[tuple[Any, ...]]
) -> None:
    store, row = await cache(SYNCED, STATUS, *range(1, 11))
    reads = upstream(**server)
    rest = await se.MailboxSync(store, A, row, SYNCED).run(reads)
    assert rest == UidSet()
    assert reads.calls == calls
    locations = await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))
    assert sorted(locations) == [1, *range(3, 13)]
    assert locations[1].flags == ("\\Seen",)
    cursors = await store.run(lambda tx: em.synced_cursors(tx, A))
    expected = (7, 13, 120, 11)
    assert cursors[BOX] == expected


async def test_nothing_new_asks_for_no_new_message() -> None:
    store, row = await cache(SYNCED, Cursor(7, 11, 120, 10), *range(1, 11))
    reads = upstream(qresync=True, condstore=True)
    reads.records = {n: r for n, r in reads.records.items() if n <= 10}
    await se.MailboxSync(store, A, row, SYNCED).run(reads)
    assert reads.calls == [("open", "INBOX", (7, 100))]


@pytest.mark.parametrize(
    ("suspects", "gone"), [({3, 4}, set()), ({3, 20}, {20})], ids=["present", "gone"]
)
async def test_suspects_are_asked_by_uid(suspects: set[int], gone: set[int]) -> None:
    """A UID a write found missing is asked for by UID even when the cursors say that
    nothing happened (``AccountSync.suspect``)."""
    uids = [*range(1, 11), 20]
    store, row = await cache(dataclasses.replace(SYNCED, uidnext=21), Cursor(7, 21, 100, 11), *uids)
    synced = Cursor(7, 21, 100, 11)
    reads = FakeReads({n: message(n) for n in range(1, 11)}, qresync=True, condstore=True)
    await se.MailboxSync(store, A, row, synced, suspects=suspects).run(reads)
    assert reads.calls == [("open", "INBOX", (7, 100)), ("which", sorted(suspects))]
    locations = await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))
    assert set(uids) - set(locations) == gone


async def test_uidvalidity_changed_at_the_select_reattaches_known_emails() -> None:
    """The STATUS still said 7, the SELECT says 8: every message is probed for its id, the
    known ones come back without a full fetch, only the unknown ones are fetched."""
    store, row = await cache(SYNCED, STATUS, *range(1, 11))
    ids_before = await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))
    reads = upstream(qresync=True, condstore=True, uidvalidity=8)
    rest = await se.MailboxSync(store, A, row, SYNCED).run(reads)
    assert rest == UidSet()
    assert reads.calls == [
        ("open", "INBOX", (7, 100)),
        ("uids", 1, None),
        ("fetch_ids", 11),
        ("fetch_new", [12, 11]),
    ]
    locations = await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))
    assert sorted(locations) == [1, *range(3, 13)]
    assert {u: loc.email_id for u, loc in locations.items() if u <= 10} == {
        u: loc.email_id for u, loc in ids_before.items() if u != 2
    }
    cursors = await store.run(lambda tx: em.synced_cursors(tx, A))
    assert cursors[BOX] == (8, 13, 120, 11)


async def test_first_sync_waits_for_the_newest_batch_only() -> None:
    store, row = await cache(None, Cursor(7, 2501, 120, 2500))
    reads = FakeReads({n: message(n) for n in range(1, 2501)}, qresync=True, condstore=True)
    job = se.MailboxSync(store, A, row, None)
    rest = await job.run(reads)
    assert rest == UidSet(((1, 1500),))
    # the newest by message number: the UIDs below are the fill's to search, on its own
    # connection (listing every UID took Dovecot seconds at a million messages)
    assert reads.calls == [
        ("open", "INBOX", None),
        ("newest", 1000, 2500),
        ("fetch_new", list(range(2500, 1500, -1))),
    ]
    assert job.search_below == 1501
    locations = await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))
    assert sorted(locations) == list(range(1501, 2501))
    # the cursor moves with the fill's last batch, not before
    assert await store.run(lambda tx: em.synced_cursors(tx, A)) == {}
    assert job.pending_cursor == Cursor(7, 2501, 120, 2500)
