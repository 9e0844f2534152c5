"""What a method handler works with: the account, its store rows, its upstream.

The process-wide :class:`~imapjmap.services.Services` are built in :mod:`imapjmap.services`;
:class:`MethodContext` lives for one JMAP request and memoises the refresh, so every call of
one request sees one snapshot of the upstream (a request costs at most one freshness round
trip however many calls it holds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from imapjmap.config import DEFAULT_UPSTREAM, Config, SieveConfig, SmtpConfig
from imapjmap.jmap import state as jstate
from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.limits import QueryLimits
from imapjmap.services import Services
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.upstream.api import Upstream

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Account:
    """The authenticated user's account."""

    account_id: str
    username: str
    epoch: str
    upstream: str = DEFAULT_UPSTREAM  # the name of its upstream (config ``[[upstreams]]``)


class MethodContext:
    """Per-request context handed to every method handler.

    ``upstream`` is the account's mail server as the handlers see it; ``sync`` brings the
    account's cache up to date with it (``force``: even while a push watcher says nothing
    changed).  ``fresh``: the cache is known to be up to date already, so :meth:`refresh`
    has nothing to do unless forced (the unit tests' worlds, whose cache rows are the
    upstream).  ``others``: the contexts of the login's other accounts (the shares of other
    users' folders), for the methods that span two (``Email/copy``, ``Blob/copy``).
    """

    def __init__(
        self,
        services: Services,
        account: Account,
        upstream: Upstream,
        sync: Callable[[bool], Awaitable[None]],
        *,
        fresh: bool = False,
        others: Callable[[str], MethodContext] | None = None,
        share_prefix: str | None = None,
    ) -> None:
        self.services = services
        self.account = account
        self.upstream = upstream
        self._sync = sync
        self._fresh = fresh
        self._others = others
        # the account is a share of another user's folders, all named under this prefix
        self.share_prefix = share_prefix
        # data type -> (its seq, Store.writes_ended when it was read): see seq_of
        self._seqs: dict[str, tuple[int, int]] = {}

    @property
    def cfg(self) -> Config:
        return self.services.cfg

    @property
    def smtp(self) -> SmtpConfig:
        """The SMTP server of the account's upstream."""
        return self.cfg.smtp_for(self.account.upstream)

    @property
    def sieve(self) -> SieveConfig:
        """The ManageSieve settings of the account's upstream."""
        return self.cfg.sieve_for(self.account.upstream)

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def query_limits(self) -> QueryLimits:
        limits = self.cfg.limits
        return QueryLimits(
            max_filter_conditions=limits.max_filter_conditions,
            max_filter_depth=limits.max_filter_depth,
            max_filter_string_length=limits.max_filter_string_length,
            max_sort_comparators=limits.max_sort_comparators,
            max_search_terms=limits.max_search_terms,
        )

    @property
    def account_id(self) -> str:
        return self.account.account_id

    async def refresh(self, *, force: bool = False) -> None:
        """Bring the cache up to date with the upstream, once per request unless forced."""
        if self._fresh and not force:
            return
        await self._sync(force)
        self._fresh = True

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """One read-only transaction for this account, in its fair share of the readers."""
        return await self.store.read(fn, account=self.account_id)

    async def read_small(self, fn: Callable[[Tx], T]) -> T:
        """:meth:`read` of a few indexed rows, on the event loop when the store can (store
        Rule 10); ``fn`` may run twice, so it only reads."""
        return await self.store.read_small(fn, account=self.account_id)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """One write transaction for this account, in its turn on the writer."""
        return await self.store.run(fn, account=self.account_id)

    def encode_state(self, seq: int) -> str:
        return jstate.encode(jstate.State(self.account.epoch, seq))

    async def state(self, data_type: str) -> str:
        seq = await self.read(lambda tx: q.type_state(tx, self.account_id, data_type))
        return self.encode_state(seq)

    async def seq_of(self, data_type: str) -> int:
        """The type's state seq as this request reads it: read once (a small read), again
        only after a write of this process ended (Store.scalar_now: on PostgreSQL on the
        event loop, without a thread).  What the calls of one request answer
        from it (kept answers) is then one snapshot, as their refresh is one; another
        instance's write since is in the states they report, not before them.  On a
        PostgreSQL cache each read is a round trip: Email/query and Email/get of one
        request ask for the Email state once instead of twice."""
        writes = self.store.writes_ended
        known = self._seqs.get(data_type)
        if known is not None and known[1] == writes:
            return known[0]
        sql, params = q.type_state_query(self.account_id, data_type)
        found = await self.store.scalar_now(sql, params, account=self.account_id)
        seq = 0 if found is None else int(found)
        self._seqs[data_type] = (seq, writes)
        return seq

    def check_account(self, account_id: str) -> None:
        if account_id != self.account_id:
            raise MethodError(MethodErrorType.ACCOUNT_NOT_FOUND)

    def other(self, account_id: str) -> MethodContext | None:
        """The context of another account of the same login; None for an id that is none
        of the login's (a cross-account method's ``fromAccountNotFound``)."""
        if account_id == self.account_id:
            return self
        if self._others is None:
            return None
        try:
            return self._others(account_id)
        except MethodError:
            return None
