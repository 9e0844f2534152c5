"""Find the Email a message at a known (mailbox, UID) became, once a sync has seen it.

A write that creates a message (APPEND for Email/set create) learns its UID from the server
(RFC 4315 APPENDUID), refreshes the cache, then asks here which Email that is.
"""

from __future__ import annotations

from dataclasses import dataclass

from imapjmap.store.db import Tx


@dataclass(frozen=True, slots=True)
class EmailAt:
    """The created properties of the Email at one location (RFC 8621 §4.6)."""

    email_id: str
    thread_id: str
    size: int


def email_at(tx: Tx, account_id: str, mailbox_id: str, uid: int) -> EmailAt | None:
    """The live Email with a visible copy at (mailbox, uid), or None when there is none
    (not synced yet, expunged, or flagged ``\\Deleted``)."""
    found = tx.one(
        "SELECT e.id, e.thread_id, e.size FROM locations AS l"
        " JOIN emails AS e ON e.account_id = l.account_id AND e.id = l.email_id"
        " WHERE l.account_id = ? AND l.mailbox_id = ? AND l.uid = ? AND l.deleted = 0"
        " AND e.destroyed_seq IS NULL",
        (account_id, mailbox_id, uid),
    )
    if found is None:
        return None
    return EmailAt(str(found[0]), str(found[1]), int(found[2]))
