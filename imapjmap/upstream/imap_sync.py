"""The email sync's reads (:class:`~imapjmap.upstream.sync_reads.SyncReads`) over one IMAP
session: each read is one command, whose text pure functions build from the session's
extensions and the server's profile."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.models import FetchRecord, Reply, UidSet
from imapjmap.imap.parse import fetched
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.sync_reads import Changes, Opened, Raw

# --- command text (pure) ----------------------------------------------------------------------


def list_items(header_fields: str, *, condstore: bool, message_items: Sequence[str]) -> str:
    """The FETCH items of a new message's list properties (docs/design.md, "Freshness"):
    ``header_fields`` are the headers the cache keeps, ``message_items`` the profile's ids
    (and Gmail mode's labels)."""
    items = [
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        f"BODY.PEEK[HEADER.FIELDS ({header_fields})]",
    ]
    if condstore:
        items.append("MODSEQ")
    items += message_items
    return "(" + " ".join(items) + ")"


def id_items(items: str) -> str:
    """:func:`list_items` without the body structure: enough to know a message's Email id."""
    return items.replace("ENVELOPE BODYSTRUCTURE ", "ENVELOPE ")


def changes_command(modseq: int) -> Command:
    """What a QRESYNC SELECT reports, asked of the mailbox already selected (RFC 7162
    §3.2.6): on Dovecot this saves the 100+ ms a 100,000-message Maildir takes to open."""
    return Command((f"UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE {modseq} VANISHED)",))


def flags_command(
    top: int, since: int | None, *, condstore: bool, extra: Sequence[str] = ()
) -> Command:
    """The flags (and ``extra`` items) of UIDs 1 to ``top``, only those changed after
    ``since`` where CONDSTORE can say so."""
    items = " ".join(["UID", "FLAGS", *(["MODSEQ"] if condstore else []), *extra])
    text = f"UID FETCH 1:{top} ({items})"
    if condstore and since:
        text += f" (CHANGEDSINCE {since})"
    return Command((text,))


def range_criteria(low: int, high: int | None) -> str:
    """SEARCH criteria for the UIDs from ``low`` to ``high`` (None: to the last)."""
    if low <= 1 and high is None:
        return "ALL"
    return f"UID {low}:{'*' if high is None else high}"


def newest_criteria(exists: int, count: int) -> str:
    """SEARCH criteria for the last ``count`` of ``exists`` messages, by message number:
    ``*`` is the last one even if some were expunged since EXISTS said ``exists``."""
    return f"{max(exists - count + 1, 1)}:*"


def search_command(criteria: str, *, esearch: bool) -> Command:
    """``UID SEARCH``; with ESEARCH its answer is ranges (a million UIDs as ``1:1000000``)."""
    return Command(
        (f"UID SEARCH RETURN (ALL) {criteria}" if esearch else f"UID SEARCH {criteria}",)
    )


def fetch_command(uids: Collection[int], items: str) -> Command:
    return Command((f"UID FETCH {sequence_set(uids)} {items}",))


def from_low(found: UidSet, low: int) -> UidSet:
    """The UIDs of ``found`` from ``low`` up: ``low:*`` also names the highest UID when
    every UID is below ``low`` (RFC 9051 §6.4.8)."""
    return UidSet(tuple((max(lo, low), hi) for lo, hi in found.ranges if hi >= low))


# --- the reads ---------------------------------------------------------------------------------


class ImapSyncReads:
    """:class:`~imapjmap.upstream.sync_reads.SyncReads` over one IMAP session.

    A new message is fetched with :func:`list_items`; the profile's ``flag_items`` are read
    with the flags (Gmail's labels: a label change moves MODSEQ as a flag change does).
    """

    def __init__(self, session: ImapSession, header_fields: str) -> None:
        self.session = session
        profile = session.profile
        self.items = list_items(
            header_fields, condstore=self.condstore, message_items=profile.message_items
        )
        self.flag_items = profile.flag_items

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
        return _changes(await self.session.execute(changes_command(modseq), what="UID FETCH"))

    async def changed_flags(self, top: int, since: int | None) -> Sequence[FetchRecord]:
        command = flags_command(top, since, condstore=self.condstore, extra=self.flag_items)
        return (await self.session.execute(command, what="UID FETCH")).fetches

    async def uids(self, low: int = 1, high: int | None = None) -> UidSet:
        found = await self._search(range_criteria(low, high))
        return found if high is not None or low <= 1 else from_low(found, low)

    async def newest(self, count: int, exists: int) -> UidSet:
        return await self._search(newest_criteria(exists, count))

    async def which(self, uids: Collection[int]) -> UidSet:
        return await self._search(f"UID {sequence_set(uids)}")

    async def _search(self, criteria: str) -> UidSet:
        command = search_command(criteria, esearch=self.session.has("ESEARCH"))
        reply = await self.session.execute(command, what="UID SEARCH")
        if len(reply.searches) == 1:
            return reply.searches[0].uid_set()
        return UidSet.of(uid for result in reply.searches for uid in result.uid_set())

    async def fetch_new(self, uids: Sequence[int]) -> list[FetchRecord]:
        return await self._fetch(uids, self.items)

    async def fetch_ids(self, uids: Sequence[int]) -> list[FetchRecord]:
        return await self._fetch(uids, id_items(self.items))

    async def _fetch(self, uids: Sequence[int], items: str) -> list[FetchRecord]:
        if not uids:
            return []
        reply = await self.session.execute(fetch_command(uids, items), what="UID FETCH")
        return fetched(reply, uids)

    async def fetch_unparsed(self, uids: Sequence[int]) -> Raw:
        command = fetch_command(uids, self.items)
        _, raw = await self.session.execute_unparsed(command, what="UID FETCH")
        return raw

    def unparsable(self) -> None:
        self.session.broken = True


def _changes(reply: Reply) -> Changes:
    return Changes(tuple(v.uids for v in reply.vanished), reply.fetches)
