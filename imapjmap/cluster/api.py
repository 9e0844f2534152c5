"""What an instance asks of the other instances sharing its cache (:class:`Coordinator`).

Theory of operation
-------------------
Instances that share one cache (several ``imapjmap serve`` processes on one SQLite file, or
several machines on one PostgreSQL cache) serve any request of any account: a load
balancer may send each request of a client elsewhere.  What must then happen once in the
whole cluster, not once per instance, goes through the coordinator:

* the *sync lock* of an account: two instances never refresh (or first-sync a mailbox of)
  the same account at the same time, whatever the other's requests do;
* *roles* held by one instance at a time: the upstream watcher of an account
  (:data:`WATCH`) and the delivery of a PushSubscription (:data:`DELIVER`).  Every instance
  that could take a role *wants* it; one holds it, and when its holder dies another takes it
  over within seconds;
* *state changes* published by the instance whose refresh or write made them, for the
  push listeners (EventSource, WebSocket) of every other instance;
* *who listens*: an instance reads an account's states after a change only when someone
  listens somewhere, so each instance says when its first listener of an account comes and
  its last one goes;
* *vouching* for a browser's push token (:mod:`imapjmap.http.push_token` Rule 6): an
  instance without the account's login asks the instances that hold it, and the one that
  says yes names the accounts of the shares of other users' folders the login sees, so
  the stream carries their changes too;
* the *slots* of an account's per-account limits (:data:`REQUEST`, :data:`UPLOAD`): at most
  ``limit`` of them are held at once in the whole cluster, whichever instances hold them.

:class:`~imapjmap.cluster.local.Alone` is the coordinator of an instance that shares its
cache with nobody (every lock and role is its own at once, nothing is published);
:class:`~imapjmap.cluster.pg.PgCoordinator` coordinates over PostgreSQL.

Rule 1: a lock or role is held by a live instance only: the coordinator that holds it
        loses it when it dies (PostgreSQL's session advisory locks die with the session).
Rule 2: a handler the coordinator calls (a change heard, a role granted or lost) is called
        on the event loop, one at a time, and must not wait for long.
Rule 3: nothing here is in the cache: a coordinator holds no data, only locks and messages,
        and the cache stays the one source of states (``store.queries.next_seq``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Protocol

WATCH: Final = "watch"
"""The role of an account's upstream watcher (its key is the account id)."""
DELIVER: Final = "deliver"
"""The role of a PushSubscription's delivery (its key is account id and subscription id)."""

REQUEST: Final = "request"
"""The slots of ``maxConcurrentRequests``."""
UPLOAD: Final = "upload"
"""The slots of ``maxConcurrentUpload``."""

ChangeHandler = Callable[[str, str, Mapping[str, int]], Awaitable[None]]
"""(account id, cache epoch, type → seq) of a change another instance published."""
RoleHandler = Callable[[str, str], Awaitable[None]]
"""(role, key) of a role granted to, or lost by, this instance."""
AccountHandler = Callable[[str], Awaitable[None]]
"""(account id) of something another instance changed for this account."""
VouchHandler = Callable[[str, str], bool | None]
"""(account id, claim) → whether the claim is good, None when this instance cannot say
(it does not hold the account's login)."""
SharesHandler = Callable[[str], Sequence[str] | None]
"""(account id) → the accounts of the shares its login sees, as this instance last asked
the server; None when it has not asked."""


@dataclass(frozen=True, slots=True)
class Vouched:
    """An instance's yes to a push token's claim, with the accounts of the login's shares
    (:attr:`Coordinator.on_shares` there)."""

    shares: tuple[str, ...] = ()


class Coordinator(Protocol):
    """The other instances, as one instance sees them (module docstring)."""

    @property
    def shared(self) -> bool:
        """Whether other instances may exist (False: every lock and role is ours at once)."""
        ...

    on_change: ChangeHandler | None
    on_granted: RoleHandler | None
    on_lost: RoleHandler | None
    on_subscriptions: AccountHandler | None
    on_listened: AccountHandler | None
    """Called when other instances' push listeners of the account came or all left."""
    on_vouch: VouchHandler | None
    on_shares: SharesHandler | None

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def sync_lock(self, account_id: str) -> AbstractAsyncContextManager[bool]:
        """Hold the account's sync lock while inside; True when held, False when another
        instance held it for longer than the configured wait (then sync nothing: the
        holder's sync is on its way, and the cache is as fresh as it made it)."""
        ...

    async def try_fill(self, account_id: str, mailbox_id: str) -> bool:
        """Take the first-sync lock of a mailbox without waiting: False when another
        instance is filling it in (held until :meth:`end_fill`)."""
        ...

    async def end_fill(self, account_id: str, mailbox_id: str) -> None: ...

    async def want(self, role: str, key: str) -> None:
        """This instance could take ``role``: take it now or as soon as it is free
        (:attr:`on_granted` is called then)."""
        ...

    async def drop(self, role: str, key: str) -> None:
        """This instance no longer wants ``role`` (it gives it up if it holds it)."""
        ...

    def holds(self, role: str, key: str) -> bool: ...

    async def listening(self, account_id: str, *, on: bool) -> None:
        """This instance's first push listener of the account came (``on``) or its last left."""
        ...

    def listened_elsewhere(self, account_id: str) -> bool:
        """Whether another instance has push listeners of the account."""
        ...

    async def vouch(self, account_id: str, claim: str, timeout: float) -> Vouched | None:
        """The first yes of an instance that can say (:attr:`on_vouch`) that ``claim`` is
        good, within ``timeout`` seconds (None when none answers yes by then)."""
        ...

    async def publish(self, account_id: str, epoch: str, seqs: Mapping[str, int]) -> None:
        """Tell the other instances that these types of the account moved to these seqs."""
        ...

    async def subscriptions_changed(self, account_id: str) -> None:
        """Tell the other instances to read the account's PushSubscriptions again."""
        ...

    async def take_slot(self, kind: str, account_id: str, limit: int) -> int | None:
        """One of the account's ``limit`` slots of ``kind``, without waiting: a token for
        :meth:`give_slot`, or None when the cluster holds all of them (then the instances
        that hold one idle are asked to give it up; :meth:`wait_slot` wakes when one
        does).  A slot is held until given back, or until its instance dies (Rule 1).

        Raises:
            CoordinatorUnavailable: the cluster cannot say.
        """
        ...

    async def give_slot(self, kind: str, account_id: str, token: int, *, linger: float) -> None:
        """Give a slot back.  The instance may keep it idle for up to ``linger`` seconds
        (its next :meth:`take_slot` then costs nothing) unless another instance waits;
        else it is free for the others on return (even if the caller was cancelled)."""
        ...

    async def wait_slot(self, kind: str, account_id: str, timeout: float) -> None:
        """Return when another instance gave up a slot of ``kind`` of the account that
        this one asked for, or after ``timeout`` seconds (a holder that died says nothing)."""
        ...


def role_key(*parts: str) -> str:
    """One key from several parts (an account id and a subscription id): ids never hold
    a space (RFC 8620 §1.2)."""
    return " ".join(parts)
