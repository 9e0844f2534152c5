"""Quota's state in push: the quotas read again when mail came or went.

The server does not say when a quota's usage moves; a message added or removed does move
it.  So when a poke finds that Email's state moved, and someone listens for Quota, the
hub asks :meth:`QuotaFollower.email_moved` to read the quotas again (IMAP: one
``GETQUOTAROOT``) and carries Quota's new state in the same StateChange.

Rule 1: at most one reading per account every ``min_interval`` seconds: a burst of mail
        costs one round trip at once and one more when the interval is over (which then
        pokes the hub itself), never one per message.
Rule 2: a change heard while a reading is under way may have come after its answer: one
        more reading follows, after the interval.
Rule 3: an account whose server reports no quotas, or has no login in this process, is
        never asked.
Rule 4: a failed reading is logged and dropped: the next change of mail tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from imapjmap.errors import ProxyError
from imapjmap.store.db import Store
from imapjmap.sync import quota
from imapjmap.tasks import cancel_and_wait
from imapjmap.upstream.api import QuotaReads

log = logging.getLogger(__name__)

MIN_INTERVAL: Final = 5.0


class QuotaFollower:
    def __init__(
        self,
        store: Store,
        quotas_for: Callable[[str], QuotaReads | None],
        poke: Callable[[str], Awaitable[None]],
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._quotas_for = quotas_for
        self._poke = poke
        self._min_interval = min_interval
        self._clock = clock
        self._last: dict[str, float] = {}  # when each account's last reading started
        self._busy: set[str] = set()  # a reading under way
        self._dirty: set[str] = set()  # mail moved during that reading (Rule 2)
        self._later: dict[str, asyncio.Task[None]] = {}  # a reading due after the interval
        self.readings = 0  # for diagnostics and tests

    async def email_moved(self, account_id: str) -> bool:
        """Email's state moved: read the quotas now, or once the interval is over (Rule 1);
        whether Quota's state moved now."""
        upstream = self._quotas_for(account_id)
        if upstream is None or not upstream.offers_quota:
            return False  # Rule 3
        if account_id in self._later:
            return False  # the reading due has not asked yet: it sees this change
        if account_id in self._busy:
            self._dirty.add(account_id)
            return False
        wait = self._last.get(account_id, -self._min_interval) + self._min_interval
        wait -= self._clock()
        if wait > 0:
            self._schedule(account_id, wait)
            return False
        return await self._read(account_id, upstream)

    async def _read(self, account_id: str, upstream: QuotaReads) -> bool:
        self._busy.add(account_id)
        self._dirty.discard(account_id)
        self._last[account_id] = self._clock()
        self.readings += 1
        try:
            return await quota.refresh(self._store, account_id, upstream)
        except ProxyError as exc:  # Rule 4
            log.info("quota of %s not read after a change of mail: %s", account_id, exc)
            return False
        finally:
            self._busy.discard(account_id)
            if account_id in self._dirty:
                self._schedule(account_id, self._min_interval)

    def _schedule(self, account_id: str, wait: float) -> None:
        if account_id not in self._later:
            task = asyncio.get_running_loop().create_task(self._read_later(account_id, wait))
            self._later[account_id] = task

    async def _read_later(self, account_id: str, wait: float) -> None:
        await asyncio.sleep(wait)
        self._later.pop(account_id, None)  # from here on, a change of mail is one after the answer
        upstream = self._quotas_for(account_id)
        if upstream is not None and await self._read(account_id, upstream):
            await self._poke(account_id)

    async def aclose(self) -> None:
        tasks = list(self._later.values())
        self._later.clear()
        await cancel_and_wait(*tasks)
