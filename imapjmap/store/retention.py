"""The change-log retention: what ``cache.changes_retention_days`` promises.

Theory of operation: ``Foo/changes`` needs the tombstones of destroyed rows and ``seq_log``
(when each seq was taken) only as far back as clients may ask.  :class:`ChangeLogPurger`
deletes what is older than the retention, in the background, for every cached account.

Rule 1: one pass every ``interval`` seconds (the first shortly after start) visits every
        account; a pass that finds nothing old costs one small query per account.
Rule 2: one transaction deletes at most ``batch`` rows, and the pass yields to the event loop
        between transactions, so requests interleave with a long purge and the cache is
        never held for long.
Rule 3: purging a tombstone raises its type's floor, so a state older than what was purged
        gets ``cannotCalculateChanges`` instead of an incomplete answer
        (``queries.purge_tombstones``, ``methods.standard.check_since``).
Rule 4: a pass that fails is logged and tried again at the next interval; it never stops
        the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from imapjmap.errors import ProxyError
from imapjmap.store import queries as q
from imapjmap.store.db import Store
from imapjmap.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DAY: Final = 86400.0
INTERVAL: Final = 3600.0
FIRST_DELAY: Final = 60.0
BATCH: Final = 500


async def purge_account(store: Store, account_id: str, *, before: float, batch: int = BATCH) -> int:
    """Delete the account's change records older than ``before``; returns rows deleted."""
    total = 0
    while True:
        deleted = await store.run(
            lambda tx: q.purge_changes_before(tx, account_id, before=before, limit=batch),
            account=account_id,  # in that account's queue: its requests go first in turn
        )
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)  # Rule 2: let waiting requests in between two batches


async def purge_all(store: Store, *, before: float, batch: int = BATCH) -> int:
    """One pass over every cached account (Rule 1); returns rows deleted."""
    total = 0
    for account_id in await store.read(q.account_ids):
        total += await purge_account(store, account_id, before=before, batch=batch)
    return total


class ChangeLogPurger:
    """The background task of Rules 1-4.  :meth:`start` it, :meth:`aclose` it."""

    def __init__(
        self,
        store: Store,
        retention_days: float,
        *,
        interval: float = INTERVAL,
        first_delay: float = FIRST_DELAY,
        batch: int = BATCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retention = retention_days * DAY
        self._interval = interval
        self._first_delay = first_delay
        self._batch = batch
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.passes = 0  # completed passes (for tests and diagnostics)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-log purge")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        delay = self._first_delay
        while True:
            await asyncio.sleep(delay)
            delay = self._interval
            try:
                deleted = await purge_all(
                    self._store, before=self._clock() - self._retention, batch=self._batch
                )
            except ProxyError as exc:  # Rule 4: the cache is busy or failing; try later
                log.warning("change-log purge failed, retrying in %gs: %s", delay, exc)
                continue
            except Exception:
                log.exception("change-log purge failed, retrying in %gs", delay)
                continue
            self.passes += 1
            if deleted:
                log.info("change-log purge: deleted %d records older than the retention", deleted)
