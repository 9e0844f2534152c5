"""sync/emails.py's plan, pure: which path asks a mailbox's changes, and the plan
(:class:`~imapjmap.sync.emails.Delta`) made of what the server reported and what the cache
holds, for each sync path; then such plans applied to a cache."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import pytest

from imapjmap.imap.models import FetchRecord, UidSet
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails as se
from imapjmap.sync.emails import Cursor, Path, Report
from imapjmap.sync.parsing import prepare
from imapjmap.upstream.sync_reads import Changes
from tests.unit.test_sync_batch import message

A = "Aacct"
BOX = "Minbox"

SYNCED = Cursor(uidvalidity=7, uidnext=11, modseq=100, messages=10)
NOW = Cursor(uidvalidity=7, uidnext=13, modseq=120, messages=12)


def flags(uid: int, *flag: str, modseq: int | None = None, labels: Any = None) -> FetchRecord:
    return FetchRecord(seq=uid, uid=uid, flags=flag, modseq=modseq, x_gm_labels=labels)


# (case, synced, status, extensions, selected) -> path
PATHS: list[tuple[str, Cursor | None, Cursor, set[str], Any, Path]] = [
    ("first sync", None, NOW, {"qresync", "condstore"}, None, Path.FULL),
    (
        "UIDVALIDITY changed",
        dataclasses.replace(SYNCED, uidvalidity=6),
        NOW,
        {"qresync", "condstore"},
        ("INBOX", 7),
        Path.FULL,
    ),
    ("QRESYNC, nothing open", SYNCED, NOW, {"qresync", "condstore"}, None, Path.QRESYNC),
    (
        "QRESYNC, another mailbox open",
        SYNCED,
        NOW,
        {"qresync", "condstore"},
        ("Sent", 7),
        Path.QRESYNC,
    ),
    (
        "QRESYNC, this mailbox open",
        SYNCED,
        NOW,
        {"qresync", "condstore"},
        ("INBOX", 7),
        Path.QRESYNC_SELECTED,
    ),
    (
        "QRESYNC, this name open at another UIDVALIDITY",
        SYNCED,
        NOW,
        {"qresync", "condstore"},
        ("INBOX", 3),
        Path.QRESYNC,
    ),
    (
        "QRESYNC, but synced without a modseq",
        dataclasses.replace(SYNCED, modseq=None),
        NOW,
        {"qresync", "condstore"},
        ("INBOX", 7),
        Path.REFETCH,
    ),
    ("CONDSTORE only", SYNCED, NOW, {"condstore"}, ("INBOX", 7), Path.CHANGEDSINCE),
    ("neither", SYNCED, NOW, set(), ("INBOX", 7), Path.REFETCH),
]


@pytest.mark.parametrize(
    ("synced", "status", "extensions", "selected", "path"),
    [case[1:] for case in PATHS],
    ids=[case[0] for case in PATHS],
)
def test_choose_path(
    synced: Cursor | None, status: Cursor, extensions: set[str], selected: Any, path: Path
) -> None:
    got = se.choose_path(
        synced,
        status,
        "INBOX",
        qresync="qresync" in extensions,
        condstore="condstore" in extensions,
        selected=selected,
    )
    assert got is path


@pytest.mark.parametrize(
    ("path", "synced", "now", "expected"),
    [
        (Path.FULL, None, NOW, True),
        (Path.FULL, SYNCED, NOW, True),  # another UIDVALIDITY at the STATUS
        (Path.QRESYNC, SYNCED, dataclasses.replace(NOW, uidvalidity=8), True),  # at the SELECT
        (Path.QRESYNC, SYNCED, NOW, False),
        (Path.REFETCH, SYNCED, NOW, False),
    ],
)
def test_starts_over_on_a_first_sync_or_another_uidvalidity(
    path: Path, synced: Cursor | None, now: Cursor, expected: bool
) -> None:
    assert se.starts_over(path, synced, now) is expected


@pytest.mark.parametrize(
    ("synced_next", "now_next", "start", "top"),
    [
        (11, 11, None, 10),  # nothing new
        (11, 13, 11, 10),
        (11, None, 11, 10),  # no UIDNEXT: ask
        (None, 5, 1, 0),
        (1, 1, None, 0),  # empty, still empty
        (0, 2, 1, 0),  # a UIDNEXT of 0 (invalid) counts as 1
    ],
)
def test_where_new_messages_start(
    synced_next: int | None, now_next: int | None, start: int | None, top: int
) -> None:
    synced = dataclasses.replace(SYNCED, uidnext=synced_next)
    now = dataclasses.replace(NOW, uidnext=now_next)
    assert se.new_from(synced, now) == start
    assert se.known_top(synced) == top


@dataclasses.dataclass
class Case:
    report: Report
    known: Collection[int] = ()
    suspects: Collection[int] = ()
    inbox: bool = False
    gone: set[int] = dataclasses.field(default_factory=set)
    flags: dict[int, Any] = dataclasses.field(default_factory=dict)
    labels: dict[int, Any] = dataclasses.field(default_factory=dict)
    new: list[int] = dataclasses.field(default_factory=list)
    delivery: bool = False


CHANGES: dict[str, Case] = {
    "nothing moved": Case(Report(NOW)),
    "nothing moved, searched": Case(Report(NOW, present=UidSet.of([1, 2, 3])), known=[1, 2, 3]),
    "flags changed (QRESYNC)": Case(
        Report(NOW, Changes(changed=[flags(2, "\\Seen", modseq=110), flags(3, modseq=111)])),
        flags={2: (("\\Seen",), 110), 3: ((), 111)},
    ),
    "a record without FLAGS is no flag change": Case(
        Report(NOW, Changes(changed=[FetchRecord(seq=1, uid=1, modseq=112)]))
    ),
    "expunged (VANISHED)": Case(
        Report(NOW, Changes(vanished=[UidSet.of([1, 2]), UidSet.of([9])])), gone={1, 2, 9}
    ),
    "expunged (searched)": Case(
        Report(NOW, present=UidSet.of([1, 3, 4])), known=[1, 2, 3, 4, 5], gone={2, 5}
    ),
    "expunged and flagged: both said, apply lets the expunge win": Case(
        Report(NOW, Changes([UidSet.of([4])], [flags(4, "\\Flagged", modseq=115)])),
        gone={4},
        flags={4: (("\\Flagged",), 115)},
    ),
    "Gmail labels changed": Case(
        Report(NOW, Changes(changed=[flags(6, labels=("\\Inbox", "Work"), modseq=113)])),
        flags={6: ((), 113)},
        labels={6: ("\\Inbox", "Work")},
    ),
    "new in the inbox: a delivery": Case(
        Report(NOW, new=[message(11), message(12)]), inbox=True, new=[11, 12], delivery=True
    ),
    "new elsewhere": Case(Report(NOW, new=[message(11)]), new=[11]),
    "suspects gone": Case(
        Report(NOW, suspects_present=UidSet.of([6])), suspects={5, 6, 7}, gone={5, 7}
    ),
    "suspects present": Case(Report(NOW, suspects_present=UidSet.of([5, 6])), suspects={5, 6}),
}


@pytest.mark.parametrize("case", CHANGES.values(), ids=CHANGES.keys())
def test_plan_changes(case: Case) -> None:
    hook = object()
    delta = se.plan_changes(
        case.report,
        known=case.known,
        suspects=case.suspects,
        inbox=case.inbox,
        hook=hook,  # type: ignore[arg-type]
    )
    assert delta.cursor == NOW  # the cursor moves whatever happened
    assert delta.gone == case.gone
    assert delta.flags == case.flags
    assert delta.labels == case.labels
    assert [r.uid for r in delta.new] == case.new
    assert delta.delivery is case.delivery
    assert delta.hook is hook
    # a mailbox synced before: no reset, counts followed, not a first sync
    assert (delta.reset, delta.first, delta.counts, delta.remap) == (False, False, True, {})


def ranges(*spans: tuple[int, int]) -> UidSet:
    return UidSet(spans)


@pytest.mark.parametrize(
    ("uids", "first", "rest"),
    [
        (UidSet(), [], UidSet()),
        (ranges((1, 500)), list(range(500, 0, -1)), UidSet()),
        (ranges((1, 1000)), list(range(1000, 0, -1)), UidSet()),
        (ranges((1, 2500)), list(range(2500, 1500, -1)), ranges((1, 1500))),
        # gaps: the newest thousand span them, the rest below the last of them
        (
            ranges((1, 600), (700, 1000), (5000, 5400)),
            [*range(5400, 4999, -1), *range(1000, 699, -1), *range(600, 302, -1)],
            ranges((1, 302)),
        ),
    ],
    ids=["empty", "under a batch", "one batch", "batches", "gaps"],
)
def test_split_first_newest_first(uids: UidSet, first: list[int], rest: UidSet) -> None:
    got_first, got_rest = se.split_first(uids)
    assert got_first == first
    assert got_rest == rest
    assert len(got_first) + len(got_rest) == len(uids)


def test_plan_reattach_keeps_known_emails_and_resets_the_rest() -> None:
    probed = {
        1: flags(1, "\\Seen", modseq=5),
        2: flags(2, modseq=6, labels=("Work",)),
        3: flags(3, modseq=7),
    }
    ids = {1: "Eone", 2: "Etwo", 3: "Enew"}
    delta = se.plan_reattach(probed, ids, known={"Eone", "Etwo", "Eother"})
    assert delta.reset and delta.first
    assert delta.remap == {1: ("Eone", ("\\Seen",), 5), 2: ("Etwo", (), 6)}
    assert delta.labels == {2: ("Work",)}
    assert delta.new == [] and delta.cursor is None


@pytest.mark.parametrize(
    ("rest", "cursor"), [(UidSet(), NOW), (ranges((1, 10)), None)], ids=["all", "more to fill"]
)
def test_plan_first_moves_the_cursor_only_when_nothing_is_left(
    rest: UidSet, cursor: Cursor | None
) -> None:
    base = se.plan_reattach({1: flags(1, modseq=5)}, {1: "Eone"}, {"Eone"})
    new = [message(20)]
    delta = se.plan_first(base, new, [], rest=rest, cursor=NOW)
    assert delta.cursor == cursor
    assert delta.reset and delta.first
    assert delta.new is new and delta.prepared == []
    assert delta.remap == base.remap  # a reset's re-attached messages land with it
    assert se.plan_first(se.Delta(), [], [], rest=rest, cursor=NOW).remap == {}


def test_plan_batch_counts_and_moves_the_cursor_on_the_last_only() -> None:
    uncounted: set[str] = set()
    plans = [
        se.plan_batch([message(n)], [], last=n == 3, cursor=NOW, uncounted=uncounted)
        for n in (1, 2, 3)
    ]
    assert [(p.counts, p.cursor) for p in plans] == [(False, None), (False, None), (True, NOW)]
    assert all(p.first and not p.reset for p in plans)
    assert all(p.uncounted is uncounted for p in plans)  # the last counts what they left


# -- plans applied ---------------------------------------------------------------------------


async def cache(*uids: int) -> Store:
    store = await Store.open(":memory:")

    def setup(tx: Tx) -> None:
        q.ensure_account(tx, A, "u")
        mailbox = q.MailboxRow(A, BOX, "INBOX", "INBOX", role="inbox", uidvalidity=7)
        q.insert_mailbox(tx, mailbox, seq=q.next_seq(tx, A, ["Mailbox"]))
        new = [message(n) for n in uids]
        first = se.plan_first(se.Delta(), new, prepare(new, A), rest=UidSet(), cursor=SYNCED)
        se.apply(tx, A, BOX, first)

    await store.run(setup)
    return store


def seq(tx: Tx) -> int:
    return int(tx.scalar("SELECT seq FROM accounts WHERE account_id = ?", (A,)))


async def test_nothing_moved_writes_the_cursor_only() -> None:
    """No JMAP change takes no state (CORE-CHG-05): only the synced cursor moves."""
    store = await cache(1, 2, 3)
    assert sorted(await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))) == [1, 2, 3]
    before = await store.run(seq)
    delta = se.plan_changes(Report(NOW, present=UidSet.of([1, 2, 3])), known=[1, 2, 3])
    await store.run(lambda tx: se.apply(tx, A, BOX, delta))
    assert await store.run(seq) == before
    cursors = await store.run(lambda tx: em.synced_cursors(tx, A))
    assert cursors[BOX] == (7, 13, 120, 12)


async def test_a_plan_of_every_kind_applied_in_one_transaction() -> None:
    """Flags, an expunge, a suspect gone and a new message: one state, one transaction."""
    store = await cache(1, 2, 3, 4)
    before = await store.run(seq)
    report = Report(
        NOW,
        Changes([UidSet.of([2])], [flags(1, "\\Seen", modseq=115)]),
        suspects_present=UidSet(),
        new=[message(11)],
    )
    delta = se.plan_changes(report, suspects={4}, inbox=True)
    await store.run(lambda tx: se.apply(tx, A, BOX, delta))
    assert await store.run(seq) == before + 1
    locations = await store.run(lambda tx: em.locations_of_mailbox(tx, A, BOX))
    assert sorted(locations) == [1, 3, 11]
    assert locations[1].flags == ("\\Seen",) and locations[1].modseq == 115
