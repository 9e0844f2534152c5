"""Login credentials that say how to log in: protocol-free, no I/O.

A :class:`BearerToken` travels wherever a password goes (the HTTP login, the account's
pool, the SMTP submission).  Every module that logs in somewhere looks at its type, so
the one value is enough: :mod:`imapjmap.imap.session` answers it with ``AUTHENTICATE
XOAUTH2`` and :mod:`imapjmap.smtp` with ``AUTH XOAUTH2``.  It lives here, not in either
of them, so that neither I/O module imports the other (nor its I/O library).
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass

__all__ = ["BearerToken", "ClientAddress", "xoauth2_response"]


class BearerToken(str):
    """An OAuth 2.0 access token given where a password goes: log in with SASL XOAUTH2
    instead of a password mechanism.  Never log it."""

    __slots__ = ()


def xoauth2_response(user: str, token: str) -> bytes:
    """The SASL XOAUTH2 client response, base64 encoded (Google's "OAuth 2.0 Mechanism"):
    ``base64("user=" user ^A "auth=Bearer " token ^A ^A)``.  It holds the token: never log
    it."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """Where an HTTP login comes from, told to the IMAP server with RFC 2971 ID so that its
    per-address penalties and logs see the client, not the proxy."""

    ip: str
    port: int | None = None

    def __post_init__(self) -> None:
        """Raises ValueError: not an IP address, or not a port number."""
        ipaddress.ip_address(self.ip)
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"not a port number: {self.port}")
