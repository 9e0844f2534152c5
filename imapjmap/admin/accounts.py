"""``imapjmap accounts``: the accounts in the cache, for people (a table) or scripts (JSON).

Read-only: the cache is SQLite in WAL mode, so this reads a consistent snapshot while the
proxy writes, and never makes it wait.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from imapjmap.config import Config
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx


async def summaries(store: Store) -> list[q.AccountSummary]:
    def read(tx: Tx) -> list[q.AccountSummary]:
        found = (q.account_summary(tx, account_id) for account_id in q.account_ids(tx))
        return [summary for summary in found if summary is not None]

    return await store.read(read)


def sync_state(summary: q.AccountSummary) -> str:
    """Where the account's first sync stands."""
    if summary.selectable == 0:
        return "not started"
    if summary.synced < summary.selectable:
        return "in progress"
    return "complete"


def upstream(cfg: Config, summary: q.AccountSummary) -> str:
    """The name of the upstream serving the account's login now (``[[upstreams]]``), or
    ``-`` when none does (its domain left the configuration)."""
    found = cfg.upstream_for(summary.username)
    return found.name if found is not None else "-"


def as_json(rows: Sequence[q.AccountSummary], cfg: Config) -> list[dict[str, Any]]:
    return [
        {
            "account_id": r.account_id,
            "username": r.username,
            "upstream": upstream(cfg, r),
            "last_login": _iso(r.last_login),
            "created": _iso(r.created_at),
            "emails": r.emails,
            "mailboxes": r.mailboxes,
            "mailboxes_listed": r.selectable,
            "mailboxes_synced": r.synced,
            "first_sync_complete": sync_state(r) == "complete",
        }
        for r in rows
    ]


HEADINGS = (
    "ACCOUNT", "USER", "UPSTREAM", "LAST LOGIN (UTC)", "EMAILS", "MAILBOXES", "SYNCED",
    "FIRST SYNC",
)  # fmt: skip
_NUMERIC = frozenset({4, 5, 6})  # right-aligned columns


def table(rows: Sequence[q.AccountSummary], cfg: Config) -> str:
    """A plain-text table, one line per account (or a line saying there is none)."""
    if not rows:
        return "no accounts in the cache\n"
    cells = [HEADINGS] + [
        (
            r.account_id,
            r.username,
            upstream(cfg, r),
            _minute(r.last_login),
            str(r.emails),
            str(r.mailboxes),
            f"{r.synced}/{r.selectable}",
            sync_state(r),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADINGS))]
    lines = (
        "  ".join(
            cell.rjust(width) if i in _NUMERIC else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    )
    return "\n".join(lines) + "\n"


def _when(at: float | None) -> datetime.datetime | None:
    return None if at is None else datetime.datetime.fromtimestamp(at, datetime.UTC)


def _iso(at: float | None) -> str | None:
    when = _when(at)
    return None if when is None else when.isoformat(timespec="seconds")


def _minute(at: float | None) -> str:
    when = _when(at)
    return "unknown" if when is None else when.strftime("%Y-%m-%d %H:%M")
