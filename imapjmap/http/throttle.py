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
5. Pure: no I/O, time comes from ``clock``.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import cachetools


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
        recent = self._recent(key, now)
        if len(recent) < self.limit:
            return 0.0
        return recent[-self.limit] + self.window - now

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

    def check(self, address: str | None, username: str | None) -> Refusal | None:
        """None when a login of ``username`` from ``address`` may go upstream now."""
        waits = []
        if address is not None:
            waits.append(("address", self._by_address.retry_after(_network(address))))
        if username is not None:
            waits.append(("username", self._by_username.retry_after(_fold(username))))
        what, wait = max(waits, key=lambda item: item[1], default=("", 0.0))
        return Refusal(what, max(1, math.ceil(wait))) if wait > 0 else None

    def failed(self, address: str | None, username: str | None) -> None:
        if address is not None:
            self._by_address.failed(_network(address))
        if username is not None:
            self._by_username.failed(_fold(username))

    def succeeded(self, username: str) -> None:
        self._by_username.forget(_fold(username))


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
