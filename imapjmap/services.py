"""The long-lived services of one running proxy, built in one place and closed in reverse.

:func:`start_services` builds them in this order, each on what comes before it:

1. the cache (:class:`~imapjmap.store.db.Store`), unless the caller opened it already
   (``serve`` does, to refuse a cache it cannot use before it listens);
2. the IMAP connection pools, one per account, made on first use;
3. each account's sync engine, made on first use, which pokes the push hub when a refresh
   changed something (:meth:`Services.sync_for`);
4. push: the hub, the watchers and PushSubscription delivery;
5. the answers kept in memory (Email/get objects, Email/query results);
6. the purger of old change-log rows;

and the coordinator of the instances sharing the cache (:mod:`imapjmap.cluster`), which the
syncs and push use, before all but the cache.

:meth:`Services.aclose` closes them the other way round: the purger, push (its watchers
use the syncs), the syncs, the pools, and the cache last, always, so the next process can
open it.  Closing what talks to the upstream may take :data:`CLOSE_TIMEOUT` seconds.

The HTTP front end adds what only it uses (the authenticator, the request slots) on top
(``http/app.py``); a method handler reaches these through its ``MethodContext``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Final

from imapjmap.answers.email_objects import EmailObjects
from imapjmap.answers.query_results import QueryResults
from imapjmap.cluster.api import Coordinator
from imapjmap.cluster.local import Alone
from imapjmap.config import Config, cache_password
from imapjmap.imap.pool import ImapPools
from imapjmap.push.service import PushService
from imapjmap.store.db import Store
from imapjmap.store.retention import ChangeLogPurger
from imapjmap.sync.engine import AccountSync
from imapjmap.upstream.imap import ImapUpstream
from imapjmap.upstream.shares import Share

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 1.5
"""Seconds closing push watchers, syncs and IMAP connections may take at shutdown."""


async def open_store(cfg: Config) -> Store:
    """The cache as configured: its file or PostgreSQL database, its readers and the time
    budget of a read."""
    return await Store.open(
        cfg.cache.url or cfg.cache.path,
        readers=cfg.cache.readers,
        readers_per_account=cfg.cache.readers_per_account,
        max_transaction_seconds=cfg.cache.max_transaction_seconds,
        processes=cfg.cache.read_processes,
        password=cache_password(cfg),
    )


@dataclass(slots=True)
class Services:
    """Process-wide resources (one per aiohttp app), made by :func:`start_services`."""

    cfg: Config
    store: Store
    pools: ImapPools
    cluster: Coordinator = field(default_factory=Alone)
    syncs: dict[str, AccountSync] = field(default_factory=dict)
    # a share's account id -> (its login's account id, the share): see add_share
    shares: dict[str, tuple[str, Share]] = field(default_factory=dict)
    push: PushService = field(init=False)
    email_objects: EmailObjects = field(default_factory=EmailObjects)
    query_results: QueryResults = field(default_factory=QueryResults)
    purger: ChangeLogPurger = field(init=False)

    def __post_init__(self) -> None:
        self.push = PushService(
            self.store,
            self.upstream_for,
            self.sync_for,
            poll_interval=self.cfg.push.poll_interval,
            status_interval=self.cfg.push.status_interval,
            cluster=self.cluster,
            quotas_for=self.quotas_for,
        )
        self.purger = ChangeLogPurger(self.store, self.cfg.cache.changes_retention_days)

    def upstream_for(self, account_id: str) -> ImapUpstream | None:
        """The account's mail server over its pool (a share's: over its login's pool);
        None until its login in this process."""
        login, share = self.shares.get(account_id, (account_id, None))
        pool = self.pools.get(login)
        return ImapUpstream(pool, share) if pool is not None else None

    def quotas_for(self, account_id: str) -> ImapUpstream | None:
        """Where push reads the account's quotas: a share has none of its own (the quotas
        the server reports are its login's)."""
        return None if account_id in self.shares else self.upstream_for(account_id)

    def add_share(self, login_account_id: str, account_id: str, share: Share) -> None:
        """``account_id`` is a share of other users' folders that ``login_account_id`` sees
        (``http.shares``): its upstream is that login's, its mailboxes under the prefix."""
        self.shares[account_id] = (login_account_id, share)

    async def drop_share(self, account_id: str) -> None:
        """``account_id`` is no longer shared with its login: forget it and stop its sync."""
        self.shares.pop(account_id, None)
        sync = self.syncs.pop(account_id, None)
        if sync is not None:
            await sync.aclose()

    def sync_for(self, account_id: str) -> AccountSync:
        sync = self.syncs.get(account_id)
        if sync is None:
            _, share = self.shares.get(account_id, (account_id, None))
            prefix = share.prefix if share is not None else ""
            sync = AccountSync(
                self.store,
                account_id,
                on_change=lambda: self.push.hub.poke(account_id),
                prefix=prefix,
                cluster=self.cluster,
            )
            self.syncs[account_id] = sync
        return sync

    async def aclose(self) -> None:
        """Close every service in the reverse order of :func:`start_services`."""
        await self.purger.aclose()
        try:
            # a hung upstream must not keep the process alive: its sockets die with it
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.push.aclose()
                for sync in self.syncs.values():
                    await sync.aclose()
                await self.pools.aclose()
        except TimeoutError:
            log.warning("upstream connections not closed within %.1f s: dropped", CLOSE_TIMEOUT)
        await self.cluster.aclose()
        await self.store.aclose()


async def start_services(cfg: Config, store: Store | None = None) -> Services:
    """Every long-lived service, built in order (module docstring); ``store`` is the cache
    when the caller opened it already."""
    store = store or await open_store(cfg)
    try:
        cluster = coordinator_for(cfg)
        await cluster.start()
    except BaseException:
        await store.aclose()
        raise
    services = Services(cfg, store, ImapPools(cfg.imap), cluster)
    services.purger.start()
    return services


def coordinator_for(cfg: Config) -> Coordinator:
    """The instances' coordinator as configured: PostgreSQL's (``cluster.url``, else the
    cache's own PostgreSQL, ``cache.url``), or none (a SQLite cache without cluster.url)."""
    url = cfg.cluster.url or cfg.cache.url
    if url is None:
        return Alone()
    from imapjmap.cluster.pg import PgCoordinator  # psycopg only where it is used

    return PgCoordinator(
        url,
        password=cache_password(cfg) if cfg.cluster.url is None else None,
        sync_wait=cfg.cluster.sync_wait,
        takeover_interval=cfg.cluster.takeover_interval,
    )
