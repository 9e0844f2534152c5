"""What the email sync reads from the server: a mailbox's changes since a cursor, and the
records of given UIDs with the list items.

:class:`SyncReads` is all :class:`~imapjmap.sync.emails.MailboxSync` sees of a connection;
:class:`ImapSyncReads` says it in IMAP over one :class:`ImapSession`.  Each method is one
command (one round trip); which ones a sync sends, and in what order, is decided by the
pure planning of :mod:`imapjmap.sync.emails`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.models import FetchRecord, Reply, UidSet
from imapjmap.imap.parse import fetched
from imapjmap.imap.session import ImapSession
from imapjmap.sync.parsing import Raw


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


class ImapSyncReads:
    """:class:`SyncReads` over one IMAP session.

    ``items`` are the FETCH items of a new message (the server's id and label items among
    them); ``flag_items`` are read with the flags (Gmail's labels: a label change moves
    MODSEQ as a flag change does).  Both come from the server's profile.
    """

    def __init__(self, session: ImapSession, items: str, *, flag_items: Sequence[str] = ()) -> None:
        self.session = session
        self.items = items
        self.flag_items = "".join(" " + item for item in flag_items)

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.session.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.session.enabled

    @property
    def selected(self) -> tuple[str, int | None] | None:
        info = self.session.selected
        return None if info is None else (info.name, info.uidvalidity)

    async def open(self, name: str, since: tuple[int, int] | None = None) -> Opened:
        info = await self.session.select(name, readonly=True, qresync=since)
        changes = _changes(info.reply) if since is not None and self.qresync else Changes()
        return Opened(info.uidvalidity, info.uidnext, info.highestmodseq, info.exists, changes)

    async def changes_in_selected(self, modseq: int) -> Changes:
        # RFC 7162 §3.2.6: on Dovecot this saves the 100+ ms a 100,000-message Maildir
        # takes to open again
        text = f"UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE {modseq} VANISHED)"
        return _changes(await self.session.execute(Command((text,)), what="UID FETCH"))

    async def changed_flags(self, top: int, since: int | None) -> Sequence[FetchRecord]:
        items = ("UID FLAGS MODSEQ" if self.condstore else "UID FLAGS") + self.flag_items
        text = f"UID FETCH 1:{top} ({items})"
        if self.condstore and since:
            text += f" (CHANGEDSINCE {since})"
        reply = await self.session.execute(Command((text,)), what="UID FETCH")
        return reply.fetches

    async def uids(self, low: int = 1, high: int | None = None) -> UidSet:
        if low <= 1 and high is None:
            return await self._search("ALL")
        found = await self._search(f"UID {low}:{'*' if high is None else high}")
        # "low:*" also names the highest UID when every UID is below low
        return UidSet(tuple((max(lo, low), hi) for lo, hi in found.ranges if hi >= low))

    async def which(self, uids: Collection[int]) -> UidSet:
        return await self._search(f"UID {sequence_set(uids)}")

    async def _search(self, criteria: str) -> UidSet:
        """The UIDs as ranges: ESEARCH sends a million UIDs as ``1:1000000``, and they stay so."""
        session = self.session
        if session.has("ESEARCH"):
            text = f"UID SEARCH RETURN (ALL) {criteria}"
        else:
            text = f"UID SEARCH {criteria}"
        reply = await session.execute(Command((text,)), what="UID SEARCH")
        if len(reply.searches) == 1:
            return reply.searches[0].uid_set()
        return UidSet.of(uid for result in reply.searches for uid in result.uid_set())

    async def fetch_new(self, uids: Sequence[int]) -> list[FetchRecord]:
        return await self._fetch(uids, self.items)

    async def fetch_ids(self, uids: Sequence[int]) -> list[FetchRecord]:
        items = self.items.replace("ENVELOPE BODYSTRUCTURE ", "ENVELOPE ")
        return await self._fetch(uids, items)

    async def _fetch(self, uids: Sequence[int], items: str) -> list[FetchRecord]:
        if not uids:
            return []
        reply = await self.session.execute(
            Command((f"UID FETCH {sequence_set(uids)} {items}",)), what="UID FETCH"
        )
        return fetched(reply, uids)

    async def fetch_unparsed(self, uids: Sequence[int]) -> Raw:
        text = f"UID FETCH {sequence_set(uids)} {self.items}"
        _, raw = await self.session.execute_unparsed(Command((text,)), what="UID FETCH")
        return raw

    def unparsable(self) -> None:
        self.session.broken = True


def _changes(reply: Reply) -> Changes:
    return Changes(tuple(v.uids for v in reply.vanished), reply.fetches)
