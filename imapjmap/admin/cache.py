"""``imapjmap cache prune`` and ``imapjmap cache reset``: maintenance writes on the cache.

The running proxy keeps each account's state in memory (its epoch, the states it handed
out, the syncs and push watchers under way), which rows deleted under it would contradict:
these commands refuse while a proxy answers at the configured address (the caller's
check, :func:`imapjmap.admin.running.answers`), unless forced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from imapjmap.store import queries as q
from imapjmap.store import retention
from imapjmap.store.db import Store, Tx

DAY = retention.DAY


@dataclass(frozen=True, slots=True)
class Pruned:
    change_rows: int  # change-log rows past the retention, deleted
    accounts: list[str]  # accounts dropped for want of a login


async def prune(
    store: Store, *, retention_days: float, unused_days: float | None, now: float | None = None
) -> Pruned:
    """Purge the change log past the retention now (what the proxy does hourly), and with
    ``unused_days`` drop the accounts with no verified login for that long (they are
    cached again from the IMAP server at their next login)."""
    now = time.time() if now is None else now
    dropped: list[str] = []
    if unused_days is not None:
        before = now - unused_days * DAY

        def drop_unused(tx: Tx) -> list[str]:
            ids = q.accounts_unused_since(tx, before)
            for account_id in ids:
                q.delete_account(tx, account_id)
            return ids

        dropped = await store.run(drop_unused)
    rows = await retention.purge_all(store, before=now - retention_days * DAY)
    return Pruned(rows, dropped)


async def reset(store: Store, username: str | None) -> int:
    """Drop the rows of the account named ``username`` (its login or its id), or of every
    account;
    returns how many accounts were dropped."""

    def drop(tx: Tx) -> int:
        if username is None:
            return q.delete_all_accounts(tx)
        ids = q.accounts_named(tx, username)
        for account_id in ids:
            q.delete_account(tx, account_id)
        return len(ids)

    return await store.run(drop)
