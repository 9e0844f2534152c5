"""What is shared with a login (:class:`~imapjmap.upstream.shares.ShareSource`), asked
over a new connection of its IMAP pool: the namespaces, one LIST per foreign namespace, and
the rights of each mailbox found (from the LIST where the server says them, RFC 8440; else
MYRIGHTS).

A new connection, because a server may keep what a session first saw of other users'
folders for the session's life (Dovecot lists the owners sharing with a login once per
session); when the shares found differ from what the pool's connections last listed, they
are replaced (``ImapPool.renew``) so that the shares' refreshes see them too.  (A server
that lists no foreign namespace under ``*`` has them replaced at each discovery.)"""

from __future__ import annotations

from imapjmap.errors import ImapCommandFailed
from imapjmap.imap.models import ListEntry
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.shares import Namespaces, Share, find_shares


async def shares(pool: ImapPool) -> list[Share]:
    """Every share the login sees now; none where the server has no NAMESPACE or ACL."""
    known = pool.capabilities
    if pool.profile.labels or (known and "NAMESPACE" not in known):
        # Gmail's labels are all the login's own, and without NAMESPACE no other user's
        # folder can be found: not worth a login of its own at each session fetch.
        return []
    session = await pool.open_dedicated()
    try:
        found = await _shares(session)
    finally:
        await session.close()
    if frozenset(s.prefix for s in found) != (pool.share_prefixes or frozenset()):
        pool.renew()
    return found


async def _shares(session: ImapSession) -> list[Share]:
    if not session.has("NAMESPACE"):
        return []
    namespaces = Namespaces.from_reply(await session.namespace())
    entries: list[ListEntry] = []
    rights: dict[str, str | None] = {}
    for prefix, _ in namespaces.foreign():
        if not prefix:
            continue
        listed, _ = await session.list_mailboxes(with_status=False, pattern=prefix + "*")
        for entry in listed:
            entries.append(entry)
            if not entry.has("\\Noselect"):
                rights[entry.name] = await _rights(session, entry.name)
    return find_shares(namespaces, entries, rights)


async def _rights(session: ImapSession, name: str) -> str | None:
    if not session.has("ACL"):
        return None
    listed = session.listed_rights.get(name)
    if listed is not None:
        return listed
    try:
        reply = await session.execute(session.mailbox_command("MYRIGHTS", name), what="MYRIGHTS")
    except ImapCommandFailed:
        return ""  # listed, yet no rights to ask about it: nothing writable
    return reply.myrights.get(name)
