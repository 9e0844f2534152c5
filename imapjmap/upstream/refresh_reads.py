"""What a refresh reads from the server: the listing with each mailbox's STATUS, the
STATUS and rights of single mailboxes, and the mailbox a connection keeps open between
refreshes (docs/design.md, "Freshness" and "The seam").

:class:`RefreshSource` is all :class:`~imapjmap.sync.engine.AccountSync` sees of an
account's server: it lends one connection at a time as :class:`RefreshReads`, whose
:meth:`~RefreshReads.sync_reads` are the email sync's reads on the same connection.
``upstream.imap_refresh`` says it in IMAP over the account's pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from imapjmap.imap.models import ListEntry, MailboxStatus, UidSet
from imapjmap.upstream.profiles import Profile
from imapjmap.upstream.sync_reads import SyncReads

__all__ = ["ListEntry", "MailboxStatus", "RefreshReads", "RefreshSource", "UidSet"]


class RefreshReads(Protocol):
    """One lent connection, as a refresh uses it.  Two leases of the same connection
    compare equal, so that the engine can tell whether a connection it saw keep a mailbox
    open is the one it holds now."""

    @property
    def profile(self) -> Profile:
        """How the server is treated: its anchor policy, whether labels are mailboxes,
        the STATUS item of its mailbox ids."""
        ...

    @property
    def kept_open(self) -> str | None:
        """The mailbox the connection has selected now, if any."""
        ...

    @property
    def broken(self) -> bool:
        """The connection is lost or must not be used again."""
        ...

    async def list_with_status(
        self, *, sync_selected: bool = False
    ) -> tuple[Sequence[ListEntry], Sequence[MailboxStatus]]:
        """Every mailbox with its attributes, and the STATUS of those the server gives in
        the same round trip (LIST-STATUS).  ``sync_selected``: the mailbox kept open is
        brought up to date in that same round trip, so that its STATUS is current."""
        ...

    async def status(self, name: str, items: str | None = None) -> MailboxStatus | None:
        """One mailbox's STATUS (``items``: just those, e.g. the profile's mailbox id
        item); None when the server refuses (the mailbox is gone)."""
        ...

    async def rights(self, name: str) -> str | None:
        """The user's rights on ``name`` (RFC 4314), from the last listing when it said
        them, else asked; None where the server has no ACL or refuses."""
        ...

    async def keep_open(self, name: str | None) -> None:
        """Leave ``name`` selected read-only on this connection (None: nothing selected)."""
        ...

    def sync_reads(self, header_fields: str) -> SyncReads:
        """The email sync's reads on this same connection, fetching ``header_fields`` (the
        headers the cache keeps) with each new message."""
        ...


class RefreshSource(Protocol):
    """An account's server, as its refreshes reach it."""

    def refresh_reads(
        self, prefer: str | None = None, avoid: str | None = None
    ) -> AbstractAsyncContextManager[RefreshReads]:
        """Lend a connection for a refresh: preferably one that keeps ``prefer`` open,
        else one with nothing selected; never one that keeps ``avoid`` open."""
        ...

    def spare_reads(self, avoid: str) -> AbstractAsyncContextManager[RefreshReads | None]:
        """Lend another connection, not the one that keeps ``avoid`` open, if one can be
        had without waiting; else None (a refresh holding one already must not wait for a
        second: with one connection per account it would wait for itself)."""
        ...
