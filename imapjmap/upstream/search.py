"""Searching the upstream: the Email/query conditions the cache cannot answer.

``text``, ``body`` and ``header`` need the message contents, which the cache does not keep,
so Email/query asks the upstream for the UIDs that match each distinct condition (a
:class:`SearchTerm`) in every mailbox that can hold results, before it opens its cache
transaction, and maps the UIDs back to Emails there.

Rules (what every :class:`Search` promises):

1. Only mailboxes that can hold results are searched: those in ``scope`` (every mailbox
   when it is None) that are not known to be empty.  Where the upstream shows labels as
   mailboxes, a label's messages are searched in the folder that holds them all.
2. A mailbox whose UIDVALIDITY differs from the cache's (a reset the sync has not seen yet),
   or that cannot be opened (deleted meanwhile), contributes no hits: its UIDs cannot be
   mapped.  The next refresh repairs the cache; the client re-runs the query when the
   states move.
3. One account's searches of message contents are bounded upstream at once: such a search
   keeps a server core busy, and one account must not take every core from the others.
4. ``pace`` is awaited, with the seconds the server worked, wherever a long search can stop
   for a moment: the proxy can only share what it can stop.
5. A search the upstream refuses is raised as itself, once, whichever mailbox it came from.
6. ``within`` (mailbox id -> UIDs) narrows a search to the messages its caller will look at:
   a mailbox not in it is not searched, and in one that is, only those UIDs need be.  Hits
   outside them may still be reported (a server that searches an index answers for the
   whole mailbox at the same cost), so the caller maps only the UIDs it asked about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class SearchTerm:
    """One condition only the upstream can answer: ``TEXT``, ``BODY`` or ``HEADER`` with
    its strings (a header's name, then the text it must contain, empty for any)."""

    key: Literal["TEXT", "BODY", "HEADER"]
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchMailbox:
    """A mailbox as the cache knows it: its id, upstream name and UIDVALIDITY (Rule 2), its
    message count (None: unknown), role and whether its messages may be read (Rule 1)."""

    mailbox_id: str
    imap_name: str
    uidvalidity: int | None
    messages: int | None = None
    role: str | None = None
    readable: bool = True


UidHits = dict[SearchTerm, dict[str, set[int]]]
"""term -> mailbox id -> matching UIDs."""

Pacer = Callable[[float], Awaitable[None]]
"""Awaited between two parts of a long search with the seconds the last one took (Rule 4)."""


async def no_pause(seconds: float) -> None:
    """A :data:`Pacer` that never waits."""
    return None


class Search(Protocol):
    """Finds the UIDs matching each term in the mailboxes that can hold results."""

    async def search(
        self,
        mailboxes: Iterable[SearchMailbox],
        terms: Collection[SearchTerm],
        *,
        scope: Collection[str] | None = None,
        pace: Pacer = no_pause,
        within: Mapping[str, Collection[int]] | None = None,
    ) -> UidHits:
        """Every term in every mailbox of ``scope`` (module Rules), among the UIDs of
        ``within`` when given (Rule 6).

        Raises:
            ImapCommandFailed: the upstream refused a search (e.g. ``[BADCHARSET]``).
            ImapCommandTooLong: the upstream refused a search as too long.
            UpstreamUnavailable: the upstream could not be reached.
        """
        ...
