"""PushSubscription delivery (RFC 8620 §7.2): the URL policy, verification, StateChange POSTs.

Theory of operation
-------------------
A PushSubscription makes this server POST to a URL a client chose, so it is a way to make
the server send requests elsewhere.  Three guards:

1. *URL policy* (:func:`check_url`): the URL must be ``https://`` and its host must resolve
   only to public addresses (not loopback, private, link-local, multicast, reserved...), so
   a client cannot aim the server at its own network.  URLs that start with one of
   ``push.allowed_url_prefixes`` are always accepted (a gateway the operator trusts).  The
   HTTP side re-checks every address it connects to (DNS may change after the check).
2. *Verification*: on create, ONE PushVerification POST goes to the URL; nothing else is sent
   until the client echoes the code with PushSubscription/set (RFC 8620 §7.2.2).
3. *Expiry*: at most ``MAX_EXPIRY`` ahead (RFC 8620 §7.2: with Basic auth the server SHOULD
   limit it; at least 48 hours, SHOULD be at least 7 days); nothing is sent after it.

Each verified, unexpired subscription is one task that POSTs its StateChanges
(:class:`Subscriptions`), fed by one hub listener per account it covers: the login's own,
and each share of other users' folders the login sees (:meth:`Subscriptions.shares_changed`,
told by the HTTP side whenever it asks the server for them; a subscription restored at
start-up covers them from the login's first request on).  Changes of every account
that came meanwhile go out as ONE StateChange (RFC 8620 §7.1 ``changed`` by account).
A POST is retried with exponential backoff on a network error, ``429`` or ``5xx``, up
to ``max_tries`` tries; then that change is dropped (the next one carries newer states
anyway).  ``404``/``410`` mean the push endpoint is gone: the subscription is destroyed.
After a ``429`` the task waits before its next POST, longer each time, and changes that
pile up meanwhile go out as ONE StateChange.

Instances sharing the cache (:mod:`imapjmap.cluster`) each run the delivery tasks of every
subscription they know, but only the one that holds a subscription's delivery role POSTs
its changes: the others drop theirs, so each change goes out once, and another instance
takes the role over when its holder dies.  A subscription created, verified or destroyed
on one instance makes the others read the account's subscriptions again.

Rule 1: an account's deliveries are started and stopped one change at a time (a lock per
        account): a reload reads the cache and acts on what it read before a destroy
        heard meanwhile stops anything, so a reload that read a subscription just before
        its destroy cannot start it again after the destroy stopped it, and no hub
        listener or role of a delivery being stopped is added after it was taken down.
Rule 2: the instance that delivers reads the subscription again before each POST: a
        destroy through another instance stops the POSTs at once, not only once this
        instance has heard of it.

The HTTP client is not here (only ``imapjmap.http`` may import aiohttp): it is a
:class:`PushPoster` that the HTTP app attaches at start-up.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from imapjmap.cluster.api import DELIVER, Coordinator, role_key
from imapjmap.cluster.local import Alone
from imapjmap.errors import CoordinatorUnavailable
from imapjmap.push import ece
from imapjmap.push.hub import Hub, Listener
from imapjmap.store import push as store_push
from imapjmap.store import queries as q
from imapjmap.store.db import Store
from imapjmap.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_EXPIRY: Final = 7 * 24 * 3600.0  # seconds ahead a subscription may last
PUSH_TTL: Final = 86400  # RFC 8030 §5.2 TTL header: seconds a push service may keep it
_THROTTLE_MIN: Final = 5.0
_THROTTLE_MAX: Final = 300.0


class PushPoster(Protocol):
    """POSTs one push message (the HTTP side implements it)."""

    async def post(self, url: str, body: bytes, *, ttl: int, encoding: str | None) -> int:
        """Send ``body`` (JSON, or JSON in the content coding ``encoding``) to ``url``;
        return the HTTP status.

        Raises:
            OSError: the request could not be made (refused address, DNS, connection,
                timeout); the caller may retry.
        """
        ...


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    DROPPED = "dropped"  # given up for this message only
    GONE = "gone"  # the endpoint says the subscription no longer exists


# --- the URL policy ------------------------------------------------------------------------


def allowed_by_prefix(url: str, prefixes: Iterable[str]) -> bool:
    """Whether ``url``, parsed and normalised, falls under one of the allowed prefixes.

    The raw string is never compared: ``http://gw/push/../admin`` is ``http://gw/admin``
    (which is where an HTTP client sends it), ``http://gw.evil.example/`` is not under
    ``http://gw``, and a URL with credentials (``http://gw@elsewhere/``) or a backslash is
    under no prefix.  A prefix is compared part by part: the scheme, then the host exactly,
    then the port (a prefix that ends with ``:`` allows any port; none means the default),
    then the path as a string prefix of the URL's normalised path and query.
    """
    canonical = _canonical(url)
    return canonical is not None and any(_under(canonical, p) for p in prefixes)


@dataclass(frozen=True, slots=True)
class _Url:
    scheme: str
    host: str
    port: int | None  # None: any port (only in a prefix that ends with ":")
    rest: str  # the normalised path, and "?" + query when there is one


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_ENCODED_DOT: Final = re.compile("%2e", re.IGNORECASE)


def _canonical(url: str, *, prefix: bool = False) -> _Url | None:
    if any(c.isspace() or c == "\\" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    any_port = prefix and parts.netloc.endswith(":")
    rest = _remove_dot_segments(_ENCODED_DOT.sub(".", parts.path))
    if parts.query:
        rest += "?" + parts.query
    return _Url(
        scheme,
        parts.hostname,
        None if any_port else (port or _DEFAULT_PORTS[scheme]),
        rest if prefix else (rest or "/"),
    )


def _under(url: _Url, prefix_text: str) -> bool:
    prefix = _canonical(prefix_text, prefix=True)
    if prefix is None:
        return False
    return (
        url.scheme == prefix.scheme
        and url.host == prefix.host
        and (prefix.port is None or url.port == prefix.port)
        and url.rest.startswith(prefix.rest)
    )


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: ``/a/./b/../c`` is ``/a/c``."""
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    return "/".join(out)


def is_public(address: str) -> bool:
    """Whether an IP address is one a push may go to (a global unicast address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True, slots=True)
class UrlRefusal:
    reason: str
    malformed: bool  # True: not an acceptable https URL at all; False: a refused host


async def check_url(url: str, allowed_prefixes: Iterable[str]) -> UrlRefusal | None:
    """Why ``url`` may not be a PushSubscription url, or None when it may.

    Allowed prefixes win; otherwise the URL must be ``https://`` (no credentials, no white
    space) with a host that resolves only to public addresses.
    """
    if allowed_by_prefix(url, allowed_prefixes):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError:
        return UrlRefusal("is not a valid URL", malformed=True)
    if parts.scheme != "https" or not parts.hostname:
        return UrlRefusal("must be an https:// URL", malformed=True)
    if parts.username is not None or any(c.isspace() for c in url):
        return UrlRefusal("must not hold credentials or white space", malformed=True)
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return UrlRefusal(f"host {host[:100]!r} does not resolve", malformed=False)
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(is_public(a) for a in addresses):
        return UrlRefusal(f"host {host[:100]!r} is not a public address", malformed=False)
    return None


# --- delivery --------------------------------------------------------------------------------


class _Pending:
    """The changes a subscription has yet to POST, by account: a newer state of a type
    replaces the older one, so it never grows past accounts times types."""

    def __init__(self) -> None:
        self.changed: dict[str, dict[str, str]] = {}
        self.ready = asyncio.Event()

    def add(self, account_id: str, change: dict[str, str]) -> None:
        self.changed.setdefault(account_id, {}).update(change)
        self.ready.set()

    def take(self) -> dict[str, dict[str, str]]:
        changed, self.changed = self.changed, {}
        self.ready.clear()
        return changed


class _Into(Listener):
    """A hub listener of one of a subscription's accounts, offering into its pending."""

    def __init__(self, account_id: str, types: frozenset[str] | None, pending: _Pending) -> None:
        super().__init__(account_id, types)
        self.pending = pending

    def offer(self, change: dict[str, Any]) -> None:
        filtered = {t: s for t, s in change.items() if self.types is None or t in self.types}
        if filtered:
            self.pending.add(self.account_id, filtered)


@dataclass(eq=False)
class _Delivery:
    task: asyncio.Task[None]
    pending: _Pending
    types: frozenset[str] | None
    listeners: dict[str, Listener] = field(default_factory=dict)  # account id -> its listener


class Subscriptions:
    """The delivery tasks of the verified, unexpired subscriptions of this process."""

    def __init__(self, hub: Hub, store: Store, cluster: Coordinator | None = None) -> None:
        self._hub = hub
        self._store = store
        self._cluster: Coordinator = cluster if cluster is not None else Alone()
        self.poster: PushPoster | None = None  # set by the HTTP app at start-up
        self.max_tries = 5
        self.retry_base = 1.0  # seconds before the first retry; doubles each time
        self._tasks: dict[tuple[str, str], _Delivery] = {}
        self._oneshots: set[asyncio.Task[Any]] = set()
        self._shares: dict[str, tuple[str, ...]] = {}  # login's account id -> its shares
        self._changing: dict[str, asyncio.Lock] = {}  # account id -> its lock (Rule 1)

    def _lock(self, account_id: str) -> asyncio.Lock:
        return self._changing.setdefault(account_id, asyncio.Lock())

    def running(self, account_id: str) -> list[str]:
        """Ids of the account's subscriptions that are being delivered."""
        entries = self._tasks.items()
        return sorted(i for (a, i), d in entries if a == account_id and not d.task.done())

    async def restore(self) -> int:
        """Start delivering every verified, unexpired subscription in the cache."""
        now = time.time()
        rows = await self._store.run(lambda tx: store_push.active(tx, now=now))
        for row in rows:
            await self.activate(row, announce=False)
        return len(rows)

    def send_verification(self, row: store_push.PushSubscriptionRow) -> None:
        """POST the PushVerification object (in the background, with retries)."""
        body = {
            "@type": "PushVerification",
            "pushSubscriptionId": row.id,
            "verificationCode": row.verification_code,
        }
        task = asyncio.get_running_loop().create_task(self._deliver(row, body))
        self._oneshots.add(task)
        task.add_done_callback(self._oneshots.discard)

    async def activate(self, row: store_push.PushSubscriptionRow, *, announce: bool = True) -> None:
        """(Re)start delivery for ``row`` if it is verified and unexpired; else stop it.
        ``announce``: tell the other instances (a change made here, not one heard)."""
        async with self._lock(row.account_id):
            await self._activate(row, announce=announce)

    async def _activate(self, row: store_push.PushSubscriptionRow, *, announce: bool) -> None:
        await self._deactivate(row.account_id, row.id)
        if announce:
            await self._announce(row.account_id)
        if not row.verified or row.expires <= time.time() or self.poster is None:
            return
        pending = _Pending()
        task = asyncio.get_running_loop().create_task(self._run(row, pending))
        delivery = _Delivery(task, pending, frozenset(row.types) if row.types is not None else None)
        self._tasks[(row.account_id, row.id)] = delivery
        for account_id in (row.account_id, *self._shares.get(row.account_id, ())):
            await self._listen(delivery, account_id)
        await self._cluster.want(DELIVER, role_key(row.account_id, row.id))

    async def shares_changed(self, login: str, share_ids: Collection[str]) -> None:
        """The login (its own account id) sees these shares now: its subscriptions carry
        their changes from now on, and no longer those of a share it lost."""
        self._shares[login] = tuple(share_ids)
        async with self._lock(login):
            for (account_id, _), delivery in list(self._tasks.items()):
                if account_id != login or delivery.task.done():
                    continue
                for gone in set(delivery.listeners) - {login, *share_ids}:
                    delivery.pending.changed.pop(gone, None)
                    await self._hub.unsubscribe(delivery.listeners.pop(gone))
                for share_id in share_ids:
                    if share_id not in delivery.listeners:
                        await self._listen(delivery, share_id)

    async def _listen(self, delivery: _Delivery, account_id: str) -> None:
        listener = _Into(account_id, delivery.types, delivery.pending)
        delivery.listeners[account_id] = await self._hub.add(listener)

    async def reload(self, account_id: str) -> None:
        """Another instance changed the account's subscriptions: deliver what the cache
        holds now."""
        async with self._lock(account_id):  # Rule 1: read and act as one change
            now = time.time()
            rows = await self._store.read(
                lambda tx: store_push.of_account(tx, account_id), account=account_id
            )
            live = {row.id: row for row in rows if row.verified and row.expires > now}
            for subscription_id in self.running(account_id):
                if subscription_id not in live:
                    await self._deactivate(account_id, subscription_id)
            running = set(self.running(account_id))
            for row in live.values():
                if row.id not in running:
                    await self._activate(row, announce=False)
        # a share another instance found taken back has lost its cache rows (http.shares
        # Rule 4): the deliveries here stop listening to it too
        shares = self._shares.get(account_id, ())
        if shares:
            kept = await self._store.read(
                lambda tx: [s for s in shares if q.account(tx, s) is not None],
                account=account_id,
            )
            if len(kept) != len(shares):
                await self.shares_changed(account_id, kept)

    async def announce(self, account_id: str) -> None:
        """Tell the other instances to read the account's subscriptions (and shares) again."""
        await self._announce(account_id)

    async def _announce(self, account_id: str) -> None:
        try:
            await self._cluster.subscriptions_changed(account_id)
        except CoordinatorUnavailable as exc:
            # the change is in the cache: the others see it when they next start
            log.warning("push subscriptions of %s not announced: %s", account_id, exc)

    def granted(self, key: str) -> None:
        log.info("push subscription delivery taken over: %s", key)

    async def deactivate(
        self, account_id: str, subscription_id: str, *, announce: bool = True
    ) -> None:
        if announce:
            await self._announce(account_id)
        async with self._lock(account_id):
            await self._deactivate(account_id, subscription_id)

    async def _deactivate(self, account_id: str, subscription_id: str) -> None:
        delivery = self._tasks.pop((account_id, subscription_id), None)
        if delivery is None:
            return
        await self._cluster.drop(DELIVER, role_key(account_id, subscription_id))
        try:
            if delivery.task is not asyncio.current_task():  # else it ends by itself (_run)
                await cancel_and_wait(delivery.task)
        finally:
            await self._unlisten(delivery)  # also when the task never started

    async def _unlisten(self, delivery: _Delivery) -> None:
        listeners, delivery.listeners = delivery.listeners, {}
        for listener in listeners.values():
            await self._hub.unsubscribe(listener)

    async def aclose(self) -> None:
        for account_id, subscription_id in list(self._tasks):
            await self.deactivate(account_id, subscription_id, announce=False)
        await cancel_and_wait(*self._oneshots)

    async def _run(self, row: store_push.PushSubscriptionRow, pending: _Pending) -> None:
        try:
            await self._deliver_changes(row, pending)
        finally:
            key = (row.account_id, row.id)
            delivery = self._tasks.get(key)
            if delivery is not None and delivery.task is asyncio.current_task():
                # it ended by itself (expired, or gone): still listening, and maybe wanting
                # the role; if a change of the account takes it down meanwhile, that
                # change cancels this wait
                async with self._lock(row.account_id):
                    if self._tasks.get(key) is delivery:
                        await self._deactivate(*key)

    async def _deliver_changes(
        self, row: store_push.PushSubscriptionRow, pending: _Pending
    ) -> None:
        """POST the changes until the subscription expires or its endpoint is gone (the
        subscription is destroyed then)."""
        throttle = 0.0
        while True:
            remaining = row.expires - time.time()
            if remaining <= 0:
                log.info("push subscription %s expired", row.id)
                return
            try:
                async with asyncio.timeout(remaining):
                    await pending.ready.wait()
            except TimeoutError:
                continue
            if throttle:
                await asyncio.sleep(throttle)
            changed = pending.take()  # with what piled up meanwhile (RFC 8620 §7.2)
            if not self._cluster.holds(DELIVER, role_key(row.account_id, row.id)):
                continue  # another instance delivers it
            if self._cluster.shared and not await self._still_there(row):
                continue  # Rule 2: destroyed elsewhere; this task stops when told
            body = {"@type": "StateChange", "changed": changed}
            outcome, throttled = await self._deliver_status(row, body)
            throttle = min(max(throttle * 2, _THROTTLE_MIN), _THROTTLE_MAX) if throttled else 0
            if outcome is Outcome.GONE:
                log.info("push subscription %s: the endpoint is gone; destroying it", row.id)
                await self._store.run(lambda tx: store_push.delete(tx, row.account_id, row.id))
                # the others run its delivery too, listening (a watcher kept alive) and
                # ready to POST to the gone endpoint once they take the role over
                await self._announce(row.account_id)
                return

    async def _still_there(self, row: store_push.PushSubscriptionRow) -> bool:
        """Whether the cache still holds the subscription, verified (Rule 2)."""
        now = await self._store.read(
            lambda tx: store_push.get(tx, row.account_id, row.id), account=row.account_id
        )
        return now is not None and now.verified

    async def _deliver(self, row: store_push.PushSubscriptionRow, body: dict[str, Any]) -> Outcome:
        return (await self._deliver_status(row, body))[0]

    async def _deliver_status(
        self, row: store_push.PushSubscriptionRow, body: dict[str, Any]
    ) -> tuple[Outcome, bool]:
        """POST with retries; the outcome, and whether the endpoint asked us to slow down.
        With ``keys`` the message is encrypted (RFC 8291), once for all its tries."""
        poster = self.poster
        if poster is None:
            return Outcome.DROPPED, False
        data = json.dumps(body).encode()
        encoding = None
        if row.keys is not None:
            data, encoding = ece.encrypt(data, ece.parse_keys(row.keys)), "aes128gcm"
        url = row.url
        throttled = False
        for attempt in range(self.max_tries):
            if attempt:
                await asyncio.sleep(self.retry_base * 2 ** (attempt - 1))
            try:
                status = await poster.post(url, data, ttl=PUSH_TTL, encoding=encoding)
            except OSError as exc:
                log.info("push to subscription failed (try %d): %s", attempt + 1, exc)
                continue
            if 200 <= status < 300:
                return Outcome.DELIVERED, throttled
            if status in (404, 410):
                return Outcome.GONE, throttled
            throttled = throttled or status == 429
            if status != 429 and status < 500:
                log.info("push refused with HTTP %d; dropping this message", status)
                return Outcome.DROPPED, throttled
            log.info("push got HTTP %d (try %d)", status, attempt + 1)
        return Outcome.DROPPED, throttled
