"""A refresh's reads (:mod:`imapjmap.upstream.refresh_reads`) over an account's IMAP pool:
each lease is a pooled session, each read one command."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from imapjmap.errors import ImapCommandFailed
from imapjmap.imap.models import ListEntry, MailboxStatus
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.imap_sync import ImapSyncReads
from imapjmap.upstream.profiles import Profile
from imapjmap.upstream.sync_reads import SyncReads


@dataclass(frozen=True, slots=True)
class ImapRefreshReads:
    """:class:`~imapjmap.upstream.refresh_reads.RefreshReads` over one pooled session;
    equal to another lease of the same session."""

    session: ImapSession

    @property
    def profile(self) -> Profile:
        return self.session.profile

    @property
    def kept_open(self) -> str | None:
        selected = self.session.selected
        return selected.name if selected is not None else None

    @property
    def broken(self) -> bool:
        return self.session.broken

    async def list_with_status(
        self, *, sync_selected: bool = False
    ) -> tuple[Sequence[ListEntry], Sequence[MailboxStatus]]:
        return await self.session.list_mailboxes(sync_selected=sync_selected)

    async def status(self, name: str, items: str | None = None) -> MailboxStatus | None:
        try:
            return await self.session.status(name, items)
        except ImapCommandFailed:
            return None

    async def rights(self, name: str) -> str | None:
        session = self.session
        if not session.has("ACL"):
            return None
        listed = session.listed_rights.get(name)
        if listed is not None:
            return listed  # came with the LIST (RFC 8440 LIST-MYRIGHTS): no round trip
        try:
            reply = await session.execute(
                session.mailbox_command("MYRIGHTS", name), what="MYRIGHTS"
            )
        except ImapCommandFailed:
            return None
        return reply.myrights.get(name)

    async def keep_open(self, name: str | None) -> None:
        session = self.session
        if name is None:
            await session.unselect()
        elif session.selected is None or session.selected.name != name:
            await session.select(name, readonly=True)

    def sync_reads(self, header_fields: str) -> SyncReads:
        return ImapSyncReads(self.session, header_fields)


class ImapRefresh:
    """:class:`~imapjmap.upstream.refresh_reads.RefreshSource` over ``self.pool`` (a base
    of :class:`~imapjmap.upstream.imap.ImapUpstream`)."""

    __slots__ = ()
    pool: ImapPool

    @asynccontextmanager
    async def refresh_reads(self, prefer: str | None = None) -> AsyncIterator[ImapRefreshReads]:
        async with self.pool.session(prefer=prefer) as session:
            yield ImapRefreshReads(session)
