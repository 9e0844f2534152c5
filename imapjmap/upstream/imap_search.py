"""The :class:`~imapjmap.upstream.search.Search` of an IMAP server: ``UID SEARCH`` per
(term, mailbox), big mailboxes in paced UID ranges.

Rules (beside those of :mod:`imapjmap.upstream.search`):

1. Non-ASCII terms are sent as UTF-8 literals with ``CHARSET UTF-8``; ASCII-only commands
   carry no CHARSET (US-ASCII, which every server must accept, RFC 3501 §6.4.4).
2. Mailboxes are searched concurrently; the pool bounds the number of connections, and
   ``imap.searches_per_account`` the SEARCHes of one account running upstream at once
   (``ImapPool.searches``, shared by all its requests).
3. A big mailbox is searched in UID ranges (``UID a:b <key> …``), one after the other,
   with ``pace`` awaited between two: a search of message contents takes seconds of a
   server core.  The ranges are contiguous, start at 1 and the last is open (``a:*``), so
   every UID is in exactly one range and messages that arrive meanwhile are in the last;
   each range is sized from the time the one before it took (about ``_CHUNK_SECONDS`` of
   the server's work).  A small mailbox, or one whose UIDNEXT is unknown, is searched in one
   command.
4. Where labels are mailboxes, the search runs in the folders that hold the messages, in
   that server's dialect (:mod:`imapjmap.upstream.gmail`), each in one command: it searches
   an index, and is never split.
5. A search ``within`` some UIDs (search Rule 6) names them as ranges of consecutive UIDs,
   at most ``_RANGES_PER_COMMAND`` a command: the line stays short however scattered they
   are, and every UID asked about is in exactly one command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

from imapjmap.errors import ImapCommandFailed
from imapjmap.imap.commands import Command, search_string
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream import gmail
from imapjmap.upstream.search import Pacer, SearchMailbox, SearchTerm, UidHits, no_pause

log = logging.getLogger(__name__)

# Rule 3: a range of a split search should keep the server busy about this long: short
# enough that another account's cheap request rarely finds a server core taken for long,
# long enough that the round trips and the server's setup of each SEARCH stay a small part.
_CHUNK_SECONDS: Final = 0.05
_FIRST_CHUNK: Final = 256  # UIDs in the first range; a mailbox with fewer is one search
_MIN_CHUNK: Final = 16
_MAX_GROWTH: Final = 4  # a range at most this many times as wide as the one before
# Rule 5: about 10 KB of command line at worst, well under any server's limit (Dovecot's 64
# KB, Cyrus's and Gmail's lower ones)
_RANGES_PER_COMMAND: Final = 500


def search_command(term: SearchTerm, uids: str | None = None) -> Command:
    """``UID SEARCH [CHARSET UTF-8] [UID <uids>] <key> <strings>`` for one term (Rules 1, 3).

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
    """The width of the next UID range, from the last one's and the time it took (Rule 3)."""
    if seconds <= 0:
        return width * _MAX_GROWTH
    wanted = int(width * _CHUNK_SECONDS / seconds)
    return max(_MIN_CHUNK, min(wanted, width * _MAX_GROWTH))


def uid_sets(uids: Iterable[int], per_command: int = _RANGES_PER_COMMAND) -> list[str]:
    """``uids`` as IMAP sequence sets of at most ``per_command`` ranges each (Rule 5)."""
    ranges: list[str] = []
    run: list[int] = []
    for uid in sorted(set(uids)):
        if run and uid == run[1] + 1:
            run[1] = uid
            continue
        if run:
            ranges.append(_range(*run))
        run = [uid, uid]
    if run:
        ranges.append(_range(*run))
    return [",".join(ranges[i : i + per_command]) for i in range(0, len(ranges), per_command)]


def _range(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}:{high}"


async def _search_within(
    session: ImapSession, term: SearchTerm, uids: Collection[int], pace: Pacer
) -> set[int]:
    """One term among ``uids`` of the selected mailbox (Rule 5)."""
    found: set[int] = set()
    took: float | None = None
    for uid_set in uid_sets(uids):
        if took is not None:
            await pace(took)
        started = time.monotonic()
        reply = await session.execute(search_command(term, uid_set), what="UID SEARCH")
        took = time.monotonic() - started
        found.update(uid for result in reply.searches for uid in result.ids)
    return found


async def _search_ranges(session: ImapSession, term: SearchTerm, pace: Pacer) -> set[int]:
    """One term in the selected mailbox, range after range (Rule 3)."""
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
    within: Collection[int] | None = None,
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
                if command is None and within is not None:
                    found[term] = await _search_within(session, term, within, pace)
                    continue
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


async def search_uids(
    pool: ImapPool,
    mailboxes: Iterable[SearchMailbox],
    terms: Collection[SearchTerm],
    command: Callable[[SearchTerm], Command] | None = None,
    *,
    pace: Pacer = no_pause,
    within: Mapping[str, Collection[int]] | None = None,
) -> UidHits:
    """Run every term in every one of ``mailboxes`` (Rules 2 and 3; search Rules 2 and 5).

    ``command``: a search of a whole mailbox in another dialect (Rule 4), sent as it is; by
    default :func:`search_command`, split in UID ranges in a big mailbox with ``pace``
    awaited between two ranges, or only among the UIDs ``within`` names for the mailbox
    (Rule 5).
    """
    if not terms:
        return {}
    boxes = list(mailboxes)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    _search_one(
                        pool,
                        box,
                        terms,
                        command,
                        pace,
                        None if within is None else within.get(box.mailbox_id, ()),
                    )
                )
                for box in boxes
            ]
    except ExceptionGroup as failed:
        # one mailbox's failure is the query's: raise it as itself (the group stays chained)
        raise failed.exceptions[0] from failed
    hits: UidHits = {term: {} for term in terms}
    for box, task in zip(boxes, tasks, strict=True):
        for term, uids in task.result().items():
            hits[term][box.mailbox_id] = uids
    return hits


async def search(
    pool: ImapPool,
    mailboxes: Iterable[SearchMailbox],
    terms: Collection[SearchTerm],
    *,
    scope: Collection[str] | None = None,
    pace: Pacer = no_pause,
    within: Mapping[str, Collection[int]] | None = None,
) -> UidHits:
    """:meth:`imapjmap.upstream.search.Search.search` over an account's pool: its profile
    says whether labels are mailboxes (Rule 4; such a search of an index answers for the
    whole folder, so ``within`` is left to the caller, search Rule 6)."""
    if not terms:
        return {}
    if pool.profile.labels:
        boxes = gmail.search_boxes(mailboxes, scope)
        return await search_uids(pool, boxes, terms, gmail.search_command)
    wanted = [
        box
        for box in mailboxes
        if (scope is None or box.mailbox_id in scope)
        and box.messages != 0
        and (within is None or within.get(box.mailbox_id))
    ]
    return await search_uids(pool, wanted, terms, pace=pace, within=within)
