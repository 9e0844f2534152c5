"""HTTP Basic credentials → an account, verified by logging in to the upstream IMAP server.

Rules
1. A password is never written anywhere: verified logins are remembered in memory only, as
   an HMAC under a key that lives and dies with the process, for
   ``auth.credential_cache_seconds``.
2. The login that verified the credentials becomes the first connection of the account's
   pool, so a first request costs one login, not two.
3. Wrong or missing credentials → 401 with ``WWW-Authenticate``; upstream down → 503.
4. Each username has its own account id, cache rows and pool; the account id is derived
   from the upstream server and the username, so it is stable across restarts.
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
from imapjmap.imap.pool import ImapPool, ImapPools
from imapjmap.imap.session import ImapSession
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.methods.context import Account
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx

log = logging.getLogger(__name__)

REALM = 'Basic realm="imapjmap", charset="UTF-8"'


class Unauthorized(Exception):
    """Missing or wrong credentials (rendered as 401 by the views)."""


def account_id_for(imap: ImapConfig, username: str) -> str:
    """A stable, valid JMAP Id for (upstream, username) (CORE-TYPE-01)."""
    digest = hashlib.sha256(f"{imap.host}\0{imap.port}\0{username}".encode()).digest()
    return "A" + base64.b32encode(digest[:15]).decode().lower()


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise Unauthorized("credentials are required")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Unauthorized("use HTTP Basic authentication")
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

    def _mac(self, account_id: str, password: str) -> bytes:
        return hmac.new(self._key, f"{account_id}\0{password}".encode(), "sha256").digest()

    async def authenticate(self, header: str | None) -> Authenticated:
        """Raises Unauthorized, or RequestError (503) when the upstream is unreachable."""
        username, password = parse_basic(header)
        account_id = account_id_for(self._cfg.imap, username)
        mac = self._mac(account_id, password)
        pool = self._pools.get(account_id)
        known = self._verified.get(account_id)
        if pool is None or known is None or not hmac.compare_digest(known, mac):
            pool = await self._verify(account_id, username, password)
            self._verified[account_id] = mac
        return Authenticated(await self._account(account_id, username), pool)

    async def _verify(self, account_id: str, username: str, password: str) -> ImapPool:
        try:
            session = await ImapSession.connect(self._cfg.imap, username, password)
        except AuthenticationFailed:
            log.info("login refused for %r", username)
            raise Unauthorized("the IMAP server refused these credentials") from None
        except UpstreamUnavailable as exc:
            log.warning("upstream unavailable while logging in %r: %s", username, exc)
            raise RequestError(
                RequestErrorType.BLANK,
                "the mail server is unavailable",
                status=503,
                title="Service Unavailable",
            ) from None
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
