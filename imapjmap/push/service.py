"""Wires the hub to the upstream watchers: a watcher runs exactly while its account has at
least one push listener (an EventSource, a WebSocket with push enabled, a PushSubscription).

A watcher needs the account's IMAP pool, which exists only once the user has logged in
during this process: a PushSubscription restored at start-up listens without a watcher
until then, and :meth:`PushService.resume` (called on every authenticated request) starts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from imapjmap.imap.pool import ImapPool, ImapPools
from imapjmap.push.hub import Hub
from imapjmap.push.subscriptions import Subscriptions
from imapjmap.push.watcher import Watcher
from imapjmap.store.db import Store
from imapjmap.sync.engine import AccountSync
from imapjmap.upstream.api import RefreshSource

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL: Final = 60.0
DEFAULT_STATUS_INTERVAL: Final = 2.0


class PushService:
    def __init__(
        self,
        store: Store,
        pools: ImapPools,
        sync_for: Callable[[str], AccountSync],
        source_for: Callable[[ImapPool], RefreshSource],
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
    ) -> None:
        self.hub = Hub(store)
        self._pools = pools
        self._sync_for = sync_for
        self._source_for = source_for  # the refreshes' reads over an account's pool
        self._poll_interval = poll_interval
        self._status_interval = status_interval
        self.watchers: dict[str, Watcher] = {}
        self.subscriptions = Subscriptions(self.hub, store)
        self.hub.on_first_listener = self._start
        self.hub.on_last_listener = self._stop

    async def resume(self, account_id: str) -> None:
        """Start the account's watcher if it has listeners but none runs (cheap otherwise)."""
        if account_id not in self.watchers and self.hub.listeners(account_id):
            await self._start(account_id)

    async def _start(self, account_id: str) -> None:
        pool = self._pools.get(account_id)
        if pool is None or account_id in self.watchers:
            return  # no login yet: nothing to watch with (listeners are authenticated)

        async def poke() -> None:
            await self.hub.poke(account_id)

        watcher = Watcher(
            account_id,
            pool,
            self._sync_for(account_id),
            poke,
            self._poll_interval,
            self._status_interval,
            source=self._source_for(pool),
        )
        self.watchers[account_id] = watcher
        watcher.start()
        log.info("push: watching account %s", account_id)

    async def _stop(self, account_id: str) -> None:
        watcher = self.watchers.pop(account_id, None)
        if watcher is not None:
            await watcher.stop()
            log.info("push: stopped watching account %s", account_id)

    async def aclose(self) -> None:
        await self.subscriptions.aclose()
        for account_id in list(self.watchers):
            await self._stop(account_id)
