"""What the JMAP side sees of a mail server: one Protocol, :class:`Upstream`, joined from
small ones, and the plain data their operations take and return (docs/design.md,
"The seam").

Handlers import this module only; the implementation over IMAP is ``upstream.imap``, and
the unit tests' fakes implement the same Protocols.
"""

from __future__ import annotations

from typing import Protocol

from imapjmap.upstream.bodies import BodyReads
from imapjmap.upstream.labels import LabelMailbox, LabelWrites
from imapjmap.upstream.profiles import Profile
from imapjmap.upstream.quota import QuotaReading, QuotaReads
from imapjmap.upstream.refresh_reads import RefreshSource
from imapjmap.upstream.search import Pacer, Search, SearchMailbox, SearchTerm, UidHits
from imapjmap.upstream.sieve import SieveAccess, SieveScripts, SieveServer
from imapjmap.upstream.watch import Heard, Watch, WatchSource
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
    "Heard",
    "LabelMailbox",
    "LabelWrites",
    "MailboxWrites",
    "MessageWrites",
    "OpenMailbox",
    "Pacer",
    "Profile",
    "QuotaReading",
    "QuotaReads",
    "RefreshSource",
    "Removed",
    "Search",
    "SearchMailbox",
    "SearchTerm",
    "SieveAccess",
    "SieveScripts",
    "SieveServer",
    "Stored",
    "UidHits",
    "Upstream",
    "Watch",
    "WatchSource",
]


class Upstream(
    MailboxWrites,
    MessageWrites,
    BodyReads,
    Search,
    LabelWrites,
    RefreshSource,
    WatchSource,
    QuotaReads,
    SieveAccess,
    Protocol,
):
    """One account on one mail server, as the handlers use it."""

    @property
    def profile(self) -> Profile:
        """How the server is treated (:mod:`imapjmap.upstream.profiles`): the one place
        to ask, e.g., whether its labels are mailboxes (``profile.labels``)."""
        ...

    def login_password(self) -> str:
        """The login's current secret (a password, or an OAuth token that the proxy renews),
        for signing in to SMTP submission as the same user."""
        ...
