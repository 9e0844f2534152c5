"""store/emails.py: ``mailbox_counts`` (MBX-04, RFC 8621 §2: totalEmails, unreadEmails,
totalThreads, unreadThreads over the visible copies) gives what the definition gives, written
as one COUNT(DISTINCT ...) each, on any mix of copies of one Email in one mailbox, hidden
(\\Deleted) copies, destroyed Emails, threads spread over mailboxes, and $seen."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx

A = "Aacct"
BOXES = ("Mone", "Mtwo", "Mempty")

# the definition, one COUNT(DISTINCT ...) a count
REFERENCE = (
    "SELECT COUNT(DISTINCT e.id),"
    " COUNT(DISTINCT CASE WHEN instr(e.keywords, '\"$seen\"') = 0 THEN e.id END),"
    " COUNT(DISTINCT e.thread_id),"
    " COUNT(DISTINCT CASE WHEN instr(e.keywords, '\"$seen\"') = 0 THEN e.thread_id END)"
    " FROM locations l JOIN emails e ON e.account_id = l.account_id AND e.id = l.email_id"
    " WHERE l.account_id = ? AND l.mailbox_id = ? AND l.deleted = 0"
    " AND e.destroyed_seq IS NULL"
)

email = st.tuples(
    st.integers(0, 5),  # thread
    st.booleans(),  # $seen
    st.booleans(),  # destroyed
    # copies: (mailbox, deleted)
    st.lists(st.tuples(st.sampled_from(BOXES[:2]), st.booleans()), max_size=3),
)


async def counted(emails: list[tuple[int, bool, bool, list[tuple[str, bool]]]]) -> Any:
    store = await Store.open(":memory:")

    def fill(tx: Tx) -> tuple[dict[str, Any], dict[str, Any]]:
        q.ensure_account(tx, A, "u")
        for box in BOXES:
            row = q.MailboxRow(A, box, box, box, uidvalidity=1)
            q.insert_mailbox(tx, row, seq=q.next_seq(tx, A, ["Mailbox"]))
        uid = 0
        for n, (thread, seen, destroyed, copies) in enumerate(emails):
            tx.execute(
                "INSERT INTO emails (account_id, id, thread_id, size, received_at, keywords,"
                " created_seq, updated_seq, destroyed_seq) VALUES (?, ?, ?, 1, 1, ?, 1, 1, ?)",
                (
                    A,
                    f"E{n}",
                    f"T{thread}",
                    '{"$seen": true}' if seen else "{}",
                    1 if destroyed else None,
                ),
            )
            for box, deleted in copies:
                uid += 1
                em.put_location(tx, A, em.Location(box, uid, f"E{n}", None, (), deleted))
        reference = {}
        for box in BOXES:
            row = tx.one(REFERENCE, (A, box))
            assert row is not None
            reference[box] = tuple(int(v) for v in row)
        return reference, em.mailbox_counts(tx, A, BOXES)

    try:
        return await store.run(fill)
    finally:
        await store.aclose()


@settings(max_examples=40, deadline=None)
@given(st.lists(email, max_size=12))
async def test_mailbox_counts_are_the_definition(
    emails: list[tuple[int, bool, bool, list[tuple[str, bool]]]],
) -> None:
    """MBX-04: every count as the one-COUNT(DISTINCT)-each definition gives it."""
    reference, counts = await counted(emails)
    assert counts == reference


async def test_mailbox_counts_of_copies_and_threads() -> None:
    """MBX-04: two copies count once; a thread with one unread Email is unread; a hidden
    copy and a destroyed Email count nothing; an empty mailbox counts zeros."""
    reference, counts = await counted(
        [
            (0, True, False, [("Mone", False), ("Mone", False), ("Mtwo", False)]),
            (0, False, False, [("Mone", False)]),
            (1, True, False, [("Mone", False)]),
            (2, False, False, [("Mone", True)]),
            (3, False, True, [("Mone", False)]),
        ]
    )
    assert counts == reference
    assert counts == {"Mone": (3, 1, 2, 1), "Mtwo": (1, 0, 1, 0), "Mempty": (0, 0, 0, 0)}
