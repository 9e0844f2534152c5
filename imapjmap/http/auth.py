"""HTTP credentials → an account, verified by logging in to the upstream IMAP server.

HTTP Basic (user and password) logs in with LOGIN; HTTP Bearer (an OAuth 2.0 access token,
Gmail) logs in with SASL XOAUTH2, as the user that ``auth.bearer_profile_url`` names for
the token (:mod:`imapjmap.http.bearer`).

Rules
1. A password is never written anywhere: verified logins are remembered in memory only, as
   an HMAC under a key that lives and dies with the process, for
   ``auth.credential_cache_seconds``.  A remembered login does not go upstream, unless the
   server has refused the account's credentials since (``ImapPool.refused``).
2. The login that verified the credentials becomes the first connection of the account's
   pool, so a first request costs one login, not two.
3. Wrong or missing credentials → 401 with ``WWW-Authenticate``; upstream down → 503.
   A username holding a control character (below U+0020, or U+007F) is refused with 401
   before anything goes upstream: servers cut logins at a NUL, so ``alice\\0bob`` would
   log in as alice.
4. An account is the upstream mail store, not the spelling of its login: ``ALICE`` and
   ``alice`` reach one Dovecot mailbox (which folds case by default) and share one account
   id, cache, pool and limits.  The store is named by what the server says about it
   (:meth:`ImapSession.store_identity`: the INBOX's MAILBOXID, or Dovecot's INBOX GUID);
   on Gmail by the login folded to lower case (Gmail logins ignore case); elsewhere by the
   login exactly as typed, since the proxy cannot know whether that server folds case.
   A store's first account id is the one derived from the upstream server and the login
   name, as older versions did, so caches they built keep their ids
   (:func:`~imapjmap.store.queries.account_for_store`).
5. A token's user is remembered like a verified login (Rule 1), keyed by an HMAC of the
   token, so the profile URL is asked once per token and cache period.
6. Bearer is only tried where it can work: Gmail mode on, or a server that offers
   ``AUTH=XOAUTH2`` before login (probed once per cache period) with its own
   ``auth.bearer_profile_url`` configured (a token for another server must never reach
   Google's profile URL, the default).  Elsewhere a Bearer header is refused with 401, a
   challenge naming Basic only and a detail saying why; the token goes nowhere.
7. Browsers' push streams log in with a push token instead (:mod:`imapjmap.http.push_token`):
   :meth:`Authenticator.issue_push_token` gives one to a logged-in client,
   :meth:`Authenticator.authenticate_push` takes it back for that one stream.  Where this
   process does not hold the token's login, :meth:`Authenticator.authenticate_push_anywhere`
   asks the instances that do (``http.push_token`` Rule 6) and gives a :class:`PushOnly`:
   the account, and no IMAP here.
8. Failed logins are counted per client address and per username
   (:mod:`imapjmap.http.throttle`); past the configured counts a login that would go
   upstream is refused with 429 and ``Retry-After`` instead.  Where other instances may
   share the cache, the counts are the cluster's (``http.throttle`` Rule 6): a login that
   would go upstream reads them (one read), a failure writes one; a remembered login
   costs nothing.  The client's address also goes upstream with the login
   (``ImapSession.connect``'s ``client``).
9. With several upstreams (``[[upstreams]]``) the login's domain chooses the server
   (:meth:`Config.upstream_for`); a login no upstream serves is refused with 401 before
   anything goes anywhere.  Account ids derive from the IMAP server's host and port, and a
   store key (Rule 4) of any server but the default's is scoped by them too, so one
   upstream's account is never found by another's login.  Bearer tokens go to the default
   upstream only (Rule 6 is about its server).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import cachetools

from imapjmap.cluster.api import Coordinator
from imapjmap.cluster.local import Alone
from imapjmap.config import DEFAULT_UPSTREAM, Config, ImapConfig, UpstreamConfig
from imapjmap.credentials import ClientAddress
from imapjmap.errors import AuthenticationFailed, UpstreamUnavailable
from imapjmap.http.bearer import token_user
from imapjmap.http.push_token import PushTokens, Scope
from imapjmap.http.throttle import FailureWindow, LoginThrottle, Refusal, SharedThrottle
from imapjmap.imap.pool import ImapPool, ImapPools
from imapjmap.imap.session import BearerToken, ImapSession
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.methods.context import Account
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.upstream import profiles
from imapjmap.upstream.api import Upstream
from imapjmap.upstream.imap import ImapUpstream

log = logging.getLogger(__name__)

BASIC_REALM = 'Basic realm="imapjmap", charset="UTF-8"'
REALM = BASIC_REALM + ', Bearer realm="imapjmap"'

_PROBE_SECONDS_MIN = 60.0  # how long the upstream's pre-login capabilities are trusted
VOUCH_SECONDS = 2.0  # how long a push stream waits for another instance to vouch for it


class Unauthorized(Exception):
    """Missing or wrong credentials (rendered as 401 by the views, with ``challenge``)."""

    def __init__(self, reason: str, challenge: str = REALM) -> None:
        super().__init__(reason)
        self.challenge = challenge


def account_id_for(imap: ImapConfig, username: str) -> str:
    """A stable, valid JMAP Id for (upstream, login name) (CORE-TYPE-01)."""
    return _id(f"{imap.host}\0{imap.port}\0{username}")


def account_id_for_store(imap: ImapConfig, store: str) -> str:
    """The id of a store whose login-derived id another store holds (Rule 4)."""
    return _id(f"{imap.host}\0{imap.port}\0\0store\0{store}")


def _id(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "A" + base64.b32encode(digest[:15]).decode().lower()


def parse_bearer(header: str | None) -> BearerToken | None:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 §2.1), None for others."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = value.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise Unauthorized("malformed Bearer credentials")
    return BearerToken(token)


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise Unauthorized("credentials are required")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Unauthorized("use HTTP Basic or Bearer authentication")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        raise Unauthorized("malformed Basic credentials")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
        raise Unauthorized("the username holds a control character")  # Rule 3
    return username, password


def store_key(store_identity: str | None, username: str, *, folded: bool) -> str | None:
    """What names the account's mail store (Rule 4); None: the login name as typed.
    ``folded``: the server's logins ignore case (the profile's ``folded_logins``)."""
    if store_identity is not None:
        return store_identity
    if folded:
        return "login:" + username.casefold()
    return None


def scoped_store_key(key: str | None, cfg: Config, upstream: UpstreamConfig) -> str | None:
    """``key`` as the cache knows it (Rule 9): as is on the default upstream's server, as
    older versions wrote it; elsewhere prefixed with the server's host and port, since
    two servers may name their stores alike (``login:alice@example.org``)."""
    here, default = upstream.imap, cfg.default
    if key is None or (
        default is not None and (here.host, here.port) == (default.imap.host, default.imap.port)
    ):
        return key
    return f"upstream:{here.host}\0{here.port}\0{key}"


@dataclass(frozen=True, slots=True)
class Authenticated:
    account: Account
    pool: ImapPool
    upstream: Upstream  # the mail server as the handlers see it, over ``pool``


@dataclass(frozen=True, slots=True)
class PushOnly:
    """A push stream's login that another instance vouched for (Rule 7): this process has
    no IMAP for it, and the stream needs none (its states come from the cache and the
    cluster, its watcher runs where the login is)."""

    account: Account
    shares: tuple[str, ...] = ()  # the accounts of its shares, as the vouching instance knows


class Authenticator:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        pools: ImapPools,
        *,
        clock: Callable[[], float] = time.monotonic,
        push_key: bytes | None = None,
        cluster: Coordinator | None = None,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._pools = pools
        self._cluster: Coordinator = cluster if cluster is not None else Alone()
        self._cluster.on_vouch = self._vouch
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self.push_tokens = PushTokens(
            push_key or secrets.token_bytes(32), cfg.auth.push_token_seconds
        )
        ttl = cfg.auth.credential_cache_seconds
        # account id -> HMAC of the password last verified for it
        self._verified: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(100_000, ttl)
        # (kind, login as typed) -> the account id that login reached when verified
        self._logins: cachetools.TTLCache[str, str] = cachetools.TTLCache(100_000, ttl)
        self._accounts: dict[str, Account] = {}
        self._token_users: cachetools.TTLCache[bytes, str] = cachetools.TTLCache(100_000, ttl)
        auth = cfg.auth
        local = LoginThrottle(
            FailureWindow(
                auth.failed_logins_per_address,
                auth.failed_logins_per_address_seconds,
                clock=clock,
            ),
            FailureWindow(
                auth.failed_logins_per_username,
                auth.failed_logins_per_username_seconds,
                clock=clock,
            ),
        )
        # counted over the cluster where other instances may share the cache (Rule 8)
        self._throttle = SharedThrottle(local, store if self._cluster.shared else None)
        self._probed: tuple[float, frozenset[str]] | None = None  # (when, capabilities)

    def _mac(self, account_id: str, password: str) -> bytes:
        kind = "bearer" if isinstance(password, BearerToken) else "basic"
        text = f"{account_id}\0{kind}\0{password}"
        return hmac.new(self._key, text.encode(), "sha256").digest()

    def challenge(self) -> str:
        """``WWW-Authenticate``: Bearer only where it may work (Rule 6)."""
        if (
            not self._cfg.default_upstream  # Rule 9
            or self._bearer_possible(self._known_capabilities()) is False
        ):
            return BASIC_REALM
        return REALM

    async def authenticate(
        self, header: str | None, client: ClientAddress | None = None
    ) -> Authenticated:
        """Raises Unauthorized, or RequestError (429 after too many failed logins, 503 when
        the upstream is unreachable)."""
        try:
            return await self._authenticate(header, client)
        except Unauthorized as exc:
            exc.challenge = self.challenge()
            raise

    async def _authenticate(
        self, header: str | None, client: ClientAddress | None
    ) -> Authenticated:
        address = client.ip if client is not None else None
        token = parse_bearer(header)
        password: str
        if token is not None:
            await self._require_bearer()
            username, password = await self._token_user(token, address), token
            if self._upstream(username).name != DEFAULT_UPSTREAM:
                raise Unauthorized("Bearer tokens are taken for the default upstream only")
        else:
            username, password = parse_basic(header)
        login = f"{'bearer' if token is not None else 'basic'}\0{username}"
        account_id = self._logins.get(login)
        if account_id is not None:
            pool = self._pools.get(account_id)
            known = self._verified.get(account_id)
            if (
                pool is not None
                and not pool.refused  # the server no longer takes them: ask again
                and known is not None
                and hmac.compare_digest(known, self._mac(account_id, password))
            ):
                return Authenticated(self._accounts[account_id], pool, ImapUpstream(pool))
        await self._check_throttle(address, username)
        account, pool = await self._verify(username, password, client)
        self._logins[login] = account.account_id
        self._verified[account.account_id] = self._mac(account.account_id, password)
        return Authenticated(account, pool, ImapUpstream(pool))

    def issue_push_token(self, who: Authenticated, scope: Scope) -> str:
        """A push token for ``who``'s ``scope`` stream (Rule 7)."""
        return self.push_tokens.issue(scope, who.account.account_id, _push_credential(who.pool))

    def authenticate_push(self, token: str, scope: Scope) -> Authenticated:
        """The login a push token stands for, where this process holds it (Rule 7).

        Raises:
            Unauthorized: a forged, expired or foreign token, a token of another scope, or
                one whose login this process does not hold (or holds with another password).
        """
        account_id = self.push_tokens.account_of(token)
        pool = self._pools.get(account_id) if account_id is not None else None
        account = self._accounts.get(account_id) if account_id is not None else None
        password = _push_credential(pool) if pool is not None and not pool.refused else None
        if pool is None or account is None or not self.push_tokens.verify(scope, token, password):
            raise Unauthorized(
                "the push token is not valid here (expired, or for another login or stream):"
                " fetch the session again",
                self.challenge(),
            )
        return Authenticated(account, pool, ImapUpstream(pool))

    async def authenticate_push_anywhere(
        self, token: str, scope: Scope
    ) -> Authenticated | PushOnly:
        """:meth:`authenticate_push`, or, where this process does not hold the login and
        shares its cache with other instances, their word for it (Rule 7).

        Raises:
            Unauthorized: as :meth:`authenticate_push`, or no instance vouched for the
                token within :data:`VOUCH_SECONDS`.
        """
        try:
            return self.authenticate_push(token, scope)
        except Unauthorized:
            account_id = self.push_tokens.account_of(token)
            claim = self.push_tokens.claim(scope, token)
            pool = self._pools.get(account_id) if account_id is not None else None
            here = pool is not None and not pool.refused and account_id in self._accounts
            if here or account_id is None or claim is None or not self._cluster.shared:
                raise
            row = await self._store.read_small(
                lambda tx: q.account(tx, account_id), account=account_id
            )
            upstream = self._cfg.upstream_for(row.username) if row is not None else None
            if row is None or upstream is None:
                raise
            vouched = await self._cluster.vouch(account_id, claim, VOUCH_SECONDS)
            if vouched is None:
                raise
            log.info("account %s: push stream vouched for by another instance", account_id)
            account = Account(row.account_id, row.username, row.epoch, upstream.name)
            return PushOnly(account, vouched.shares)

    def _vouch(self, account_id: str, claim: str) -> bool | None:
        """Another instance asks about a push token of an account whose login it does not
        hold (``http.push_token`` Rule 6); None: nor does this one."""
        pool = self._pools.get(account_id)
        if pool is None or account_id not in self._accounts:
            return None
        return not pool.refused and self.push_tokens.verify_claim(claim, _push_credential(pool))

    async def _check_throttle(self, address: str | None, username: str | None) -> None:
        refusal = await self._throttle.check(address, username)
        if refusal is not None:
            log.info("login of %r from %s refused: too many failed logins", username, address)
            raise _throttled(refusal)

    async def _token_user(self, token: BearerToken, address: str | None) -> str:
        """Whose token this is (Rule 5)."""
        key = hmac.new(self._key, f"token\0{token}".encode(), "sha256").digest()
        user = self._token_users.get(key)
        if user is not None:
            return user
        await self._check_throttle(address, None)
        auth = self._cfg.auth
        try:
            user = await token_user(auth.bearer_profile_url, token, self._cfg.imap.connect_timeout)
        except OSError as exc:
            log.warning("cannot look up a bearer token's user: %s", exc)
            raise _unavailable() from None
        if user is None:
            await self._throttle.failed(address, None)
            raise Unauthorized("the bearer token was refused")
        self._token_users[key] = user
        return user

    # -- Bearer only where it can work (Rule 6) ----------------------------------------------

    def _known_capabilities(self) -> frozenset[str] | None:
        if self._probed is None:
            return None
        when, capabilities = self._probed
        ttl = max(_PROBE_SECONDS_MIN, self._cfg.auth.credential_cache_seconds)
        return capabilities if self._clock() - when < ttl else None

    def _bearer_possible(self, capabilities: frozenset[str] | None) -> bool | None:
        """None: cannot tell without asking the server."""
        return profiles.bearer_possible(self._cfg, capabilities)

    async def _require_bearer(self) -> None:
        if not self._cfg.default_upstream:
            raise Unauthorized("Bearer tokens are taken for the default upstream only")
        capabilities = self._known_capabilities()
        if self._bearer_possible(capabilities) is None:
            try:
                capabilities = await ImapSession.probe_capabilities(self._cfg.imap)
            except UpstreamUnavailable as exc:
                log.warning("upstream unavailable while probing for XOAUTH2: %s", exc)
                raise _unavailable() from None
            self._probed = (self._clock(), capabilities)
        if not self._bearer_possible(capabilities):
            if capabilities is not None and "AUTH=XOAUTH2" in capabilities:
                raise Unauthorized(
                    "Bearer tokens need auth.bearer_profile_url for this IMAP server: use Basic"
                )
            raise Unauthorized("the IMAP server takes no Bearer tokens: use Basic")

    # -- the upstream login -------------------------------------------------------------------

    def _upstream(self, username: str) -> UpstreamConfig:
        """The upstream serving ``username`` (Rule 9)."""
        upstream = self._cfg.upstream_for(username)
        if upstream is None:
            log.info("login of %r refused: no upstream serves its domain", username)
            raise Unauthorized("no mail server is configured for this login's domain")
        return upstream

    async def _verify(
        self, username: str, password: str, client: ClientAddress | None
    ) -> tuple[Account, ImapPool]:
        address = client.ip if client is not None else None
        upstream = self._upstream(username)
        imap = upstream.imap
        try:
            session = await ImapSession.connect(imap, username, password, client=client)
        except AuthenticationFailed:
            await self._throttle.failed(address, username)
            log.info("login refused for %r from %s by %s", username, address, upstream.name)
            raise Unauthorized("the IMAP server refused these credentials") from None
        except UpstreamUnavailable as exc:
            log.warning(
                "upstream %s unavailable while logging in %r: %s", upstream.name, username, exc
            )
            raise _unavailable() from None
        await self._throttle.succeeded(username)
        try:
            identity = await session.store_identity()
            key = scoped_store_key(
                store_key(identity, username, folded=session.profile.folded_logins),
                self._cfg,
                upstream,
            )
            legacy = account_id_for(imap, username)
            fresh = account_id_for_store(imap, key) if key is not None else legacy

            def resolve(tx: Tx) -> q.AccountRow:
                row = q.account_for_store(tx, key, username, legacy_id=legacy, fresh_id=fresh)
                q.note_login(tx, row.account_id, at=time.time())  # `imapjmap accounts`
                return row

            row = await self._store.run(resolve)
        except UpstreamUnavailable as exc:
            await session.close()
            log.warning("upstream unavailable while logging in %r: %s", username, exc)
            raise _unavailable() from None
        except BaseException:
            await session.close()
            raise
        account = self._accounts.get(row.account_id)
        if account is None:
            account = Account(row.account_id, row.username, row.epoch, upstream.name)
            self._accounts[row.account_id] = account
        pool = await self._pools.ensure(row.account_id, username, password, imap)
        pool.adopt(session)
        log.info("account %s logged in as %r", row.account_id, username)
        return account, pool


def _push_credential(pool: ImapPool) -> str:
    """What a push token is bound to: the password the login holds, so that a changed one
    voids the tokens; for an OAuth login its user, since its access token is renewed every
    hour or so (a refused one sets ``pool.refused``, which voids them too)."""
    secret = pool.login_password()
    if isinstance(secret, BearerToken):
        return BearerToken(pool.username)
    return secret


def _throttled(refusal: Refusal) -> RequestError:
    setting = f"auth.failed_logins_per_{refusal.what}"
    return RequestError(
        RequestErrorType.LIMIT,
        f"too many failed logins for this {refusal.what} ({setting});"
        f" try again in {refusal.retry_after} s",
        status=429,
        limit=setting,
        title="Too Many Requests",
        headers={"Retry-After": str(refusal.retry_after)},
    )


def _unavailable() -> RequestError:
    return RequestError(
        RequestErrorType.BLANK,
        "the mail server is unavailable",
        status=503,
        title="Service Unavailable",
    )
