"""Gmail mode's grace as every instance sharing the cache sees it (schema v6 ``write_grace``).

Rule 1: a row says that an Email of the account was written lately and until when
        (``ends``, Unix seconds) a copy of it that vanished is to be kept
        (:class:`imapjmap.sync.gmail.Grace`).  A newer write moves ``ends``.
Rule 2: rows that ended are deleted by the account's next :func:`note`; none is read once
        ended.
Rule 3: times are passed in by the caller, so tests control the clock; every instance must
        agree on the time within a few seconds (NTP).
Rule 4: only a refresh that found a copy gone reads the table (:func:`active`, one
        statement in that refresh's write transaction): a request pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Collection

from imapjmap.store.db import Tx


def note(
    tx: Tx,
    account_id: str,
    written: Collection[str],
    destroyed: Collection[str],
    *,
    ends: float,
    now: float,
) -> None:
    """Start or extend the grace of ``written`` until ``ends``, end that of ``destroyed``
    (their copies must go at once), and delete the account's rows that ended by ``now``."""
    tx.execute("DELETE FROM write_grace WHERE account_id = ? AND ends <= ?", (account_id, now))
    gone = sorted(set(destroyed) - set(written))
    if gone:
        marks = ", ".join("?" for _ in gone)
        tx.execute(
            f"DELETE FROM write_grace WHERE account_id = ? AND email_id IN ({marks})",
            [account_id, *gone],
        )
    if written:
        tx.executemany(
            "INSERT OR REPLACE INTO write_grace (account_id, email_id, ends) VALUES (?, ?, ?)",
            [(account_id, email_id, ends) for email_id in sorted(written)],
        )


def active(tx: Tx, account_id: str, now: float) -> dict[str, float]:
    """The account's Emails still in their grace at ``now``, with its end."""
    rows = tx.all(
        "SELECT email_id, ends FROM write_grace WHERE account_id = ? AND ends > ?",
        (account_id, now),
    )
    return {str(email_id): float(ends) for email_id, ends in rows}
