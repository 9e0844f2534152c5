"""The Email/query conditions only the upstream can answer, mapped back to Emails.

``text``, ``body`` and ``header`` need the message contents, which the cache does not keep:
:func:`search` asks the upstream (:mod:`imapjmap.upstream.search`) for the UIDs matching
each distinct term in the mailboxes that can hold results, before the query's transaction;
:func:`email_hits` maps them to Email ids through ``locations`` inside it, so a UID the
cache does not know (a message that arrived after the refresh) is no hit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from imapjmap.methods.context import MethodContext
from imapjmap.store import email_queries as eq
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.upstream.api import SearchMailbox, SearchTerm, UidHits


def search_mailboxes(rows: Sequence[q.MailboxRow]) -> list[SearchMailbox]:
    """What the upstream needs to know of the cached mailboxes to search them."""
    return [
        SearchMailbox(
            row.id,
            row.imap_name,
            row.uidvalidity,
            row.messages,
            row.role,
            row.my_rights.get("mayReadItems", False),
        )
        for row in rows
    ]


async def search(
    ctx: MethodContext,
    terms: Collection[SearchTerm],
    scope: Collection[str] | None,
    *,
    within: Mapping[str, Collection[int]] | None = None,
    mailboxes: Sequence[SearchMailbox] | None = None,
) -> UidHits:
    """The UIDs matching each term in the mailboxes of ``scope`` (None: every mailbox),
    among the UIDs of ``within`` when given (upstream search Rule 6), paced by the store's
    share for this account while other accounts are active.  ``mailboxes``: the account's,
    as :func:`search_mailboxes` made them (read from the cache when None).

    Raises:
        ImapCommandFailed: the upstream refused a search (e.g. ``[BADCHARSET]``).
        ImapCommandTooLong: the upstream refused a search as too long.
        UpstreamUnavailable: the upstream could not be reached.
    """
    if not terms:
        return {}
    if mailboxes is None:
        rows = await ctx.read(lambda tx: q.live_mailboxes(tx, ctx.account_id))
        mailboxes = search_mailboxes(rows)

    async def pace(worked: float) -> None:
        await ctx.store.pace_upstream(ctx.account_id, worked)

    return await ctx.upstream.search(mailboxes, terms, scope=scope, pace=pace, within=within)


def email_hits(
    tx: Tx, account_id: str, hits: Mapping[SearchTerm, Mapping[str, set[int]]]
) -> dict[SearchTerm, set[str]]:
    """Map the UIDs of each term to email ids (inside the query's transaction)."""
    return {
        term: {
            email_id
            for mailbox_id, uids in by_mailbox.items()
            for email_id in eq.email_ids_at(tx, account_id, mailbox_id, uids)
        }
        for term, by_mailbox in hits.items()
    }
