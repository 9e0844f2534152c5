"""What the JMAP side sees of a mail server: one Protocol, :class:`Upstream`, joined from
small ones, and the plain data their operations take and return (docs/design.md,
"The seam").

Handlers import this module only; the implementation over IMAP is ``upstream.imap``, and
the unit tests' fakes implement the same Protocols.
"""

from __future__ import annotations

from typing import Protocol

from imapjmap.upstream.bodies import BodyReads
from imapjmap.upstream.writes import (
    Appended,
    Copied,
    MailboxWrites,
    MessageWrites,
    OpenMailbox,
    Removed,
    Stored,
)

__all__ = [
    "Appended",
    "BodyReads",
    "Copied",
    "MailboxWrites",
    "MessageWrites",
    "OpenMailbox",
    "Removed",
    "Stored",
    "Upstream",
]


class Upstream(MailboxWrites, MessageWrites, BodyReads, Protocol):
    """One account on one mail server, as the handlers use it."""

    def login_password(self) -> str:
        """The login's current secret (a password, or an OAuth token that the proxy renews),
        for signing in to SMTP submission as the same user."""
        ...
