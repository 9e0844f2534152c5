"""The accounts of other users' folders shared with each login (:mod:`imapjmap.upstream.shares`).

Rules
1. What a login may see is what its server says now: the shares are asked of the server
   (NAMESPACE, a LIST per foreign namespace, the rights) whenever the session is fetched,
   and for an API request whenever this process has not asked yet for that login or the
   refresh of the login's own account listed other shares than when they were last asked
   (an owner shared a folder with it, or took every right back).  The session's ``state``
   depends on them, so a client learns of the change from any response's
   ``sessionState`` (RFC 8620 §2) and fetches the session again.
2. A share's account id comes from the login's own account id (``share_account_id``): an
   account id from another login's session is ``accountNotFound`` for this one, and its
   cache rows, blobs and push events are never this login's.
3. A share's account is a row of the cache's accounts table like any other (its epoch, its
   change counter); its mailboxes are named under its prefix, its sync is its own.
4. A share the server no longer shows (the owner took the rights back) loses its cache rows
   at once: what the login may no longer read is not kept for it.  (A share that vanished
   while the process was down keeps them until ``imapjmap cache prune``.)
5. Instances sharing the cache each know the shares they asked for: a request may name a
   share that another instance found (its session fetched there) or lost.  An account the
   request names that this process does not know as the login's share while the cache holds
   it, or one it knows that the cache no longer holds, has the server asked again first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from imapjmap.http.auth import Authenticated
from imapjmap.methods.context import Account
from imapjmap.services import Services
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.upstream.imap import ImapUpstream
from imapjmap.upstream.shares import Share, share_account_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShareAccount:
    """A share as an account of the login's session."""

    account: Account
    share: Share


class ShareAccounts:
    """Each login's shares, as last asked of its server (Rule 1)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._store = services.store
        self._known: dict[str, tuple[ShareAccount, ...]] = {}  # login's account id -> shares
        # login's account id -> the shares its own account's listing showed when they were
        # last asked for (``ImapPool.share_prefixes``): asked again once the listing differs
        self._basis: dict[str, frozenset[str] | None] = {}

    async def discover(self, who: Authenticated) -> tuple[ShareAccount, ...]:
        """Ask the server what is shared with ``who`` now."""
        login = who.account.account_id
        basis = who.pool.share_prefixes
        found = await ImapUpstream(who.pool).shares()
        ids = [(share_account_id(login, share.prefix), share) for share in found]

        kept = {account_id for account_id, _ in ids}
        gone = [
            s.account.account_id
            for s in self._known.get(login, ())
            if s.account.account_id not in kept
        ]

        def ensure(tx: Tx) -> list[q.AccountRow]:
            for account_id in gone:  # Rule 4
                q.delete_account(tx, account_id)
            return [q.ensure_account(tx, account_id, s.name) for account_id, s in ids]

        rows = await self._store.run(ensure) if ids or gone else []
        for account_id in gone:
            await self._services.drop_share(account_id)
        for account_id, share in ids:
            self._services.add_share(login, account_id, share)
        accounts = tuple(
            ShareAccount(
                Account(row.account_id, share.name, row.epoch, who.account.upstream), share
            )
            for row, (_, share) in zip(rows, ids, strict=True)
        )
        if self._known.get(login) != accounts:
            log.info("account %s: %d shared account(s)", login, len(accounts))
        self._known[login] = accounts
        self._basis[login] = basis
        # the login's PushSubscriptions carry its shares' changes too (RFC 8620 §7.2)
        await self._services.push.subscriptions.shares_changed(login, [i for i, _ in ids])
        if gone:  # and on the other instances, which may not ask for a while (Rule 5)
            await self._services.push.subscriptions.announce(login)
        return accounts

    async def of(self, who: Authenticated, named: Collection[str] = ()) -> tuple[ShareAccount, ...]:
        """The login's shares: as known, unless stale (Rules 1, 5); ``named``: the account
        ids the request names."""
        login = who.account.account_id
        known = self._known.get(login)
        # a listing that changed since the last asking: compared with that listing, not with
        # the shares found, as a server may list no foreign namespace under "*" at all
        if (
            known is None
            or who.pool.share_prefixes != self._basis.get(login)
            or await self._changed_elsewhere(login, known, named)
        ):
            return await self.discover(who)
        return known

    async def _changed_elsewhere(
        self, login: str, known: tuple[ShareAccount, ...], named: Collection[str]
    ) -> bool:
        """Whether the cache tells of another instance's asking that this one missed (Rule 5)."""
        others = set(named) - {login}
        if not others:
            return False
        mine = {s.account.account_id for s in known}

        def cached(tx: Tx) -> set[str]:
            return {i for i in others if q.account(tx, i) is not None}

        in_cache = await self._store.read(cached, account=login)
        return any((i in mine) != (i in in_cache) for i in others)

    def known(self, login: str) -> tuple[str, ...] | None:
        """The accounts of the login's shares (by its own account id) as last asked, None
        before the first asking: what this instance tells another that vouches for a push
        stream of the login there (:mod:`imapjmap.cluster.api`)."""
        found = self._known.get(login)
        return None if found is None else tuple(s.account.account_id for s in found)

    def find(self, who: Authenticated, account_id: str) -> ShareAccount | None:
        """The login's share with that account id, as known (Rule 2)."""
        for share in self._known.get(who.account.account_id, ()):
            if share.account.account_id == account_id:
                return share
        return None
