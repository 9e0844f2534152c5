"""Wires the hub to the upstream watchers: a watcher runs exactly while its account has at
least one push listener (an EventSource, a WebSocket with push enabled, a PushSubscription).

A watcher needs the account's upstream, which exists only once the user has logged in
during this process: a PushSubscription restored at start-up listens without a watcher
until then, and :meth:`PushService.resume` (called on every authenticated request) starts it.

Instances sharing the cache (:mod:`imapjmap.cluster`) run one watcher per account between
them: an instance that could watch an account (it has listeners and the upstream) *wants*
the account's watch role, and runs the watcher while it holds it; the others hear the
holder's changes through the hub.  When the holder dies, one of them takes the role over
(``cluster.takeover_interval``); alone, the role is granted at once.  An instance with the
upstream wants the role also while only other instances have listeners: a browser's push
stream may be open on one that never logged the user in (``http.push_token`` Rule 6), and
it has nothing to watch with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from imapjmap.cluster.api import DELIVER, WATCH, Coordinator
from imapjmap.cluster.local import Alone
from imapjmap.push.hub import Hub
from imapjmap.push.quota import QuotaFollower
from imapjmap.push.subscriptions import Subscriptions
from imapjmap.push.watcher import Watched, Watcher
from imapjmap.store.db import Store
from imapjmap.sync.engine import AccountSync
from imapjmap.upstream.api import QuotaReads

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL: Final = 60.0
DEFAULT_STATUS_INTERVAL: Final = 2.0


class PushService:
    def __init__(
        self,
        store: Store,
        upstream_for: Callable[[str], Watched | None],
        sync_for: Callable[[str], AccountSync],
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
        cluster: Coordinator | None = None,
        quotas_for: Callable[[str], QuotaReads | None] | None = None,
    ) -> None:
        self._cluster: Coordinator = cluster if cluster is not None else Alone()
        self.hub = Hub(store, self._cluster)
        self.quotas: QuotaFollower | None = None
        if quotas_for is not None:  # Quota's state in push (push.quota)
            self.quotas = QuotaFollower(store, quotas_for, self.hub.poke)
            self.hub.on_email_moved = self.quotas.email_moved
        self._upstream_for = upstream_for  # None until the account's login
        self._sync_for = sync_for
        self._poll_interval = poll_interval
        self._status_interval = status_interval
        self.watchers: dict[str, Watcher] = {}
        self.subscriptions = Subscriptions(self.hub, store, self._cluster)
        self.hub.on_first_listener = self._start
        self.hub.on_last_listener = self._last_listener
        self._cluster.on_change = self.hub.heard
        self._cluster.on_granted = self._granted
        self._cluster.on_lost = self._lost
        self._cluster.on_subscriptions = self.subscriptions.reload
        self._cluster.on_listened = self._listened_elsewhere

    async def resume(self, account_id: str) -> None:
        """Start the account's watcher if it has listeners but none runs (cheap otherwise)."""
        if account_id not in self.watchers and self._listened(account_id):
            await self._start(account_id)

    def _listened(self, account_id: str) -> bool:
        return bool(self.hub.listeners(account_id)) or self._cluster.listened_elsewhere(account_id)

    async def _listened_elsewhere(self, account_id: str) -> None:
        """Other instances' listeners of the account came, or all left (module docstring)."""
        if self._listened(account_id):
            await self._start(account_id)
        else:
            await self._stop(account_id)

    async def _last_listener(self, account_id: str) -> None:
        # a listener may have come back while the coordinator was told of the last one
        if not self._listened(account_id):
            await self._stop(account_id)

    async def _start(self, account_id: str) -> None:
        if account_id in self.watchers:
            return
        if self._upstream_for(account_id) is None:
            return  # no login yet: nothing to watch with (listeners are authenticated)
        if self._cluster.holds(WATCH, account_id):
            self._watch(account_id)
            return
        await self._cluster.want(WATCH, account_id)

    async def _granted(self, role: str, key: str) -> None:
        if role == WATCH:
            self._watch(key)
        elif role == DELIVER:
            self.subscriptions.granted(key)

    def _watch(self, account_id: str) -> None:
        upstream = self._upstream_for(account_id)
        if account_id in self.watchers or upstream is None:
            return

        async def poke() -> None:
            await self.hub.poke(account_id)

        watcher = Watcher(
            account_id,
            upstream,
            self._sync_for(account_id),
            poke,
            self._poll_interval,
            self._status_interval,
        )
        self.watchers[account_id] = watcher
        watcher.start()
        log.info("push: watching account %s", account_id)

    async def _lost(self, role: str, key: str) -> None:
        """The coordinator lost the role (its connection): another instance may hold it now."""
        if role == WATCH:
            await self._stop_watcher(key)

    async def _stop(self, account_id: str) -> None:
        await self._cluster.drop(WATCH, account_id)
        await self._stop_watcher(account_id)

    async def _stop_watcher(self, account_id: str) -> None:
        watcher = self.watchers.pop(account_id, None)
        if watcher is not None:
            await watcher.stop()
            log.info("push: stopped watching account %s", account_id)

    async def aclose(self) -> None:
        await self.subscriptions.aclose()
        if self.quotas is not None:
            await self.quotas.aclose()
        for account_id in list(self.watchers):
            await self._stop(account_id)
