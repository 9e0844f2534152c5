"""The Email/query conditions only the upstream can answer: ``UID SEARCH`` per mailbox.

``text``, ``body`` and ``header`` need the message contents, which the cache does not keep.
Each distinct term is searched, with one ``UID SEARCH`` per (term, mailbox), in every
mailbox that can hold results (:func:`~imapjmap.query.email_filter.search_scope`); the
UIDs are mapped back to email ids through ``locations`` in the query's own transaction.

Rules:
1. Non-ASCII terms are sent as UTF-8 literals with ``CHARSET UTF-8``; ASCII-only commands
   carry no CHARSET (US-ASCII, which every server must accept, RFC 3501 §6.4.4).
2. A mailbox whose UIDVALIDITY differs from the cache's (a reset the sync has not seen
   yet), or that cannot be selected (deleted meanwhile), contributes no hits: its UIDs
   cannot be mapped.  The next refresh repairs the cache; the query is then re-run by the
   client when the states move.
3. Mailboxes are searched concurrently; the pool bounds the number of connections, and
   ``imap.searches_per_account`` the SEARCHes of one account running upstream at once
   (``ImapPool.searches``, shared by all its requests): a search of message contents keeps
   an IMAP server core busy, and one account must not take every core from the others.
4. Gmail mode searches All Mail (and the Trash or Spam when in scope) instead of each
   label, and sends ``text`` as ``X-GM-RAW`` (:func:`imapjmap.sync.gmail.raw_search`).
5. A big mailbox is searched in UID ranges (``UID a:b <key> …``), one after the other,
   with a pause between two (``pace``, while other accounts are active: the store's share,
   ``Store.pace_upstream``): a search of message contents takes seconds of a server core,
   and the proxy can only share what it can stop.  The ranges are contiguous, start at 1
   and the last is open (``a:*``), so every UID is in exactly one range and messages that
   arrive meanwhile are in the last; each range is sized from the time the one before it
   took (about ``_CHUNK_SECONDS`` of the server's work).  A small mailbox, or one whose
   UIDNEXT is unknown, is searched in one command.  Gmail's ``X-GM-RAW`` searches an index
   and is never split.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from imapjmap.errors import ImapCommandFailed
from imapjmap.imap.commands import Command, search_string
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.query.email_filter import SearchTerm
from imapjmap.store import email_queries as eq
from imapjmap.store.db import Tx
from imapjmap.sync import gmail

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SearchMailbox:
    """Where to search: the mailbox's id, IMAP name and the UIDVALIDITY the cache knows."""

    mailbox_id: str
    imap_name: str
    uidvalidity: int | None


UidHits = dict[SearchTerm, dict[str, set[int]]]
"""term -> mailbox id -> matching UIDs."""

Pacer = Callable[[float], Awaitable[None]]
"""Awaited between two UID ranges of a search with the seconds the last one took (Rule 5)."""

# Rule 5: a range of a split search should keep the server busy about this long: short
# enough that another account's cheap request rarely finds a server core taken for long,
# long enough that the round trips and the server's setup of each SEARCH stay a small part.
_CHUNK_SECONDS: Final = 0.05
_FIRST_CHUNK: Final = 256  # UIDs in the first range; a mailbox with fewer is one search
_MIN_CHUNK: Final = 16
_MAX_GROWTH: Final = 4  # a range at most this many times as wide as the one before


def search_command(term: SearchTerm, uids: str | None = None) -> Command:
    """``UID SEARCH [CHARSET UTF-8] [UID <uids>] <key> <strings>`` for one term (Rules 1, 5).

    Raises:
        ValueError: a string that cannot be sent (a lone surrogate).
    """
    strings = [search_string(arg) for arg in term.args]
    head = "UID SEARCH"
    if not all(arg.isascii() for arg in term.args):
        head += " CHARSET UTF-8"
    if uids is not None:
        head += f" UID {uids}"
    return Command.join([head, term.key, *strings])


def next_width(width: int, seconds: float) -> int:
    """The width of the next UID range, from the last one's and the time it took (Rule 5)."""
    if seconds <= 0:
        return width * _MAX_GROWTH
    wanted = int(width * _CHUNK_SECONDS / seconds)
    return max(_MIN_CHUNK, min(wanted, width * _MAX_GROWTH))


def gmail_search_command(term: SearchTerm) -> Command:
    """Gmail mode (Rule 4): ``text`` as ``X-GM-RAW``, other terms as standard keys."""
    return gmail.raw_search(term.key, term.args)


async def _search_ranges(session: ImapSession, term: SearchTerm, pace: Pacer) -> set[int]:
    """One term in the selected mailbox, range after range (Rule 5)."""
    selected = session.selected
    top = selected.uidnext - 1 if selected is not None and selected.uidnext else 0
    if top <= _FIRST_CHUNK:
        reply = await session.execute(search_command(term), what="UID SEARCH")
        return {uid for result in reply.searches for uid in result.ids}
    found: set[int] = set()
    low, width = 1, _FIRST_CHUNK
    while True:
        high = low + width - 1
        last = high >= top
        started = time.monotonic()
        command = search_command(term, f"{low}:*" if last else f"{low}:{high}")
        reply = await session.execute(command, what="UID SEARCH")
        took = time.monotonic() - started
        # "low:*" with low above every UID names the highest UID (RFC 3501 §6.4.8): an
        # earlier range holds it already
        found.update(uid for result in reply.searches for uid in result.ids if uid >= low)
        if last:
            return found
        await pace(took)
        low, width = high + 1, next_width(width, took)


async def _search_one(
    pool: ImapPool,
    mailbox: SearchMailbox,
    terms: Collection[SearchTerm],
    command: Callable[[SearchTerm], Command] | None,
    pace: Pacer,
) -> dict[SearchTerm, set[int]]:
    found: dict[SearchTerm, set[int]] = {}
    try:
        async with pool.searches, pool.session(mailbox.imap_name, readonly=True) as session:
            selected = session.selected
            known, now = mailbox.uidvalidity, selected.uidvalidity if selected else None
            if known is not None and now is not None and known != now:
                log.info("search: %s changed UIDVALIDITY; skipped", mailbox.mailbox_id)
                return {}
            for term in terms:
                if command is None:
                    found[term] = await _search_ranges(session, term, pace)
                    continue
                reply = await session.execute(command(term), what="UID SEARCH")
                found[term] = {uid for result in reply.searches for uid in result.ids}
    except ImapCommandFailed as exc:
        if exc.what in ("SELECT", "EXAMINE"):
            log.info("search: cannot open %s; skipped", mailbox.mailbox_id)
            return {}
        raise
    return found


async def _no_pause(seconds: float) -> None:
    return None


async def search_uids(
    pool: ImapPool,
    mailboxes: Iterable[SearchMailbox],
    terms: Collection[SearchTerm],
    command: Callable[[SearchTerm], Command] | None = None,
    *,
    pace: Pacer = _no_pause,
) -> UidHits:
    """Run every term in every mailbox (Rules 2, 3 and 5).

    ``command``: a search of a whole mailbox in another dialect (Gmail's, Rule 4), sent as
    it is; by default :func:`search_command`, split in UID ranges in a big mailbox with
    ``pace`` awaited between two ranges.

    Raises:
        ImapCommandFailed: a SEARCH answered NO (e.g. ``[BADCHARSET]``).
        ImapCommandTooLong: the server refused a SEARCH as too long.
        UpstreamUnavailable: the upstream could not be reached.
    """
    if not terms:
        return {}
    boxes = list(mailboxes)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_search_one(pool, box, terms, command, pace)) for box in boxes
            ]
    except ExceptionGroup as failed:
        # one mailbox's failure is the query's: raise it as itself (the group stays chained)
        raise failed.exceptions[0] from failed
    hits: UidHits = {term: {} for term in terms}
    for box, task in zip(boxes, tasks, strict=True):
        for term, uids in task.result().items():
            hits[term][box.mailbox_id] = uids
    return hits


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
