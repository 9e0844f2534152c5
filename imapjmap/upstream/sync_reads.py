"""What the email sync reads from the server: a mailbox's changes since a cursor, and the
records of given UIDs with the list items.

:class:`SyncReads` is all :class:`~imapjmap.sync.emails.MailboxSync` sees of a connection;
``upstream.imap_sync`` says it in IMAP over one session.  Each method is one round trip;
which ones a sync sends, and in what order, is decided by the pure planning of
:mod:`imapjmap.sync.emails`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from imapjmap.imap.models import FetchRecord, UidSet

# a FETCH reply's untagged responses as received: each a line and its literals
Raw = Sequence[tuple[bytes, ...]]


@dataclass(frozen=True, slots=True)
class Changes:
    """What the server reported changed since a modseq: UIDs expunged (``VANISHED``) and
    the records of messages whose flags (or Gmail labels) changed."""

    vanished: Sequence[Collection[int]] = ()
    changed: Sequence[FetchRecord] = ()


@dataclass(frozen=True, slots=True)
class Opened:
    """A mailbox as its SELECT left it; ``changes`` filled only by a QRESYNC SELECT."""

    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    exists: int | None
    changes: Changes = Changes()


class SyncReads(Protocol):
    """The reads of one mailbox's sync, on one connection (the selected mailbox is its
    state: every read after :meth:`open` is about that mailbox)."""

    @property
    def qresync(self) -> bool:
        """QRESYNC is enabled: a SELECT can report expunges and flag changes."""
        ...

    @property
    def condstore(self) -> bool:
        """CONDSTORE is enabled: flag changes can be asked since a modseq."""
        ...

    @property
    def selected(self) -> tuple[str, int | None] | None:
        """The mailbox the connection has selected now, with its UIDVALIDITY."""
        ...

    async def open(self, name: str, since: tuple[int, int] | None = None) -> Opened:
        """Select ``name`` read-only; with ``since=(uidvalidity, modseq)``, on QRESYNC, the
        changes since then come with it."""
        ...

    async def changes_in_selected(self, modseq: int) -> Changes:
        """What a QRESYNC SELECT would report, from the mailbox already selected."""
        ...

    async def changed_flags(self, top: int, since: int | None) -> Sequence[FetchRecord]:
        """The flags of UIDs 1 to ``top``: all of them, or only those changed after the
        modseq ``since``."""
        ...

    async def uids(self, low: int = 1, high: int | None = None) -> UidSet:
        """The UIDs of the mailbox from ``low`` to ``high`` (None: to the last)."""
        ...

    async def newest(self, count: int, exists: int) -> UidSet:
        """The UIDs of the selected mailbox's last ``count`` messages of the ``exists`` it
        holds, by message number: what a first sync's request waits for, without the
        server listing every UID."""
        ...

    async def which(self, uids: Collection[int]) -> UidSet:
        """Those of ``uids`` the mailbox still holds."""
        ...

    async def fetch_new(self, uids: Sequence[int]) -> list[FetchRecord]:
        """The records of ``uids`` with the list items; a UID expunged meanwhile is left out."""
        ...

    async def fetch_ids(self, uids: Sequence[int]) -> list[FetchRecord]:
        """Just enough of ``uids`` to know their Email ids (and flags)."""
        ...

    async def fetch_unparsed(self, uids: Sequence[int]) -> Raw:
        """:meth:`fetch_new`'s untagged responses as received, to be parsed elsewhere."""
        ...

    def unparsable(self) -> None:
        """A reply read by :meth:`fetch_unparsed` could not be parsed: the connection is
        not to be trusted any more."""
        ...
