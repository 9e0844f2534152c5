"""HTTP credentials → an account, verified by logging in to the upstream IMAP server.

HTTP Basic (user and password) logs in with LOGIN; HTTP Bearer (an OAuth 2.0 access token,
Gmail) logs in with SASL XOAUTH2, as the user that ``auth.bearer_profile_url`` names for
the token (:mod:`imapjmap.http.bearer`).

Rules
1. A password is never written anywhere: verified logins are remembered in memory only, as
   an HMAC under a key that lives and dies with the process, for
   ``auth.credential_cache_seconds``.
2. The login that verified the credentials becomes the first connection of the account's
   pool, so a first request costs one login, not two.
3. Wrong or missing credentials → 401 with ``WWW-Authenticate``; upstream down → 503.
4. Each username has its own account id, cache rows and pool; the account id is derived
   from the upstream server and the username, so it is stable across restarts (a Bearer
   login reaches the same account as a Basic login of the same user).
5. A token's user is remembered like a verified login (Rule 1), keyed by an HMAC of the
   token, so the profile URL is asked once per token and cache period.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

import cachetools

from imapjmap.config import Config, ImapConfig
from imapjmap.errors import AuthenticationFailed, UpstreamUnavailable
from imapjmap.http.bearer import token_user
from imapjmap.imap.pool import ImapPool, ImapPools
from imapjmap.imap.session import BearerToken, ImapSession
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.methods.context import Account
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx

log = logging.getLogger(__name__)

REALM = 'Basic realm="imapjmap", charset="UTF-8", Bearer realm="imapjmap"'


class Unauthorized(Exception):
    """Missing or wrong credentials (rendered as 401 by the views)."""


def account_id_for(imap: ImapConfig, username: str) -> str:
    """A stable, valid JMAP Id for (upstream, username) (CORE-TYPE-01)."""
    digest = hashlib.sha256(f"{imap.host}\0{imap.port}\0{username}".encode()).digest()
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
    return username, password


@dataclass(frozen=True, slots=True)
class Authenticated:
    account: Account
    pool: ImapPool


class Authenticator:
    def __init__(self, cfg: Config, store: Store, pools: ImapPools) -> None:
        self._cfg = cfg
        self._store = store
        self._pools = pools
        self._key = secrets.token_bytes(32)
        self._verified: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(
            maxsize=100_000, ttl=cfg.auth.credential_cache_seconds
        )
        self._accounts: dict[str, Account] = {}
        self._token_users: cachetools.TTLCache[bytes, str] = cachetools.TTLCache(
            maxsize=100_000, ttl=cfg.auth.credential_cache_seconds
        )

    def _mac(self, account_id: str, password: str) -> bytes:
        kind = "bearer" if isinstance(password, BearerToken) else "basic"
        text = f"{account_id}\0{kind}\0{password}"
        return hmac.new(self._key, text.encode(), "sha256").digest()

    async def authenticate(self, header: str | None) -> Authenticated:
        """Raises Unauthorized, or RequestError (503) when the upstream is unreachable."""
        token = parse_bearer(header)
        password: str
        if token is not None:
            username, password = await self._token_user(token), token
        else:
            username, password = parse_basic(header)
        account_id = account_id_for(self._cfg.imap, username)
        mac = self._mac(account_id, password)
        pool = self._pools.get(account_id)
        known = self._verified.get(account_id)
        if pool is None or known is None or not hmac.compare_digest(known, mac):
            pool = await self._verify(account_id, username, password)
            self._verified[account_id] = mac
        return Authenticated(await self._account(account_id, username), pool)

    async def _token_user(self, token: BearerToken) -> str:
        """Whose token this is (Rule 5)."""
        key = hmac.new(self._key, f"token\0{token}".encode(), "sha256").digest()
        user = self._token_users.get(key)
        if user is not None:
            return user
        auth = self._cfg.auth
        try:
            user = await token_user(auth.bearer_profile_url, token, self._cfg.imap.connect_timeout)
        except OSError as exc:
            log.warning("cannot look up a bearer token's user: %s", exc)
            raise _unavailable() from None
        if user is None:
            raise Unauthorized("the bearer token was refused")
        self._token_users[key] = user
        return user

    async def _verify(self, account_id: str, username: str, password: str) -> ImapPool:
        try:
            session = await ImapSession.connect(self._cfg.imap, username, password)
        except AuthenticationFailed:
            log.info("login refused for %r", username)
            raise Unauthorized("the IMAP server refused these credentials") from None
        except UpstreamUnavailable as exc:
            log.warning("upstream unavailable while logging in %r: %s", username, exc)
            raise _unavailable() from None
        pool = await self._pools.ensure(account_id, username, password)
        pool.adopt(session)
        log.info("account %s logged in as %r", account_id, username)
        return pool

    async def _account(self, account_id: str, username: str) -> Account:
        account = self._accounts.get(account_id)
        if account is None:

            def ensure(tx: Tx) -> q.AccountRow:
                return q.ensure_account(tx, account_id, username)

            row = await self._store.run(ensure)
            account = Account(row.account_id, row.username, row.epoch)
            self._accounts[account_id] = account
        return account


def _unavailable() -> RequestError:
    return RequestError(
        RequestErrorType.BLANK,
        "the mail server is unavailable",
        status=503,
        title="Service Unavailable",
    )
