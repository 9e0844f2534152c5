"""The internal exception tree.

These errors know nothing about JSON or HTTP.  Each carries a ``jmap_hint``: the RFC 8620
§3.6.2 method-level error type that the dispatcher reports when one escapes a method
handler.  Foreign exceptions (asyncio's and ssl's for IMAP, aiosmtplib, sqlite3) are
translated into these at the one module that owns each library, and chained with
``raise ... from``.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error the proxy raises on purpose.

    ``client_description``, when set, is what the client is told: an error the request itself
    caused, worded for the client and free of upstream text (no traceback is logged for it).
    """

    jmap_hint = "serverFail"
    client_description: str | None = None


class ConfigError(ProxyError):
    """The configuration file is missing, not TOML, or fails validation.

    The message names the TOML key path and the problem, e.g. ``imap.port: must be 1-65535``.
    """


class UpstreamUnavailable(ProxyError):
    """An upstream server cannot be reached, timed out, or dropped the connection."""

    jmap_hint = "serverUnavailable"


class CoordinatorUnavailable(ProxyError):
    """The coordinator of several instances (``cluster.url``) cannot be reached: an
    account's sync cannot be proved to be the only one."""

    jmap_hint = "serverUnavailable"


class ImapUnavailable(UpstreamUnavailable):
    """The IMAP server cannot be reached, timed out, said BYE, or closed the connection."""


class ImapConnectionLost(ImapUnavailable):
    """A connection that was up closed under a command (the server's process ended, the
    peer reset it): unlike a refused connect or a timeout, another connection may well be
    served at once."""


class SmtpUnavailable(UpstreamUnavailable):
    """The SMTP server cannot be reached, timed out, or closed the connection."""


class ImapCommandFailed(ProxyError):
    """The IMAP server answered a command with a tagged NO.

    ``code`` is the RFC 5530 response code (upper case, e.g. ``"NONEXISTENT"``) or None;
    ``text`` is the human-readable rest of the line; both are for logs and for choosing a
    SetError, never echoed to clients verbatim.
    """

    def __init__(self, what: str, code: str | None = None, text: str = "") -> None:
        super().__init__(f"{what}: NO [{code or ''}] {text}".strip())
        self.what = what
        self.code = code
        self.text = text


class ImapProtocolViolation(ProxyError):
    """A tagged BAD, a reply that cannot be parsed, or a desynchronised connection."""


class ImapCommandTooLong(ImapProtocolViolation):
    """A tagged BAD saying the command was too long (Dovecot: "Too long argument").

    What the client asked for was too big for the server, not a fault of either server:
    the method that built the command from the client's arguments reports the client's
    error.  The session is broken like after any BAD.
    """


class ManageSieveUnavailable(UpstreamUnavailable):
    """The ManageSieve server cannot be reached, timed out, or broke the protocol."""


class SieveCommandFailed(ProxyError):
    """The ManageSieve server answered NO (or BYE) to a command.

    ``code`` is the RFC 5804 response code (upper case, e.g. ``"NONEXISTENT"``) or None;
    ``text`` is the server's human-readable string: for a script it refused, its errors
    with their line numbers, which a client is shown (``invalidSieve``).
    """

    def __init__(self, what: str, status: str, code: str | None = None, text: str = "") -> None:
        super().__init__(f"{what}: {status} {text}".strip())
        self.what = what
        self.code = code
        self.text = text


class AuthenticationFailed(ProxyError):
    """The upstream rejected the credentials (turned into HTTP 401 by the front end)."""


class CacheCorrupt(ProxyError):
    """The cache holds something that cannot be (an unknown schema, a broken row)."""
