"""Push tokens: the credential a browser's ``EventSource`` and ``WebSocket`` can send.

Neither can set an ``Authorization`` header, so the session's ``eventSourceUrl`` and the
WebSocket capability's ``url`` carry a token in their query (``push_token=…``).

Rules
1. A token is ``v1.<accountId>.<expires>.<nonce>.<mac>``: ``expires`` in Unix seconds, a
   random ``nonce`` (every token differs), ``mac`` an HMAC-SHA256 (base64url) under the
   signing key over the scope, the account id, the expiry, the nonce and a digest of the
   password the account's login holds in memory.
2. Its scope is one stream: an ``eventsource`` token opens only the EventSource, a
   ``websocket`` token only a WebSocket that pushes (no API requests over it).  Nothing
   else (the API, uploads, downloads, the session) takes a token.
3. It is bound to the login's in-memory credentials: it is valid only where this process
   (or another one with the same key) holds the account's login, and only while the
   password is the same (for an OAuth login, the same user: its access token is renewed
   hourly).  A changed password, a restart with a random key, or an expired
   token is a 401; the client fetches the session again, with its credentials, for a new
   token.  No password or token is written anywhere.
6. An instance that does not hold the login (several instances, :mod:`imapjmap.cluster`)
   asks the ones that do with a *claim* (:meth:`PushTokens.claim`): the token with its MAC
   replaced by a digest of it, which opens nothing itself.  A holder checks the claim
   against its in-memory credential (:meth:`PushTokens.verify_claim`), so Rule 3 holds
   wherever the stream opens.
4. Each session fetch gives fresh tokens, valid for ``auth.push_token_seconds``.  A stream
   opened with a token stays open after the token expires (the check is at connect time,
   as for Basic); only a reconnect needs a valid one.
5. The key is random per process unless ``auth.push_token_key_file`` names a file holding
   one (several instances behind one load balancer share it).  Wall-clock time, so that
   instances agree on expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Final, Literal

from imapjmap.errors import ConfigError

Scope = Literal["eventsource", "websocket"]
QUERY_PARAMETER: Final = "push_token"
_VERSION: Final = "v1"
_ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")
_MAC: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{16}")
MIN_KEY_BYTES: Final = 32


def signing_key(path: str | None) -> bytes:
    """The key in ``auth.push_token_key_file``, or a random one when no file is
    configured (Rule 5).

    A key written as text (``openssl rand -hex 32 > file``) ends with a newline an editor
    may change, so white space around a key of printable ASCII is dropped; a binary key
    (``head -c 32 /dev/urandom > file``) is used whole: one in twenty of those begins or
    ends with a byte that is white space, and dropping it would shorten the key.

    Raises:
        ConfigError: the file cannot be read or holds fewer than 32 bytes; the message
            names the setting and the file, never the key.
    """
    if path is None:
        return secrets.token_bytes(MIN_KEY_BYTES)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(
            f"auth.push_token_key_file: cannot read {path!r}: {exc.strerror or exc}"
        ) from None
    text = raw.strip()
    key = text if all(0x20 <= byte <= 0x7E for byte in text) else raw
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"auth.push_token_key_file: {path!r} must hold at least {MIN_KEY_BYTES} bytes"
        )
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _digest(mac: str) -> str:
    return _b64(hashlib.sha256(mac.encode()).digest())


class PushTokens:
    def __init__(
        self, key: bytes, lifetime: float, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._key = key
        self._lifetime = lifetime
        self._clock = clock

    def issue(self, scope: Scope, account_id: str, password: str) -> str:
        """A fresh token for ``account_id``'s ``scope`` stream (Rules 1, 4)."""
        expires = int(self._now() + self._lifetime)
        nonce = _b64(secrets.token_bytes(12))
        mac = self._mac(scope, account_id, expires, nonce, password)
        return f"{_VERSION}.{account_id}.{expires}.{nonce}.{mac}"

    def account_of(self, token: str) -> str | None:
        """The account a well-formed token names (not yet verified), else None."""
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != _VERSION or not _ACCOUNT_ID.fullmatch(parts[1]):
            return None
        if not (parts[2].isascii() and parts[2].isdigit() and len(parts[2]) <= 12):
            return None
        ok = _NONCE.fullmatch(parts[3]) and _MAC.fullmatch(parts[4])
        return parts[1] if ok else None

    def verify(self, scope: Scope, token: str, password: str | None) -> bool:
        """Whether ``token`` opens ``scope`` now, given the password the account's login
        holds in memory (None: no login here, Rule 3)."""
        account_id = self.account_of(token)
        if account_id is None or password is None:
            return False
        _, _, expires, nonce, mac = token.split(".")
        if int(expires) <= self._now():
            return False
        expected = self._mac(scope, account_id, int(expires), nonce, password)
        return hmac.compare_digest(mac, expected)

    def claim(self, scope: Scope, token: str) -> str | None:
        """What to ask a holder of the login about ``token`` (Rule 6), None when the token
        is malformed or expired (then there is nothing to ask)."""
        if self.account_of(token) is None:
            return None
        _, account_id, expires, nonce, mac = token.split(".")
        if int(expires) <= self._now():
            return None
        return f"{scope}.{account_id}.{expires}.{nonce}.{_digest(mac)}"

    def verify_claim(self, claim: str, password: str) -> bool:
        """Whether ``claim`` (another instance's, Rule 6) stands for a token that is good
        now, given the password this instance's login of the account holds."""
        parts = claim.split(".")
        if len(parts) != 5 or parts[0] not in ("eventsource", "websocket"):
            return False
        scope: Scope = "eventsource" if parts[0] == "eventsource" else "websocket"
        # a digest is written like a MAC: the token's checks check its shape too
        if (
            self.account_of(".".join((_VERSION, *parts[1:]))) is None
            or int(parts[2]) <= self._now()
        ):
            return False
        expected = self._mac(scope, parts[1], int(parts[2]), parts[3], password)
        return hmac.compare_digest(parts[4], _digest(expected))

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    def _mac(self, scope: Scope, account_id: str, expires: int, nonce: str, password: str) -> str:
        credential = hashlib.sha256(f"{type(password).__name__}\0{password}".encode()).hexdigest()
        text = f"imapjmap push token\0{scope}\0{account_id}\0{expires}\0{nonce}\0{credential}"
        return _b64(hmac.new(self._key, text.encode(), "sha256").digest())
