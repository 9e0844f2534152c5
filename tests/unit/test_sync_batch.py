"""sync/emails.py: a batch of new messages written in one transaction gives the same Emails,
Threads and thread_refs as the same messages written one transaction each."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.imap.models import Address, Envelope, FetchRecord
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails as se
from imapjmap.sync import records

A = "Aacct"
BOX = "Minbox"


def message(
    n: int,
    *,
    parents: Sequence[int] = (),
    subject: str = "Topic",
    guid: str | None = None,
    flags: tuple[str, ...] = (),
) -> FetchRecord:
    """Message ``n`` (Message-ID ``<n@x>``), replying to ``parents`` (the last is
    In-Reply-To, all are References)."""
    refs = " ".join(f"<{p}@x>" for p in parents)
    return FetchRecord(
        seq=n,
        uid=n,
        flags=flags,
        modseq=n,
        internaldate=dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n),
        size=100 + n,
        envelope=Envelope(
            date="Wed, 1 Jan 2025 10:00:00 +0000",
            subject=subject,
            from_=(Address("Ann", None, "ann", "example.org"),),
            sender=(),
            reply_to=(),
            to=(Address(None, None, "bob", "example.org"),),
            cc=(),
            bcc=(),
            in_reply_to=f"<{parents[-1]}@x>" if parents else None,
            message_id=f"<{n}@x>",
        ),
        sections={records.HEADERS_SECTION: f"References: {refs}\r\n\r\n".encode()}
        if parents
        else {},
        x_guid=guid or f"g{n}",
    )


async def written(batches: Sequence[Sequence[FetchRecord]]) -> dict[str, Any]:
    """Apply each batch in its own transaction to a fresh cache; what the rows say."""
    store = await Store.open(":memory:")

    def setup(tx: Tx) -> None:
        q.ensure_account(tx, A, "u")
        mailbox = q.MailboxRow(A, BOX, "INBOX", "INBOX", role="inbox", uidvalidity=1)
        q.insert_mailbox(tx, mailbox, seq=q.next_seq(tx, A, ["Mailbox"]))

    def read(tx: Tx) -> dict[str, Any]:
        live_threads = {r[0] for r in tx.all("SELECT id FROM threads WHERE destroyed_seq IS NULL")}
        return {
            "emails": {
                r[0]: (r[1], r[2] is None)
                for r in tx.all("SELECT id, thread_id, destroyed_seq FROM emails")
            },
            "refs": {
                r[0]: (r[1], r[2])
                for r in tx.all("SELECT message_id, thread_id, base_subject FROM thread_refs")
            },
            "live_threads": live_threads,
            "locations": tx.all("SELECT uid, email_id, deleted FROM locations ORDER BY uid"),
            "counts": tx.one(
                "SELECT total_emails, unread_emails, total_threads, unread_threads"
                " FROM mailboxes WHERE id = ?",
                (BOX,),
            ),
        }

    try:
        await store.run(setup)
        for batch in batches:
            delta = se.Delta(new=list(batch))
            await store.run(functools.partial(se.apply, account_id=A, mailbox_id=BOX, delta=delta))
        return await store.run(read)
    finally:
        await store.aclose()


def thread_of(state: dict[str, Any], n: int) -> str:
    thread: str = state["emails"][f"Eg{n}"][0]
    return thread


async def test_a_merge_inside_one_batch() -> None:
    # 1 and 2 start two threads; 3 replies to both (merge); 4 replies to 1 after the merge
    mails = [
        message(1),
        message(2),
        message(3, parents=[1, 2]),
        message(4, parents=[1]),
        message(5, subject="Other"),
    ]
    batch = await written([mails])
    one_by_one = await written([[m] for m in mails])
    assert batch["emails"] == one_by_one["emails"]
    assert batch["refs"] == one_by_one["refs"]
    assert batch["counts"] == one_by_one["counts"] == (5, 5, 2, 2)
    assert len({thread_of(batch, n) for n in (1, 2, 3, 4)}) == 1
    assert thread_of(batch, 5) != thread_of(batch, 1)
    # every live Thread has an Email, and every Email's Thread is live
    assert batch["live_threads"] == {t for t, live in batch["emails"].values() if live}


async def test_two_copies_and_a_deleted_copy_in_one_batch() -> None:
    mails = [
        message(1),
        message(2, guid="g1"),  # a second copy of the same Email
        message(3, flags=("\\Deleted",)),  # only copy hidden: a tombstone from the start
        message(4, parents=[3]),  # threads with the hidden one through its Message-ID
    ]
    batch = await written([mails])
    one_by_one = await written([[m] for m in mails])
    assert batch["emails"] == one_by_one["emails"]
    assert batch["refs"] == one_by_one["refs"]
    assert batch["locations"] == one_by_one["locations"]
    assert batch["counts"] == one_by_one["counts"] == (2, 2, 2, 2)
    assert batch["emails"]["Eg3"][1] is False
    assert thread_of(batch, 4) == thread_of(batch, 3)


@st.composite
def conversations(draw: st.DrawFn) -> list[FetchRecord]:
    count = draw(st.integers(1, 14))
    mails = []
    for n in range(1, count + 1):
        parents = draw(st.lists(st.integers(1, 16), max_size=3, unique=True))
        subject = draw(st.sampled_from(["Topic", "Re: Topic", "Other", ""]))
        mails.append(message(n, parents=parents, subject=subject))
    return draw(st.permutations(mails))


@settings(max_examples=60, deadline=None)
@given(mails=conversations(), size=st.integers(1, 6))
async def test_batches_thread_like_single_messages(mails: list[FetchRecord], size: int) -> None:
    batched = await written([mails[i : i + size] for i in range(0, len(mails), size)])
    one_by_one = await written([[m] for m in mails])
    assert batched["emails"] == one_by_one["emails"]
    assert batched["refs"] == one_by_one["refs"]
    assert batched["counts"] == one_by_one["counts"]
    assert batched["live_threads"] == {t for t, live in batched["emails"].values() if live}


async def test_thousands_of_changes_read_their_locations_by_uid(monkeypatch: Any) -> None:
    """More expunges and flag changes than FEW_UIDS (another client marking thousands of a
    million messages read) are read FEW_UIDS locations at a time, by UID: never every
    location of the mailbox, which at a million messages held hundreds of MB."""
    monkeypatch.setattr(se, "FEW_UIDS", 4)
    store = await Store.open(":memory:")

    def setup(tx: Tx) -> None:
        q.ensure_account(tx, A, "u")
        mailbox = q.MailboxRow(A, BOX, "INBOX", "INBOX", role="inbox", uidvalidity=1)
        q.insert_mailbox(tx, mailbox, seq=q.next_seq(tx, A, ["Mailbox"]))
        se.apply(tx, A, BOX, se.Delta(new=[message(n) for n in range(1, 31)], first=True))

    await store.run(setup)
    every_location = em.locations_of_mailbox

    def whole_mailbox(*args: Any) -> Any:
        raise AssertionError("every location of the mailbox was read")

    monkeypatch.setattr(em, "locations_of_mailbox", whole_mailbox)
    flags = {n: (("\\Seen",), 100 + n) for n in range(1, 21)}
    flags[40] = (("\\Seen",), 140)  # not known: skipped
    gone = {3, 5, 25, 41}
    await store.run(lambda tx: se.apply(tx, A, BOX, se.Delta(flags=flags, gone=gone)))

    def read(tx: Tx) -> tuple[dict[int, Any], Any, Any]:
        row = q.mailbox(tx, A, BOX)
        assert row is not None
        counts = (row.total_emails, row.unread_emails)
        return every_location(tx, A, BOX), counts, em.mailbox_counts(tx, A, [BOX])[BOX][:2]

    locations, counts, recounted = await store.run(read)
    assert sorted(locations) == sorted(set(range(1, 31)) - gone)
    for uid, loc in locations.items():
        assert loc.flags == (("\\Seen",) if uid <= 20 else ())
        assert loc.modseq == (100 + uid if uid <= 20 else uid)
    assert counts == recounted == (27, 9)  # 21-30 unread, but 25 expunged
