"""Typed reads and writes of uploaded blobs (schema v3 ``blobs``; RFC 8620 §6.1).

Theory of operation: an uploaded blob is stored once per account under an id derived from
its content (the caller computes it), so uploading the same octets twice gives the same
row (CORE-BIN-02).  A row lives until ``expires_at``; every upload of the same content and
every use pushes that back (:func:`touch`).  Expired rows are invisible to :func:`blob` at
once and are deleted lazily by :func:`purge_expired`, which the upload path calls.

Rule 1: like every store module, each function filters on ``account_id``: a blob uploaded
        by one account can never be read through another (a guessed id is not found).
Rule 2: times are Unix seconds passed in by the caller (``now``), so tests control the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from imapjmap.store.db import Tx


@dataclass(frozen=True, slots=True)
class BlobRow:
    account_id: str
    id: str
    type: str
    size: int
    data: bytes
    created_at: float
    expires_at: float


_COLUMNS = "account_id, id, type, size, data, created_at, expires_at"


def put(tx: Tx, row: BlobRow) -> BlobRow:
    """Store an upload; the same id again keeps its bytes and takes the new type and expiry.

    Returns the row as stored (``created_at`` is that of the first upload).
    """
    tx.execute(
        f"INSERT INTO blobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id, id) DO UPDATE SET type = excluded.type,"
        " expires_at = CASE WHEN excluded.expires_at > blobs.expires_at THEN excluded.expires_at"
        " ELSE blobs.expires_at END",
        (row.account_id, row.id, row.type, row.size, row.data, row.created_at, row.expires_at),
    )
    stored = blob(tx, row.account_id, row.id, now=row.created_at)
    assert stored is not None
    return stored


def blob(tx: Tx, account_id: str, blob_id: str, *, now: float) -> BlobRow | None:
    """The account's blob, or None when unknown or expired at ``now``."""
    found = tx.one(
        f"SELECT {_COLUMNS} FROM blobs WHERE account_id = ? AND id = ? AND expires_at > ?",
        (account_id, blob_id, now),
    )
    if found is None:
        return None
    return BlobRow(found[0], found[1], found[2], found[3], bytes(found[4]), found[5], found[6])


def exists(tx: Tx, account_id: str, blob_id: str, *, now: float) -> bool:
    """Whether the account has that blob, unexpired, without reading its octets."""
    return (
        tx.scalar(
            "SELECT 1 FROM blobs WHERE account_id = ? AND id = ? AND expires_at > ?",
            (account_id, blob_id, now),
        )
        is not None
    )


def touch(tx: Tx, account_id: str, blob_id: str, expires_at: float) -> bool:
    """Keep a blob at least until ``expires_at`` (never shortens); False when it is unknown."""
    changed = tx.execute(
        "UPDATE blobs SET expires_at = CASE WHEN expires_at > ? THEN expires_at ELSE ? END"
        " WHERE account_id = ? AND id = ?",
        (expires_at, expires_at, account_id, blob_id),
    )
    return changed == 1


def set_expiry(tx: Tx, account_id: str, blob_id: str, expires_at: float) -> bool:
    """Set the expiry exactly (maintenance and tests); False when the blob is unknown."""
    changed = tx.execute(
        "UPDATE blobs SET expires_at = ? WHERE account_id = ? AND id = ?",
        (expires_at, account_id, blob_id),
    )
    return changed == 1


def purge_expired(tx: Tx, account_id: str, *, now: float) -> int:
    """Delete the account's blobs that expired at or before ``now``; returns how many."""
    return tx.execute(
        "DELETE FROM blobs WHERE account_id = ? AND expires_at <= ?", (account_id, now)
    )


def total_size(tx: Tx, account_id: str, *, now: float) -> int:
    """Octets of the account's unexpired blobs (what its upload quota counts)."""
    return int(
        tx.scalar(
            "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE account_id = ? AND expires_at > ?",
            (account_id, now),
        )
    )


def count(tx: Tx, account_id: str) -> int:
    """Rows the account has, expired or not (diagnostics and tests)."""
    return int(tx.scalar("SELECT COUNT(*) FROM blobs WHERE account_id = ?", (account_id,)))


# -- where an imported message landed ---------------------------------------------------------


def email_at(tx: Tx, account_id: str, mailbox_id: str, uid: int) -> str | None:
    """The Email id of the message at (mailbox, uid), once a sync has seen it; else None.

    Email/import finds the Email it created here from the APPENDUID (RFC 4315) the server
    gave, after refreshing the cache.
    """
    found = tx.scalar(
        "SELECT email_id FROM locations WHERE account_id = ? AND mailbox_id = ? AND uid = ?",
        (account_id, mailbox_id, uid),
    )
    return None if found is None else str(found)
