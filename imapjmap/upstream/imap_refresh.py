"""A refresh's reads (:mod:`imapjmap.upstream.refresh_reads`) over an account's IMAP pool:
each lease is a pooled session, each read one command."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from imapjmap.errors import ImapCommandFailed
from imapjmap.imap.models import ListEntry, MailboxStatus
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.imap_sync import ImapSyncReads
from imapjmap.upstream.profiles import Profile
from imapjmap.upstream.shares import Namespaces, Share, find_shares, is_personal
from imapjmap.upstream.sync_reads import SyncReads


@dataclass(frozen=True, slots=True)
class ImapRefreshReads:
    """:class:`~imapjmap.upstream.refresh_reads.RefreshReads` over one pooled session;
    equal to another lease of the same session.  ``share``: the reads of that share's
    account (its mailboxes alone); None: the login's personal account, whose listing
    leaves out every other user's and shared folder (:mod:`imapjmap.upstream.shares`)."""

    session: ImapSession
    share: Share | None = None
    # told the prefixes of the shares a listing of the personal account showed
    noticed: Callable[[frozenset[str]], None] | None = field(default=None, compare=False)

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
        session = self.session
        if self.share is not None:
            pattern = self.share.prefix + "*"
            entries, statuses = await session.list_mailboxes(
                sync_selected=sync_selected, pattern=pattern
            )
            return _unique(entries), statuses
        entries, statuses = await session.list_mailboxes(sync_selected=sync_selected)
        if not session.has("NAMESPACE"):
            return entries, statuses
        namespaces = Namespaces.from_reply(await session.namespace())
        if not any(prefix for prefix, _ in namespaces.foreign()):
            return entries, statuses
        personal = [e for e in entries if is_personal(e.name, namespaces)]
        if self.noticed is not None:
            foreign = [e for e in entries if not is_personal(e.name, namespaces)]
            self.noticed(frozenset(s.prefix for s in find_shares(namespaces, foreign, {})))
        return personal, [s for s in statuses if is_personal(s.name, namespaces)]

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
    share: Share | None

    @asynccontextmanager
    async def refresh_reads(
        self, prefer: str | None = None, avoid: str | None = None
    ) -> AsyncIterator[ImapRefreshReads]:
        pool = self.pool
        async with pool.session(prefer=prefer, avoid=avoid) as session:
            if self.share is not None:
                yield ImapRefreshReads(session, self.share)
            else:
                yield ImapRefreshReads(session, None, lambda seen: _note(pool, seen))

    @asynccontextmanager
    async def spare_reads(self, avoid: str) -> AsyncIterator[ImapRefreshReads | None]:
        async with self.pool.spare_session(avoid=avoid) as session:
            if session is None:
                yield None
            elif self.share is not None:
                yield ImapRefreshReads(session, self.share)
            else:
                yield ImapRefreshReads(session, None, lambda seen: _note(self.pool, seen))


def _unique(entries: Sequence[ListEntry]) -> list[ListEntry]:
    """One entry per name: Dovecot 2.3 may list a shared mailbox twice, once as
    ``\\Noselect``, in a session that listed its namespace before (the selectable one is
    the mailbox)."""
    by_name: dict[str, ListEntry] = {}
    for entry in entries:
        seen = by_name.get(entry.name)
        if seen is None or (seen.has("\\Noselect") and not entry.has("\\Noselect")):
            by_name[entry.name] = entry
    return list(by_name.values())


def _note(pool: ImapPool, prefixes: frozenset[str]) -> None:
    pool.share_prefixes = prefixes
