"""Quotas over IMAP (RFC 9208): one ``GETQUOTAROOT INBOX`` names the quota roots that hold
the inbox and, in the same reply, every resource of each with its usage and limit.

The inbox stands for the account: a server that gives folders roots of their own (rare)
has those folders' quotas left out, since JMAP's scopes are the account, a domain and
the whole server, never one folder.
"""

from __future__ import annotations

from typing import Final

from imapjmap.imap.commands import Command
from imapjmap.imap.models import Reply
from imapjmap.imap.pool import ImapPool
from imapjmap.upstream.quota import QuotaReading

GETQUOTAROOT: Final = Command.text("GETQUOTAROOT INBOX")


def readings(reply: Reply) -> list[QuotaReading]:
    """The resources of the inbox's quota roots in a GETQUOTAROOT reply (pure).

    A root the reply names without a QUOTA line for it has nothing to report; a QUOTA line
    for a root that does not hold the inbox is ignored.
    """
    roots = next((r for box, r in reply.quotaroots.items() if box.upper() == "INBOX"), ())
    found: list[QuotaReading] = []
    seen: set[tuple[str, str]] = set()
    for quota in reply.quotas:
        if quota.root not in roots:
            continue
        for resource, (used, limit) in quota.resources.items():
            if (quota.root, resource) not in seen:
                seen.add((quota.root, resource))
                found.append(QuotaReading(quota.root, resource, used, limit))
    return found


async def quotas(pool: ImapPool) -> list[QuotaReading]:
    if "QUOTA" not in pool.capabilities:
        return []
    async with pool.session() as session:
        reply = await session.execute(GETQUOTAROOT, what="GETQUOTAROOT")
    return readings(reply)
