"""Failed logins counted in the proxy, so that a burst of bad passwords stops here.

Every user reaches the IMAP server from the proxy's address unless the server believes the
forwarded one (``ID x-originating-ip``), so the server's own penalty for bad passwords
would slow down everyone's logins.  The proxy therefore refuses a login that would go
upstream once its client address or its username has failed too often lately, before
asking the server.

Rules
1. A key (an address, a username) is refused while it has ``limit`` failures within the
   last ``window`` seconds; the answer says when the oldest of them leaves the window.
2. A username is counted case-insensitively: spellings of one login share one count.  An
   IPv6 address is counted with its /64 network: one host usually holds the whole /64 and
   could otherwise take a fresh address for each guess.
3. A successful login clears its username's count, not its address's: an attacker who owns
   one good account must not be able to reset the count of the address they guess from.
4. Memory is bounded: at most ``maxsize`` keys per kind, each forgotten ``window`` seconds
   after its last failure (cachetools TTLCache), and at most ``limit`` times per key.
5. :class:`FailureWindow` and :class:`LoginThrottle` are pure: no I/O, time comes from
   ``clock``.  They count one process's failures.
6. Instances that share a cache share the counts (:class:`SharedThrottle`): every failure
   is also written to the cache (``store.login_failures``, one write), and a login that
   would go upstream reads the counts of its two keys there first (one read); Rules 1-3
   hold over the cluster, the cache's rows timed by the wall clock.  A login remembered as
   verified never goes upstream, so it costs nothing here.  The instance keeps its own
   counts too, and they stand in while the cache cannot be read (logged): the throttle
   never fails a login by itself.  They do not refuse on their own otherwise: a success on
   another instance cleared the username's count there.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import cachetools

from imapjmap.errors import ProxyError
from imapjmap.store import login_failures as lf
from imapjmap.store.db import Store

log = logging.getLogger(__name__)

ADDRESS: Final = "address"
USERNAME: Final = "username"

QUEUE: Final = "login-failures"
"""The cache queue (``Store.run``'s ``account``) of the shared counts: never an account id,
so their writes wait for no account's, nor every account's for them (``store.pg`` Rule 3)."""
PRUNE_EVERY: Final = 60.0
"""An instance deletes the cache's expired failures with its first failure after this long."""


def wait_for(times: Iterable[float], limit: int, window: float, now: float) -> float:
    """Seconds until a key with failures at ``times`` may try again; 0 when it may now
    (Rule 1)."""
    recent = sorted(t for t in times if now - t < window)
    if len(recent) < limit:
        return 0.0
    return recent[-limit] + window - now


class FailureWindow:
    """At most ``limit`` failures per key in any ``window`` seconds (Rules 1, 4)."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        maxsize: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: cachetools.TTLCache[str, tuple[float, ...]] = cachetools.TTLCache(
            maxsize=maxsize, ttl=window, timer=clock
        )

    def _recent(self, key: str, now: float) -> tuple[float, ...]:
        return tuple(t for t in self._failures.get(key, ()) if now - t < self.window)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        now = self._clock()
        return wait_for(self._recent(key, now), self.limit, self.window, now)

    def failed(self, key: str) -> None:
        now = self._clock()
        self._failures[key] = (*self._recent(key, now), now)[-self.limit :]

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a login is refused before it reaches the server."""

    what: str  # "address" or "username"
    retry_after: int  # whole seconds, at least 1 (HTTP Retry-After)


class LoginThrottle:
    """Failed logins per client address and per username (Rules 1-3)."""

    def __init__(self, by_address: FailureWindow, by_username: FailureWindow) -> None:
        self._by_address = by_address
        self._by_username = by_username

    def window(self, kind: str) -> FailureWindow:
        return self._by_address if kind == ADDRESS else self._by_username

    def check(self, address: str | None, username: str | None) -> Refusal | None:
        """None when a login of ``username`` from ``address`` may go upstream now."""
        return refusal(
            (kind, self.window(kind).retry_after(key)) for kind, key in keys(address, username)
        )

    def failed(self, address: str | None, username: str | None) -> None:
        for kind, key in keys(address, username):
            self.window(kind).failed(key)

    def succeeded(self, username: str) -> None:
        self._by_username.forget(_fold(username))


def keys(address: str | None, username: str | None) -> list[tuple[str, str]]:
    """What a login is counted under: (kind, key) for its address and its username."""
    out = []
    if address is not None:
        out.append((ADDRESS, _network(address)))
    if username is not None:
        out.append((USERNAME, _fold(username)))
    return out


def refusal(waits: Iterable[tuple[str, float]]) -> Refusal | None:
    """The refusal for the longest of the (kind, seconds) waits, None when none is > 0."""
    what, wait = max(waits, key=lambda item: item[1], default=("", 0.0))
    return Refusal(what, max(1, math.ceil(wait))) if wait > 0 else None


class SharedThrottle:
    """A :class:`LoginThrottle` whose counts, given a cache, are those of every instance
    sharing it (Rule 6); without one, the instance's own."""

    def __init__(
        self,
        local: LoginThrottle,
        store: Store | None,
        *,
        clock: Callable[[], float] = time.time,
        prune_every: float = PRUNE_EVERY,
    ) -> None:
        self._local = local
        self._store = store
        self._clock = clock
        self._prune_every = prune_every
        self._pruned = -math.inf
        # usernames with failures in the cache: a success has a count to clear
        window = local.window(USERNAME).window
        self._seen: cachetools.TTLCache[str, bool] = cachetools.TTLCache(100_000, window, clock)

    async def check(self, address: str | None, username: str | None) -> Refusal | None:
        """None when a login of ``username`` from ``address`` may go upstream now."""
        if self._store is None:
            return self._local.check(address, username)
        now = self._clock()
        counted = keys(address, username)
        asks = []
        for kind, key in counted:
            window = self._local.window(kind)
            asks.append(lf.Ask(kind, key, now - window.window, window.limit))
        try:
            found = await self._store.read_small(lambda tx: lf.recent(tx, asks), account=QUEUE)
        except ProxyError as exc:
            log.warning("failed logins: the cluster's counts cannot be read (%s)", exc)
            return self._local.check(address, username)
        waits = []
        for (kind, key), times in zip(counted, found, strict=True):
            if kind == USERNAME and times:
                self._seen[key] = True
            window = self._local.window(kind)
            waits.append((kind, wait_for(times, window.limit, window.window, now)))
        return refusal(waits)

    async def failed(self, address: str | None, username: str | None) -> None:
        self._local.failed(address, username)
        if self._store is None:
            return
        now = self._clock()
        failures = []
        for kind, key in keys(address, username):
            failures.append(lf.Failure(kind, key, now, now + self._local.window(kind).window))
            if kind == USERNAME:
                self._seen[key] = True
        prune = now if now - self._pruned >= self._prune_every else None
        try:
            await self._store.run(
                lambda tx: lf.record(tx, failures, prune_before=prune), account=QUEUE
            )
        except ProxyError as exc:
            log.warning("failed logins: a failure cannot be written for the cluster (%s)", exc)
            return
        if prune is not None:
            self._pruned = now

    async def succeeded(self, username: str) -> None:
        self._local.succeeded(username)
        key = _fold(username)
        if self._store is None or self._seen.pop(key, None) is None:
            return  # no failure of it seen here or in the cache: nothing to clear
        try:
            await self._store.run(lambda tx: lf.forget(tx, USERNAME, key), account=QUEUE)
        except ProxyError as exc:
            log.warning("failed logins: a username's count cannot be cleared (%s)", exc)


def _fold(username: str) -> str:
    return username.casefold()


def _network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
