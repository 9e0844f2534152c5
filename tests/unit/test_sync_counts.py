"""sync/emails.py: the mailbox counts that ``apply()`` keeps up to date from the threads a
change touches are those of a full recount (``mailbox_counts``, RFC 8621 §2) after every
change: new messages (replies that merge threads, copies of one Email in two mailboxes),
flag changes ($seen, \\Deleted), expunges, a Gmail-like hook writing label locations, and a
mailbox going away."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.imap.models import FetchRecord
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails as se
from imapjmap.sync import mailboxes as mbx
from imapjmap.sync import records
from tests.unit.test_sync_batch import message

A = "Aacct"
BOXES = ("Mone", "Mtwo")
LABEL = "Mlabel"  # written by the hook only, like a Gmail label
FLAGS = ((), ("\\Seen",), ("\\Deleted",), ("\\Seen", "\\Deleted"), ("\\Flagged",))


def setup(tx: Tx) -> None:
    q.ensure_account(tx, A, "u")
    for box in (*BOXES, LABEL):
        row = q.MailboxRow(A, box, box, box, uidvalidity=1)
        q.insert_mailbox(tx, row, seq=q.next_seq(tx, A, ["Mailbox"]))


def stored_and_recounted(tx: Tx) -> tuple[dict[str, Any], dict[str, Any]]:
    boxes = [r.id for r in q.live_mailboxes(tx, A)]
    stored = {
        r.id: (r.total_emails, r.unread_emails, r.total_threads, r.unread_threads)
        for r in q.live_mailboxes(tx, A)
    }
    return stored, em.mailbox_counts(tx, A, boxes)


def label_hook(tx: Tx, account_id: str, mailbox_id: str, delta: se.Delta) -> Any:
    """Gmail-like: a new message of the first mailbox with \\Flagged also gets a label
    location in LABEL; its expunge drops it."""
    touched: set[str] = set()
    if mailbox_id != BOXES[0]:
        return touched, set()
    for r in delta.new:
        if r.uid is not None and "\\Flagged" in (r.flags or ()):
            email_id = records.email_id_for(r)
            loc = em.Location(LABEL, -r.uid, email_id, None, tuple(r.flags or ()), False)
            em.put_location(tx, account_id, loc)
            touched.add(email_id)
    for uid in delta.gone:
        found = tx.one(
            "SELECT email_id FROM locations WHERE account_id = ? AND mailbox_id = ? AND uid = ?",
            (account_id, LABEL, -uid),
        )
        if found is not None:
            em.remove_location(tx, account_id, LABEL, -uid)
            touched.add(found[0])
    return touched, {LABEL} if touched else set()


@contextmanager
def no_full_recount() -> Iterator[list[int]]:
    """Counts how often ``mailbox_counts`` runs (a fallback to the full recount)."""
    calls: list[int] = []
    real = em.mailbox_counts

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    with mock.patch.object(em, "mailbox_counts", counting):
        yield calls


@st.composite
def histories(draw: st.DrawFn) -> tuple[bool, list[tuple[Any, ...]]]:
    upstream = draw(st.booleans())  # THREADID from the server, or local threading
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["new", "new", "copy", "flags", "gone", "both"]))
        box = draw(st.sampled_from(BOXES))
        ops.append(
            (
                kind,
                box,
                draw(st.lists(st.integers(1, 20), max_size=3, unique=True)),  # parents / picks
                draw(st.sampled_from(["Topic", "Re: Topic", "Other"])),
                draw(st.sampled_from(FLAGS)),
                draw(st.integers(0, 3)),  # upstream thread
                draw(st.integers(1, 3)),  # messages in a "new" batch
            )
        )
    return upstream, ops


@settings(max_examples=120, deadline=None)
@given(history=histories())
async def test_counts_follow_every_change(history: tuple[bool, list[tuple[Any, ...]]]) -> None:
    upstream, ops = history
    store = await Store.open(":memory:")
    sent: list[FetchRecord] = []  # every message so far, for copies
    where: dict[str, dict[int, FetchRecord]] = {box: {} for box in BOXES}  # box → uid → it
    n = 0
    try:
        await store.run(setup)
        for kind, box, picks, subject, flags, thread, size in ops:
            delta = se.Delta(hook=label_hook)
            if kind == "new":
                for _ in range(size):
                    n += 1
                    parents = [p for p in picks if p < n]
                    rec = message(n, parents=parents, subject=subject, flags=flags)
                    if upstream:
                        rec = dataclasses.replace(rec, threadid=f"T{(n + thread) % 4}")
                    delta.new.append(rec)
            elif kind == "copy" and sent:
                n += 1
                rec = sent[picks[0] % len(sent)] if picks else sent[-1]
                delta.new.append(dataclasses.replace(rec, uid=n, seq=n, flags=flags))
            else:
                uids = sorted(where[box])
                chosen = {uids[p % len(uids)] for p in picks} if uids else set()
                if kind in ("flags", "both"):
                    delta.flags = {uid: (flags, None) for uid in chosen}
                if kind in ("gone", "both") and chosen:
                    delta.gone = {min(chosen)}
            for rec in delta.new:
                assert rec.uid is not None
                where[box][rec.uid] = rec
                sent.append(rec)
            for uid in delta.gone:
                where[box].pop(uid, None)
            with no_full_recount() as calls:
                await store.run(
                    functools.partial(se.apply, account_id=A, mailbox_id=box, delta=delta)
                )
            assert not calls, "a small change fell back to a full recount"
            stored, recounted = await store.run(stored_and_recounted)
            assert stored == recounted, (kind, box)
    finally:
        await store.aclose()


async def test_a_reply_that_merges_two_threads_across_mailboxes() -> None:
    store = await Store.open(":memory:")
    try:
        await store.run(setup)

        async def apply(box: str, **fields: Any) -> None:
            delta = se.Delta(**fields)
            await store.run(functools.partial(se.apply, account_id=A, mailbox_id=box, delta=delta))

        await apply("Mone", new=[message(1), message(2, flags=("\\Seen",))])
        await apply("Mtwo", new=[message(3, guid="g2", flags=("\\Seen",))])  # 2's copy
        await apply("Mtwo", new=[message(4, parents=[1, 2])])  # joins 1 and 2
        stored, recounted = await store.run(stored_and_recounted)
        assert stored == recounted
        assert stored["Mone"] == (2, 1, 1, 1)
        assert stored["Mtwo"] == (2, 1, 1, 1)
        await apply("Mone", flags={1: (("\\Seen",), None)})
        await apply("Mtwo", flags={4: (("\\Seen", "\\Deleted"), None)})
        stored, recounted = await store.run(stored_and_recounted)
        assert stored == recounted
        assert stored["Mone"] == (2, 0, 1, 0)
        assert stored["Mtwo"] == (1, 0, 1, 0)
        await apply("Mone", gone={2})
        stored, recounted = await store.run(stored_and_recounted)
        assert stored == recounted
        assert stored["Mone"] == (1, 0, 1, 0)
        assert stored["Mtwo"] == (1, 0, 1, 0)
    finally:
        await store.aclose()


async def test_many_threads_and_resets_recount_in_full() -> None:
    store = await Store.open(":memory:")
    try:
        await store.run(setup)
        many = [message(i, subject=f"S{i}") for i in range(1, se.COUNT_THREADS + 20)]
        with no_full_recount() as calls:
            delta = se.Delta(new=many)
            await store.run(
                functools.partial(se.apply, account_id=A, mailbox_id="Mone", delta=delta)
            )
        assert calls
        with no_full_recount() as calls:
            delta = se.Delta(reset=True, first=True, new=[message(1)])
            await store.run(
                functools.partial(se.apply, account_id=A, mailbox_id="Mone", delta=delta)
            )
        assert calls
        stored, recounted = await store.run(stored_and_recounted)
        assert stored == recounted
        assert stored["Mone"] == (1, 1, 1, 1)
    finally:
        await store.aclose()


async def test_a_dead_mailbox_drops_out_of_the_counts() -> None:
    store = await Store.open(":memory:")
    try:
        await store.run(setup)
        for box, mails in (("Mone", [message(1), message(2)]), ("Mtwo", [message(3, guid="g1")])):
            delta = se.Delta(new=mails)
            await store.run(functools.partial(se.apply, account_id=A, mailbox_id=box, delta=delta))

        def kill(tx: Tx) -> None:
            q.tombstone(tx, "mailboxes", A, "Mtwo", q.next_seq(tx, A, [mbx.MAILBOX_TYPE]))
            with no_full_recount() as calls:
                se.drop_dead_mailboxes(tx, A)
            assert not calls

        await store.run(kill)
        stored, recounted = await store.run(stored_and_recounted)
        assert stored == recounted
        assert stored["Mone"] == (2, 2, 2, 2)
    finally:
        await store.aclose()
