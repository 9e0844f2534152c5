"""The coordinator over PostgreSQL: advisory locks for locks and roles, LISTEN/NOTIFY for
messages between instances.

Theory of operation
-------------------
Each instance keeps two connections of its own (``cluster.url``, or the cache's PostgreSQL),
both in autocommit mode:

* the *lock connection* holds this instance's session-level advisory locks: the instance's
  own (its liveness, which the others check), the sync locks of the accounts it refreshes,
  the first-sync locks of the mailboxes it fills in, its roles and the slots it leases.
  A lock is one 64-bit key (:func:`lock_key`) taken with ``pg_try_advisory_lock``, never
  waited for inside PostgreSQL, so one connection serves every account: a sync lock that
  is taken is tried again every few milliseconds until ``sync_wait`` runs out.  PostgreSQL
  releases all of them when the session ends, so a killed instance gives up its roles at
  once (api Rule 1);
* the *listen connection* LISTENs on :data:`CHANNEL`, where every instance sends its
  messages (JSON, see :func:`message`), and hands them to the handlers (api Rule 2).

The election runs every ``takeover_interval`` seconds: each role this instance wants and
does not hold is tried once, so a role whose holder died is taken over within that time.

Instances that listen: an instance says so when its first listener of an account comes and
its last leaves, and answers a newcomer's hello with what it listens to; an instance that
died says nothing, so every ``sweep_interval`` the instances heard of are checked against
their liveness locks, and the dead ones forgotten.

Slots (``maxConcurrentRequests``, ``maxConcurrentUpload`` per account over the cluster):
slot ``n`` of an account is the lock :func:`slot_key`, ``n`` from 0 to ``limit - 1``, so
at most ``limit`` are held at once, each by a live instance.  An instance *leases* them: a
slot given back stays held, idle, for ``linger`` seconds, and the next request of the
account there takes it without a round trip (a client's requests come one after the other,
and a balancer spreads them over a few instances).  An instance that finds every slot held
says so (``w``, at most every :data:`_WANT_INTERVAL` seconds while it finds none); the
others then give their idle slots up at once, and for :data:`_CONTENDED` seconds give every
slot back at once instead of keeping it, each time saying so (``f``), which wakes the
waiting instance's :meth:`wait_slot`.  A slot of a dead instance is free when PostgreSQL
ends its session; the waiting instance finds it on its next try.

Vouching (a push token opened where its login is not held): the asking instance sends the
claim with a request id (``v``); each instance that can say answers it (``y``, naming the
asker, and with a yes the accounts of the login's shares as it knows them), and the asker
takes the first yes.  A no is not final at once (an instance may hold a login whose
password has changed since): the asker waits :data:`_VOUCH_GRACE` more seconds for a yes.

An instance that dies frees its locks when PostgreSQL ends its session: at once when its
process is killed (its machine closes the connection), within about 25 s when its machine
vanishes (:data:`_KEEPALIVE`).

Rule 1: losing either connection loses every lock: the roles are reported lost
        (:attr:`on_lost`), a sync lock still held by a refresh is not released twice, and
        the connections are made again with backoff; meanwhile a sync lock cannot be had
        (:class:`~imapjmap.errors.CoordinatorUnavailable`, ``serverUnavailable``).  A slot
        taken on a lost connection is not given back twice either (its token is the
        connection's generation).
Rule 2: the URL (which may carry a password) is never logged; libpq also reads the
        password from ``PGPASSWORD`` or a password file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import psycopg

from imapjmap.cluster.api import (
    AccountHandler,
    ChangeHandler,
    RoleHandler,
    SharesHandler,
    Vouched,
    VouchHandler,
)
from imapjmap.errors import CoordinatorUnavailable
from imapjmap.tasks import cancel_and_wait

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CHANNEL: Final = "imapjmap_cluster"
_INSTANCE, _SYNC, _FILL, _SLOT = "instance", "sync", "fill", "slot"
_WANT_INTERVAL: Final = 0.25
"""Seconds between two asks of an instance for one account's slots of one kind."""
_ORPHAN_LINGER: Final = 1.0
"""Seconds a slot taken for a request cancelled meanwhile stays idle before it is given back."""
_CONTENDED: Final = 1.0
"""Seconds an instance gives an account's slots back at once after another asked for one."""
_VOUCH_GRACE: Final = 0.25
"""Seconds a vouch waits for a yes after the first no."""
_VOUCH_SHARES: Final = 200
"""The most shares a yes names: a NOTIFY payload holds under 8000 bytes (an id is 27)."""
_BACKOFF_MAX: Final = 10.0
_KEEPALIVE: Final = (10, 5, 3)
"""Seconds idle before PostgreSQL probes an instance's lock session, seconds between probes,
probes unanswered before it ends the session (and frees its locks): about 25 s."""
_CONNECT_TIMEOUT: Final = 5  # seconds (libpq's connect_timeout is whole seconds)


def lock_key(namespace: str, key: str) -> int:
    """The advisory lock key of ``key`` in ``namespace``: 64 bits of a digest, so two keys
    share a lock about once in 2**64 (and then only wait for each other)."""
    digest = hashlib.blake2b(f"{namespace}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def slot_key(kind: str, account_id: str, number: int) -> int:
    """The advisory lock key of slot ``number`` of the account's ``kind`` slots."""
    return lock_key(_SLOT, f"{kind} {account_id} {number}")


@dataclass(slots=True)
class _Lease:
    """The slots of one kind of one account that this instance holds."""

    generation: int  # of the lock connection they are held on
    held: list[int] = field(default_factory=list)  # slot numbers
    busy: int = 0  # how many of them are in use (the others are idle)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one change on the server at once
    timer: asyncio.TimerHandle | None = None  # gives the idle ones back
    asked: float = float("-inf")  # when this instance last asked the others for a slot
    wanted_until: float = float("-inf")  # another instance waits for a slot until then


def message(kind: str, instance: str, **fields: Any) -> str:
    """One NOTIFY payload: ``c`` a change (``a`` account, ``e`` epoch, ``s`` type → seq),
    ``l`` listening (``a``, ``on``), ``h`` a newcomer's hello, ``p`` PushSubscriptions
    changed (``a``), ``w`` a slot wanted and ``f`` a slot freed (``n`` its kind, ``a``),
    ``v`` a vouch asked (``a``, ``q`` the claim, ``r`` a request id) and ``y`` its answer
    (``r``, ``t`` the asker, ``ok``, ``s`` the shares' accounts with a yes)."""
    return json.dumps({"k": kind, "i": instance, **fields}, separators=(",", ":"))


class PgCoordinator:
    """Coordination over one PostgreSQL database (module docstring)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        sync_wait: float = 10.0,
        takeover_interval: float = 1.0,
        sweep_interval: float = 5.0,
    ) -> None:
        self._url = url  # Rule 2: never logged
        self._password = password  # else libpq's: PGPASSWORD, a password file
        self._sync_wait = sync_wait
        self._takeover_interval = takeover_interval
        self._sweep_interval = sweep_interval
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.on_change: ChangeHandler | None = None
        self.on_granted: RoleHandler | None = None
        self.on_lost: RoleHandler | None = None
        self.on_subscriptions: AccountHandler | None = None
        self.on_listened: AccountHandler | None = None
        self.on_vouch: VouchHandler | None = None
        self.on_shares: SharesHandler | None = None
        self._vouches: dict[str, asyncio.Queue[Vouched | None]] = {}  # request id → answers
        self._locks: psycopg.AsyncConnection[Any] | None = None
        self._listen: psycopg.AsyncConnection[Any] | None = None
        self._wanted: set[tuple[str, str]] = set()
        self._held: set[tuple[str, str]] = set()
        self._listening: set[str] = set()  # accounts with listeners here
        self._elsewhere: dict[str, set[str]] = {}  # account → instances listening there
        self._task: asyncio.Task[None] | None = None
        self._generation = 0  # connections made so far: a lock of an older one is gone
        self._leases: dict[tuple[str, str], _Lease] = {}  # (kind, account) → its slots here
        self._slot_waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        self._chores: set[asyncio.Task[Any]] = set()  # slots being taken or given back

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (raising when PostgreSQL cannot be reached), then keep connected."""
        try:
            await self._connect()
        except psycopg.Error as exc:
            raise CoordinatorUnavailable(f"cluster: cannot connect: {_reason(exc)}") from None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        try:
            await cancel_and_wait(task, *self._chores)
        finally:
            self._forget_leases()
            await self._disconnect()

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        extra: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT}
        if self._password is not None:
            extra["password"] = self._password
        return await psycopg.AsyncConnection.connect(self._url, autocommit=True, **extra)

    async def _connect(self) -> None:
        locks = await self._open()
        try:
            listen = await self._open()
        except BaseException:
            await locks.close()
            raise
        self._locks, self._listen = locks, listen
        self._generation += 1
        # a machine that vanishes (no TCP reset) must not keep its locks for the system's
        # default of two hours: PostgreSQL probes this session's client after _KEEPALIVE
        await locks.execute(
            "SELECT set_config('tcp_keepalives_idle', %s, false),"
            " set_config('tcp_keepalives_interval', %s, false),"
            " set_config('tcp_keepalives_count', %s, false)",
            tuple(str(v) for v in _KEEPALIVE),
        )
        await locks.execute("SELECT pg_advisory_lock(%s)", (lock_key(_INSTANCE, self.instance),))
        await listen.execute(f"LISTEN {CHANNEL}")
        await self._send(message("h", self.instance))
        for account_id in self._listening:
            await self._send(message("l", self.instance, a=account_id, on=True))

    async def _disconnect(self) -> None:
        locks, listen = self._locks, self._listen
        self._locks = self._listen = None
        for conn in (locks, listen):
            if conn is not None:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()

    async def _run(self) -> None:
        """Follow the messages and hold the election; on a lost connection, lose every
        lock and connect again (Rule 1)."""
        backoff = 0.5
        while True:
            try:
                if self._locks is None:
                    await self._connect()
                    log.info("cluster: connected again")
                backoff = 0.5
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._follow())
                    group.create_task(self._elect())
            except* (psycopg.Error, OSError, CoordinatorUnavailable) as failed:
                exc = failed.exceptions[0]
                log.warning("cluster: connection lost (%s); every lock given up", _reason(exc))
            await self._lost_everything()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _lost_everything(self) -> None:
        await self._disconnect()
        self._forget_leases()
        held, self._held = self._held, set()
        elsewhere = sorted(self._elsewhere)
        self._elsewhere.clear()
        for account_id in elsewhere:
            await self._listened(account_id)
        for role, key in sorted(held):
            if self.on_lost is not None:
                await self.on_lost(role, key)

    # --- locks --------------------------------------------------------------------------

    async def _query(self, sql: str, params: tuple[Any, ...]) -> Any:
        conn = self._locks
        if conn is None:
            raise CoordinatorUnavailable("cluster: not connected to PostgreSQL")
        try:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone()
        except (psycopg.Error, OSError) as exc:
            # the run loop notices too (its connection is the same) and connects again
            raise CoordinatorUnavailable(f"cluster: {_reason(exc)}") from None
        return row[0] if row is not None else None

    async def _try_lock(self, key: int) -> bool:
        return bool(await self._query("SELECT pg_try_advisory_lock(%s)", (key,)))

    async def _unlock(self, key: int, generation: int) -> None:
        if generation != self._generation:
            return  # taken on a connection since lost: PostgreSQL released it then
        with contextlib.suppress(CoordinatorUnavailable):
            await self._query("SELECT pg_advisory_unlock(%s)", (key,))

    @contextlib.asynccontextmanager
    async def sync_lock(self, account_id: str) -> AsyncIterator[bool]:
        key = lock_key(_SYNC, account_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._sync_wait
        delay = 0.005
        while not await self._try_lock(key):
            if loop.time() >= deadline:
                log.info("account %s: another instance's sync outlasted the wait", account_id)
                yield False
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        generation = self._generation  # the connection it is held on
        try:
            yield True
        finally:
            await self._unlock(key, generation)

    async def try_fill(self, account_id: str, mailbox_id: str) -> bool:
        return await self._try_lock(lock_key(_FILL, f"{account_id} {mailbox_id}"))

    async def end_fill(self, account_id: str, mailbox_id: str) -> None:
        await self._unlock(lock_key(_FILL, f"{account_id} {mailbox_id}"), self._generation)

    # --- roles ----------------------------------------------------------------------------

    async def want(self, role: str, key: str) -> None:
        self._wanted.add((role, key))
        if (role, key) not in self._held:
            with contextlib.suppress(CoordinatorUnavailable):  # the election tries again
                await self._try_role(role, key)

    async def drop(self, role: str, key: str) -> None:
        self._wanted.discard((role, key))
        if (role, key) in self._held:
            self._held.discard((role, key))
            await self._unlock(lock_key(role, key), self._generation)

    def holds(self, role: str, key: str) -> bool:
        return (role, key) in self._held

    async def _try_role(self, role: str, key: str) -> None:
        if not await self._try_lock(lock_key(role, key)):
            return
        if (role, key) not in self._wanted or (role, key) in self._held:
            # dropped while we asked, or granted twice (session locks stack): one is enough
            await self._unlock(lock_key(role, key), self._generation)
            return
        self._held.add((role, key))
        log.info("cluster: took %s %s", role, key)
        if self.on_granted is not None:
            await self.on_granted(role, key)

    async def _elect(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self._sweep_interval
        while True:
            await asyncio.sleep(self._takeover_interval)
            for role, key in sorted(self._wanted - self._held):
                await self._try_role(role, key)
            self._sweep_leases()
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + self._sweep_interval
                await self._sweep()

    # --- slots ---------------------------------------------------------------------------

    def _lease(self, kind: str, account_id: str) -> _Lease:
        lease = self._leases.get((kind, account_id))
        if lease is None or lease.generation != self._generation:
            lease = self._leases[kind, account_id] = _Lease(self._generation)
        return lease

    async def take_slot(self, kind: str, account_id: str, limit: int) -> int | None:
        while True:
            lease = self._lease(kind, account_id)
            if lease.busy < len(lease.held):  # an idle one: no round trip
                lease.busy += 1
                return lease.generation
            # the round trip runs on even if this request is cancelled meanwhile: a lock
            # PostgreSQL granted is then known, idle, and given back (never leaked)
            if not await asyncio.shield(self._chore(self._grab(lease, kind, account_id, limit))):
                break
        now = asyncio.get_running_loop().time()
        if now - lease.asked >= _WANT_INTERVAL:
            lease.asked = now
            await self._send(message("w", self.instance, n=kind, a=account_id))
        return None

    async def _grab(self, lease: _Lease, kind: str, account_id: str, limit: int) -> bool:
        """Take one more slot for the lease, idle; False when the cluster holds all of them
        (True without a round trip when the lease has an idle one, or was forgotten)."""
        async with lease.lock:  # two tries at once in one session would take one slot twice
            if lease.generation != self._generation:
                raise CoordinatorUnavailable("cluster: the connection to PostgreSQL was lost")
            if lease.busy < len(lease.held) or self._leases.get((kind, account_id)) is not lease:
                return True
            free = [n for n in range(limit) if n not in lease.held]
            if not free:
                return False
            keys = [slot_key(kind, account_id, n) for n in free]
            # LIMIT 1 stops at the first lock taken: the keys after it are not tried
            got = await self._query(
                "SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k) LIMIT 1",
                (keys,),
            )
            if got is None:
                return False
            if lease.generation != self._generation:
                raise CoordinatorUnavailable("cluster: the connection to PostgreSQL was lost")
            lease.held.append(free[keys.index(got)])
            if lease.timer is None:  # its taker may be gone: then it is given back
                lease.timer = asyncio.get_running_loop().call_later(
                    _ORPHAN_LINGER, lambda: self._chore(self._give_idle(kind, account_id))
                )
            return True

    async def give_slot(self, kind: str, account_id: str, token: int, *, linger: float) -> None:
        lease = self._leases.get((kind, account_id))
        if lease is None or lease.generation != token or lease.busy <= 0:
            return  # taken on a lost connection: PostgreSQL gave it up then (Rule 1)
        lease.busy -= 1
        loop = asyncio.get_running_loop()
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        if linger > 0 and loop.time() >= lease.wanted_until:
            lease.timer = loop.call_later(
                linger, lambda: self._chore(self._give_idle(kind, account_id))
            )
            return
        # given back before the caller goes on, even if it is cancelled meanwhile
        await asyncio.shield(self._chore(self._give_idle(kind, account_id)))

    async def wait_slot(self, kind: str, account_id: str, timeout: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        waiters = self._slot_waiters.setdefault((kind, account_id), set())
        waiters.add(woken)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await woken
        finally:
            waiters.discard(woken)
            if not waiters and self._slot_waiters.get((kind, account_id)) is waiters:
                del self._slot_waiters[kind, account_id]

    def _chore(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
        return task

    async def _give_idle(self, kind: str, account_id: str) -> None:
        """Give the lease's idle slots back to PostgreSQL; say so if someone waits."""
        lease = self._leases.get((kind, account_id))
        if lease is None:
            return
        async with lease.lock:
            if lease.timer is not None:
                lease.timer.cancel()
                lease.timer = None
            idle = len(lease.held) - lease.busy
            if idle <= 0 or lease.generation != self._generation:
                return
            freed, lease.held = lease.held[-idle:], lease.held[:-idle]
            keys = [slot_key(kind, account_id, n) for n in freed]
            with contextlib.suppress(CoordinatorUnavailable):  # then PostgreSQL freed them
                await self._query(
                    "SELECT bool_and(pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS k",
                    (keys,),
                )
        if asyncio.get_running_loop().time() < lease.wanted_until:
            with contextlib.suppress(CoordinatorUnavailable):
                await self._send(message("f", self.instance, n=kind, a=account_id))

    def _sweep_leases(self) -> None:
        """Forget the accounts whose slots are all given back (no await in between: a
        :meth:`take_slot` holds its lease's lock before it awaits anything)."""
        now = asyncio.get_running_loop().time()
        for key, lease in list(self._leases.items()):
            if not lease.held and not lease.lock.locked() and now > lease.wanted_until:
                del self._leases[key]

    def _forget_leases(self) -> None:
        for lease in self._leases.values():
            if lease.timer is not None:
                lease.timer.cancel()
        self._leases.clear()

    def _slot_wanted(self, kind: str, account_id: str) -> None:
        lease = self._leases.get((kind, account_id))
        if lease is None:
            return  # none held here
        lease.wanted_until = asyncio.get_running_loop().time() + _CONTENDED
        if lease.busy < len(lease.held):
            self._chore(self._give_idle(kind, account_id))

    def _slot_freed(self, kind: str, account_id: str) -> None:
        for woken in self._slot_waiters.get((kind, account_id), ()):
            if not woken.done():
                woken.set_result(None)

    # --- listeners and messages -------------------------------------------------------------

    async def listening(self, account_id: str, *, on: bool) -> None:
        if on:
            self._listening.add(account_id)
        else:
            self._listening.discard(account_id)
        with contextlib.suppress(CoordinatorUnavailable):
            await self._send(message("l", self.instance, a=account_id, on=on))

    def listened_elsewhere(self, account_id: str) -> bool:
        return bool(self._elsewhere.get(account_id))

    async def _listened(self, account_id: str) -> None:
        if self.on_listened is not None:
            await self.on_listened(account_id)

    async def vouch(self, account_id: str, claim: str, timeout: float) -> Vouched | None:
        request = secrets.token_hex(8)
        answers: asyncio.Queue[Vouched | None] = asyncio.Queue()
        self._vouches[request] = answers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await self._send(message("v", self.instance, a=account_id, q=claim, r=request))
            while (remaining := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        answer = await answers.get()
                except TimeoutError:
                    break
                if answer is not None:
                    return answer
                deadline = min(deadline, loop.time() + _VOUCH_GRACE)
        except CoordinatorUnavailable:
            pass
        finally:
            del self._vouches[request]
        return None

    async def publish(self, account_id: str, epoch: str, seqs: Mapping[str, int]) -> None:
        await self._send(message("c", self.instance, a=account_id, e=epoch, s=dict(seqs)))

    async def subscriptions_changed(self, account_id: str) -> None:
        await self._send(message("p", self.instance, a=account_id))

    async def _send(self, payload: str) -> None:
        await self._query("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def _follow(self) -> None:
        conn = self._listen
        if conn is None:
            raise CoordinatorUnavailable("cluster: not connected to PostgreSQL")
        async for notify in conn.notifies():
            try:
                body = json.loads(notify.payload)
                sender = body["i"]
            except (ValueError, KeyError, TypeError):
                log.warning("cluster: a message that is not ours on %s", CHANNEL)
                continue
            if sender != self.instance:
                await self._heard(sender, body)

    async def _heard(self, sender: str, body: dict[str, Any]) -> None:
        kind = body.get("k")
        account_id = body.get("a")
        if kind == "h":
            for mine in sorted(self._listening):
                await self._send(message("l", self.instance, a=mine, on=True))
        elif kind == "l" and isinstance(account_id, str):
            await self._heard_listening(sender, account_id, on=body.get("on") is True)
        elif kind == "v" and isinstance(account_id, str):
            await self._asked(sender, account_id, body)
        elif kind == "y":
            self._answered(body)
        elif kind == "c" and isinstance(account_id, str) and self.on_change is not None:
            seqs = body.get("s")
            epoch = body.get("e")
            if isinstance(seqs, dict) and isinstance(epoch, str):
                clean = {t: s for t, s in seqs.items() if isinstance(s, int)}
                await self.on_change(account_id, epoch, clean)
        elif kind == "p" and isinstance(account_id, str) and self.on_subscriptions is not None:
            await self.on_subscriptions(account_id)
        elif kind in ("w", "f") and isinstance(account_id, str):
            slots = body.get("n")
            if isinstance(slots, str):
                if kind == "w":
                    self._slot_wanted(slots, account_id)
                else:
                    self._slot_freed(slots, account_id)

    async def _heard_listening(self, sender: str, account_id: str, *, on: bool) -> None:
        there = self._elsewhere.setdefault(account_id, set())
        was = bool(there)
        if on:
            there.add(sender)
        else:
            there.discard(sender)
            if not there:
                del self._elsewhere[account_id]
        if was != bool(there):
            await self._listened(account_id)

    async def _asked(self, sender: str, account_id: str, body: dict[str, Any]) -> None:
        """Another instance asks for a vouch: answer it if this one can say."""
        claim, request = body.get("q"), body.get("r")
        if self.on_vouch is None or not isinstance(claim, str) or not isinstance(request, str):
            return
        verdict = self.on_vouch(account_id, claim)
        if verdict is None:
            return
        shares = self.on_shares(account_id) if verdict and self.on_shares is not None else None
        if shares is not None and len(shares) > _VOUCH_SHARES:
            log.warning(
                "account %s: a push stream elsewhere carries %d of its %d shares",
                account_id,
                _VOUCH_SHARES,
                len(shares),
            )
        named = list(shares or ())[:_VOUCH_SHARES]
        await self._send(message("y", self.instance, r=request, t=sender, ok=verdict, s=named))

    def _answered(self, body: dict[str, Any]) -> None:
        answers = self._vouches.get(str(body.get("r"))) if body.get("t") == self.instance else None
        if answers is None:
            return
        shares = body.get("s")
        named = tuple(i for i in shares if isinstance(i, str)) if isinstance(shares, list) else ()
        answers.put_nowait(Vouched(named) if body.get("ok") is True else None)

    async def _sweep(self) -> None:
        """Forget the listeners of instances that died without a word."""
        instances = {i for there in self._elsewhere.values() for i in there}
        if not instances:
            return
        keys = {lock_key(_INSTANCE, i): i for i in instances}
        conn = self._locks
        if conn is None:
            raise CoordinatorUnavailable("cluster: not connected to PostgreSQL")
        cursor = await conn.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = ANY(%s)",
            (list(keys),),
        )
        alive = {keys[row[0]] for row in await cursor.fetchall() if row[0] in keys}
        for account_id in list(self._elsewhere):
            there = self._elsewhere[account_id] & alive
            if there:
                self._elsewhere[account_id] = there
            else:
                del self._elsewhere[account_id]
                await self._listened(account_id)


def _reason(exc: BaseException) -> str:
    """A connection error without the connection string (Rule 2)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
