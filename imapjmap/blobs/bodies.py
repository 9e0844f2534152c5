"""Message bodies on demand: the exact ``BODY.PEEK[]`` bytes, kept in a bounded cache.

Blobs are immutable (an Email's bytes never change), so a cached body never goes stale; the
cache is keyed by (account, email id) so one account can never read another's entry, and it
is bounded by total bytes, not by count, so a few huge messages cannot exhaust memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import cachetools

from imapjmap.errors import ImapCommandFailed
from imapjmap.mime.email import email_properties
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.upstream.api import BodyReads

log = logging.getLogger(__name__)

CACHE_BYTES: Final = 64 * 1024 * 1024

_bodies: cachetools.LRUCache[tuple[str, str], bytes] = cachetools.LRUCache(
    maxsize=CACHE_BYTES, getsizeof=len
)


def _where(tx: Tx, account_id: str, email_id: str) -> list[tuple[str, int]]:
    """(IMAP mailbox name, uid) of every visible copy of the email (not Gmail mode's label
    locations, whose uid < 0 is no IMAP UID: see :mod:`imapjmap.store.labels`)."""
    names = {row.id: row.imap_name for row in q.live_mailboxes(tx, account_id)}
    return [
        (names[loc.mailbox_id], loc.uid)
        for loc in em.locations_of_email(tx, account_id, email_id)
        if not loc.deleted and loc.uid > 0 and loc.mailbox_id in names
    ]


async def fetch_message(
    store: Store, upstream: BodyReads, account_id: str, email_id: str
) -> bytes | None:
    """The message's exact bytes, or None when the Email is unknown (or vanished upstream)."""
    key = (account_id, email_id)
    cached = _bodies.get(key)
    if cached is not None:
        return cached
    places = await store.read(lambda tx: _where(tx, account_id, email_id), account=account_id)
    for mailbox, uid in places:
        try:
            body = await upstream.message(mailbox, uid)
        except ImapCommandFailed:
            continue  # that mailbox went away meanwhile: try another copy
        if body is not None:
            if len(body) <= CACHE_BYTES // 4:
                _bodies[key] = body
            return body
    return None


async def fetch_previews(
    store: Store, upstream: BodyReads, account_id: str, email_ids: Sequence[str]
) -> dict[str, str]:
    """Previews for emails that have none cached yet (the server's, RFC 8970 PREVIEW, where
    it has them, else computed from the body); stored so the next Email/get reads them
    from the cache."""
    where = await store.read(
        lambda tx: {e: _where(tx, account_id, e) for e in email_ids}, account=account_id
    )
    found = await _server_previews(upstream, where)
    for email_id in email_ids:
        if email_id in found or not where.get(email_id):
            continue
        raw = await fetch_message(store, upstream, account_id, email_id)
        if raw is not None:
            props = email_properties(
                raw,
                properties=["preview"],
                body_properties=[],
                fetch_text=False,
                fetch_html=False,
                fetch_all=False,
                max_body_value_bytes=0,
                blob_prefix="G",
            )
            found[email_id] = str(props.get("preview") or "")

    def save(tx: Tx) -> None:
        for email_id, preview in found.items():
            em.set_email_fields(tx, account_id, email_id, None, preview=preview)

    if found:
        await store.run(save, account=account_id)
    return found


async def _server_previews(
    upstream: BodyReads, where: dict[str, list[tuple[str, int]]]
) -> dict[str, str]:
    """The server's previews, one request per mailbox."""
    by_mailbox: dict[str, dict[int, str]] = {}
    for email_id, places in where.items():
        if places:
            mailbox, uid = places[0]
            by_mailbox.setdefault(mailbox, {})[uid] = email_id
    found: dict[str, str] = {}
    for mailbox, uids in by_mailbox.items():
        try:
            previews = await upstream.previews(mailbox, uids)
        except ImapCommandFailed:
            continue
        for uid, preview in previews.items():
            if uid in uids:
                found[uids[uid]] = preview[:256]
    return found
