"""The email sync's reads (:class:`~imapjmap.upstream.sync_reads.SyncReads`) over one IMAP
session: each read one command, its text built here from the session's extensions and the
server's profile."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.models import FetchRecord, Reply, UidSet
from imapjmap.imap.parse import fetched
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.sync_reads import Changes, Opened, Raw


def list_items(session: ImapSession, header_fields: str) -> str:
    """The FETCH items of a new message's list properties (docs/design.md, "Freshness"):
    ``header_fields`` are the headers the cache keeps, the profile adds the server's ids."""
    items = [
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        f"BODY.PEEK[HEADER.FIELDS ({header_fields})]",
    ]
    if "CONDSTORE" in session.enabled:
        items.append("MODSEQ")
    items += session.profile.message_items  # ids, and Gmail mode's labels
    return "(" + " ".join(items) + ")"


class ImapSyncReads:
    """:class:`~imapjmap.upstream.sync_reads.SyncReads` over one IMAP session.

    A new message is fetched with :func:`list_items`; the profile's ``flag_items`` are read
    with the flags (Gmail's labels: a label change moves MODSEQ as a flag change does).
    """

    def __init__(self, session: ImapSession, header_fields: str) -> None:
        self.session = session
        self.items = list_items(session, header_fields)
        self.flag_items = "".join(" " + item for item in session.profile.flag_items)

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
