"""Failed logins as every instance sharing the cache sees them (schema v5 ``login_failures``).

Rule 1: a row is keyed by what the throttle counts (``http.throttle``): a kind ("address",
        "username") and its key (an address or IPv6 /64, a folded username).  Never a
        password, nor anything derived from one.
Rule 2: one row per failure; a row stops counting at ``expires`` and is deleted by a later
        :func:`record` that prunes.  A key holds about ``limit`` rows at most: the throttle
        refuses a login at its limit before it can fail again, so only the logins that were
        in flight together can add more.
Rule 3: times are Unix seconds passed in by the caller, so tests control the clock; every
        instance must agree on the time within a few seconds (NTP).
Rule 4: each function is one statement, or several sent together (``Tx.all_of``): on
        PostgreSQL a check is one round trip, a failure one write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from imapjmap.store.db import Tx


class Ask(NamedTuple):
    """The failures of ``key`` after ``since``: the ``limit`` latest are enough."""

    kind: str
    key: str
    since: float
    limit: int


class Failure(NamedTuple):
    kind: str
    key: str
    at: float
    expires: float


_RECENT = (
    "SELECT at FROM login_failures WHERE kind = ? AND key = ? AND at > ? ORDER BY at DESC LIMIT ?"
)


def recent(tx: Tx, asks: Sequence[Ask]) -> list[list[float]]:
    """For each ask, the times of its latest failures after ``since``, newest first."""
    if not asks:
        return []
    found = tx.all_of(*((_RECENT, (a.kind, a.key, a.since, a.limit)) for a in asks))
    return [[float(row[0]) for row in rows] for rows in found]


def record(tx: Tx, failures: Sequence[Failure], *, prune_before: float | None = None) -> None:
    """Add failures (one statement); with ``prune_before``, delete every row of any key
    that expired by then as well (Rule 2)."""
    if failures:
        values = ", ".join("(?, ?, ?, ?)" for _ in failures)
        tx.execute(
            f"INSERT INTO login_failures (kind, key, at, expires) VALUES {values}",
            [value for failure in failures for value in failure],
        )
    if prune_before is not None:
        tx.execute("DELETE FROM login_failures WHERE expires <= ?", (prune_before,))


def forget(tx: Tx, kind: str, key: str) -> int:
    """Delete every failure of one key; returns how many there were."""
    return tx.execute("DELETE FROM login_failures WHERE kind = ? AND key = ?", (kind, key))


def count(tx: Tx) -> int:
    """Rows held, expired or not (diagnostics and tests)."""
    return int(tx.scalar("SELECT count(*) FROM login_failures"))
