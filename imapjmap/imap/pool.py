"""Per-account pools of logged-in IMAP sessions.

Theory of operation
-------------------
Each account has at most ``imap.pool_size`` connections.  :meth:`ImapPool.session` lends
one out for the duration of an ``async with`` block; inside it nobody else uses it.

Rule 1: a semaphore bounds the connections lent out or being opened; which idle
        connection to lend is decided synchronously (no await between looking and taking).
Rule 2: an idle connection that already has the wanted mailbox selected is preferred, so
        a FETCH after a sync of the same mailbox costs no SELECT.  A borrower that wants
        no particular mailbox may name one it would rather find selected (``prefer``: the
        refresh's anchor, see ``sync.engine``); it then deals with the selection itself.
        One may also name a mailbox whose connection it must leave idle (``avoid``: a first
        sync's fill leaves the refresh the connection that keeps the anchor open); it then
        gets another, a new one if need be.
Rule 3: a connection comes back to the pool only if it is healthy: anything that broke the
        wire (timeout, cancellation, BAD, lost connection) discards it.  A tagged NO does
        not — the wire is still in sync.
Rule 4: a connection idle for longer than ``imap.idle_timeout`` is closed instead of lent;
        one idle for a while is probed with NOOP first, so a server-side timeout costs a
        reconnect, not a failed request.
Rule 5: once the server refuses the pool's credentials for a new connection (the password
        changed upstream, the token expired), the pool says so (``refused``) until a fresh
        login with its credentials is adopted: the front end then checks the client's
        credentials again instead of letting every request fail one more login upstream,
        each counting against the proxy's own address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from imapjmap.config import ImapConfig
from imapjmap.errors import AuthenticationFailed, ImapCommandFailed, ImapUnavailable, ProxyError
from imapjmap.imap.session import BearerToken, ImapSession
from imapjmap.upstream.profiles import Profile, choose

log = logging.getLogger(__name__)

Connector = Callable[[ImapConfig, str, str], Awaitable[ImapSession]]

_PROBE_AFTER_S = 30.0  # idle longer than this: NOOP before lending it out


class ImapPool:
    """The connections of one account."""

    def __init__(
        self,
        cfg: ImapConfig,
        username: str,
        password: str,
        *,
        connector: Connector = ImapSession.connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self.username = username
        self._password = password
        self._connector = connector
        self._clock = clock
        self._idle: list[ImapSession] = []
        self._slots = asyncio.Semaphore(cfg.pool_size)
        # searches that read every message use a server core each (imap.searches_per_account)
        self.searches = asyncio.Semaphore(cfg.searches_per_account)
        self._busy = 0  # connections lent out, being opened, or leaving a mailbox
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.capabilities: frozenset[str] = frozenset()
        # the server's profile, from the last connection opened (before any: the
        # configuration's alone, e.g. imap.gmail = "on")
        self.profile: Profile = choose(frozenset(), {}, cfg)
        self.refused = False  # Rule 5
        # the prefixes of the shares (other users' folders) the last listing of the login's
        # own account showed; None before one (upstream.imap_refresh, http.shares)
        self.share_prefixes: frozenset[str] | None = None
        # connections opened before the last renew() are closed when next given back
        self._generation = 0
        self._born: weakref.WeakKeyDictionary[ImapSession, int] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<ImapPool {self.username!r} idle={len(self._idle)} busy={self._busy}>"

    @property
    def imap_config(self) -> ImapConfig:
        """The server this pool connects to (ManageSieve is found beside it)."""
        return self._cfg

    @property
    def idle_count(self) -> int:
        """Open connections waiting in the pool."""
        return len(self._idle)

    @property
    def busy_count(self) -> int:
        """Connections lent out, being opened, or leaving a mailbox."""
        return self._busy

    def matches_password(self, password: str) -> bool:
        return password == self._password and type(password) is type(self._password)

    def renew_token(self, token: BearerToken) -> bool:
        """Take a fresh OAuth token for new connections (the open ones stay logged in);
        False when this pool logs in with a password."""
        if not isinstance(self._password, BearerToken):
            return False
        self._password = token
        return True

    def login_password(self) -> str:
        """The password this account logged in with, for SMTP AUTH as the same user
        (``smtp.auth = "user"``).  Held in memory only; never log it."""
        return self._password

    def adopt(self, session: ImapSession) -> None:
        """Take a freshly logged-in session (the one that verified the login) as idle.

        It is closed instead when the pool is full: connections lent out count too.
        """
        self.refused = False  # these credentials work again (Rule 5)
        if self._closed or len(self._idle) + self._busy >= self._cfg.pool_size:
            self._spawn(session.close())
            return
        self.capabilities, self.profile = session.capabilities, session.profile
        self._born[session] = self._generation
        self._idle.append(session)

    def renew(self) -> None:
        """Replace every connection open now by a new one as each is next needed: a server
        may keep what a session first saw of other users' folders for the session's life
        (Dovecot lists the owners sharing with a login once per session)."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for session in idle:
            self._spawn(session.close())

    @contextlib.asynccontextmanager
    async def session(
        self,
        mailbox: str | None = None,
        *,
        readonly: bool = False,
        prefer: str | None = None,
        avoid: str | None = None,
    ) -> AsyncIterator[ImapSession]:
        """Lend a session; with ``mailbox``, one that has it selected; without, preferably
        one with ``prefer`` selected, else one with nothing selected, and never an idle
        one with ``avoid`` selected (Rule 2).

        Raises:
            ImapUnavailable: no connection could be made (or the pool is closed).
        """
        if self._closed:
            raise ImapUnavailable("the IMAP pool is closed")
        await self._slots.acquire()
        self._busy += 1
        session: ImapSession | None = None
        try:
            if self._closed:  # closed while this borrower waited for a slot
                raise ImapUnavailable("the IMAP pool is closed")
            for old in self._evict_expired():
                self._spawn(old.close())  # in the background: a cancellation cannot leak it
            session = self._pick_idle(mailbox if mailbox is not None else prefer, avoid)
            session = await self._ready(session)
            if mailbox is not None:
                current = session.selected
                if current is None or current.name != mailbox or current.readonly != readonly:
                    await session.select(mailbox, readonly=readonly)
                else:
                    # Another connection may have changed the mailbox since this one
                    # selected it, and until this session hears about it (any command will
                    # do) the new UIDs do not exist for it: a STORE or UID EXPUNGE of them
                    # is a silent no-op and a FETCH returns nothing.
                    await session.noop()
            yield session
        except ImapCommandFailed:
            self._give_back(session)
            raise
        except BaseException:
            self._give_back(session, force_discard=True)
            raise
        else:
            self._give_back(session)

    @contextlib.asynccontextmanager
    async def spare_session(self, *, avoid: str | None = None) -> AsyncIterator[ImapSession | None]:
        """:meth:`session` if a connection can be lent without waiting for one to come
        back, else None: for a borrower that holds one already (with ``pool_size`` 1, or
        every other connection lent, it would wait for itself)."""
        if self._closed or self._slots.locked():
            yield None
            return
        # no await between the look and session()'s acquire: the slot is still free
        async with self.session(avoid=avoid) as session:
            yield session

    def _evict_expired(self) -> list[ImapSession]:
        now = self._clock()
        keep: list[ImapSession] = []
        doomed: list[ImapSession] = []
        for s in self._idle:
            expired = now - s.last_used > self._cfg.idle_timeout
            (doomed if (expired or s.broken) else keep).append(s)
        self._idle = keep
        return doomed

    def _pick_idle(self, mailbox: str | None, avoid: str | None = None) -> ImapSession | None:
        for i, s in enumerate(self._idle):
            if s.selected is not None and s.selected.name == mailbox:
                return self._idle.pop(i)
        for i, s in enumerate(self._idle):
            if s.selected is None:
                return self._idle.pop(i)
        for i in range(len(self._idle) - 1, -1, -1):
            selected = self._idle[i].selected
            if avoid is None or selected is None or selected.name != avoid:
                return self._idle.pop(i)
        return None

    async def _ready(self, session: ImapSession | None) -> ImapSession:
        if session is not None and self._clock() - session.last_used > _PROBE_AFTER_S:
            try:
                await session.noop()
            except ProxyError:
                log.info("imap pool %s: stale connection replaced", self.username)
                await session.close()
                session = None
        if session is None:
            session = await self._connect()
            self.capabilities, self.profile = session.capabilities, session.profile
            self._born[session] = self._generation
        return session

    async def _connect(self) -> ImapSession:
        try:
            return await self._connector(self._cfg, self.username, self._password)
        except AuthenticationFailed:
            self.refused = True  # Rule 5
            raise

    def _give_back(self, session: ImapSession | None, *, force_discard: bool = False) -> None:
        try:
            if session is None:
                return
            old = self._born.get(session, self._generation) != self._generation
            if force_discard or session.broken or self._closed or old:
                session.broken = True
                self._spawn(session.close())
            else:
                self._idle.append(session)
        finally:
            self._busy -= 1
            self._slots.release()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open_dedicated(self) -> ImapSession:
        """A new logged-in session outside the pool's accounting (a push watcher's long-lived
        connection); the caller closes it.  The credentials never leave the pool."""
        return await self._connect()

    async def release_mailbox(self, name: str) -> None:
        """Make idle connections leave ``name`` before it is renamed or deleted: Dovecot
        disconnects a session whose selected mailbox is deleted under it."""
        leaving = [s for s in self._idle if s.selected and s.selected.name == name]
        # out of the idle list while UNSELECT is in flight, so that nobody borrows them
        self._idle = [s for s in self._idle if s not in leaving]
        self._busy += len(leaving)
        try:
            for session in leaving:
                try:
                    await session.unselect()
                except ProxyError:
                    session.broken = True
        finally:
            self._busy -= len(leaving)
            for session in leaving:
                # a borrower may have opened another connection meanwhile: keep the bound
                full = len(self._idle) + self._busy >= self._cfg.pool_size
                if session.broken or self._closed or full:
                    self._spawn(session.close())
                else:
                    self._idle.append(session)
        doomed = [s for s in self._idle if s.broken]
        self._idle = [s for s in self._idle if not s.broken]
        for session in doomed:
            self._spawn(session.close())

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(s.close() for s in idle), *self._tasks, return_exceptions=True)


class ImapPools:
    """All accounts' pools, keyed by account id."""

    def __init__(self, cfg: ImapConfig, *, connector: Connector = ImapSession.connect) -> None:
        self._cfg = cfg
        self._connector = connector
        self._pools: dict[str, ImapPool] = {}

    def get(self, account_id: str) -> ImapPool | None:
        return self._pools.get(account_id)

    def all(self) -> list[ImapPool]:
        return list(self._pools.values())

    async def ensure(
        self, account_id: str, username: str, password: str, cfg: ImapConfig | None = None
    ) -> ImapPool:
        """The pool for this account, replaced when the password changed upstream; ``cfg``:
        the account's IMAP server when it is not the default (several upstreams)."""
        pool = self._pools.get(account_id)
        if pool is not None and pool.matches_password(password):
            return pool
        if pool is not None and isinstance(password, BearerToken) and pool.renew_token(password):
            return pool  # OAuth tokens expire hourly: keep the connections, use the new one
        if pool is not None:
            await pool.aclose()
        pool = ImapPool(cfg or self._cfg, username, password, connector=self._connector)
        self._pools[account_id] = pool
        return pool

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.aclose() for p in pools), return_exceptions=True)
