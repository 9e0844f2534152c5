"""Gmail label locations: the ``locations`` rows that Gmail mode derives from X-GM-LABELS.

In Gmail mode (:mod:`imapjmap.sync.gmail`) a message's labels are written as locations
in the labels' mailboxes with ``uid = -(its UID in All Mail)``: never an IMAP UID, so
everything that talks to IMAP skips rows with ``uid < 0``, while every reader of
``locations`` (mailboxIds, counts, ``inMailbox``) sees the labels as mailboxes.
"""

from __future__ import annotations

from imapjmap.store import emails as em
from imapjmap.store.db import Tx


def labels_at(tx: Tx, account_id: str, all_mail_uid: int) -> dict[str, em.Location]:
    """mailbox id → label location of the All Mail message with this UID."""
    rows = tx.all(
        "SELECT mailbox_id, uid, email_id, modseq, flags, deleted FROM locations"
        " WHERE account_id = ? AND uid = ?",
        (account_id, -all_mail_uid),
    )
    return {
        r[0]: em.Location(r[0], r[1], r[2], r[3], tuple(r[4].split()) if r[4] else (), bool(r[5]))
        for r in rows
    }


def set_labels(
    tx: Tx,
    account_id: str,
    all_mail_uid: int,
    email_id: str,
    mailbox_ids: set[str],
    flags: tuple[str, ...],
    deleted: bool,
) -> set[str]:
    """Make the label locations of one All Mail message exactly ``mailbox_ids``; returns
    the mailboxes whose membership changed (their counts need updating)."""
    old = labels_at(tx, account_id, all_mail_uid)
    changed = set(old) ^ mailbox_ids
    for mailbox_id in set(old) - mailbox_ids:
        em.remove_location(tx, account_id, mailbox_id, -all_mail_uid)
    for mailbox_id in mailbox_ids:
        want = em.Location(mailbox_id, -all_mail_uid, email_id, None, flags, deleted)
        if old.get(mailbox_id) != want:
            em.put_location(tx, account_id, want)
            changed.add(mailbox_id)
    return changed


def drop_labels(tx: Tx, account_id: str, all_mail_uid: int) -> tuple[set[str], set[str]]:
    """Remove the label locations of one All Mail message: (email ids, mailbox ids)."""
    old = labels_at(tx, account_id, all_mail_uid)
    for mailbox_id in old:
        em.remove_location(tx, account_id, mailbox_id, -all_mail_uid)
    return {loc.email_id for loc in old.values()}, set(old)


def drop_all_labels(tx: Tx, account_id: str) -> tuple[set[str], set[str]]:
    """Remove every label location of the account (All Mail was reset)."""
    rows = tx.all(
        "SELECT DISTINCT email_id, mailbox_id FROM locations WHERE account_id = ? AND uid < 0",
        (account_id,),
    )
    tx.execute("DELETE FROM locations WHERE account_id = ? AND uid < 0", (account_id,))
    return {r[0] for r in rows}, {r[1] for r in rows}


def email_at(tx: Tx, account_id: str, mailbox_id: str, uid: int) -> str | None:
    """The email id of the location (mailbox, uid), visible or not."""
    row = tx.one(
        "SELECT email_id FROM locations WHERE account_id = ? AND mailbox_id = ? AND uid = ?",
        (account_id, mailbox_id, uid),
    )
    return None if row is None else str(row[0])
