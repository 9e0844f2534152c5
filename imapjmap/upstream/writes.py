"""Writes to the upstream: mailboxes (create, rename, delete, subscribe) and messages
(append, store flags, copy, move, remove), with what the server proved of each.

The rules every implementation keeps are those of docs/design.md, "Writes"; the IMAP one
(``upstream.imap``) says how IMAP answers prove them.  In short: a write counts as done
for a message only when the server's answer proves it (Rule 4), so each message operation
returns the UIDs it proved (``done``) and the caller resyncs and retries, or reports, the
others.  Nothing here writes the cache.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an APPEND put the message, when the server said (RFC 4315 APPENDUID)."""

    uidvalidity: int | None
    uid: int | None  # None when the server did not say (no UIDPLUS)


@dataclass(frozen=True, slots=True)
class Stored:
    """What a flag store proved (Rule 4)."""

    done: frozenset[int] = frozenset()  # the server showed the flags as wanted
    modified: frozenset[int] = frozenset()  # refused by UNCHANGEDSINCE: changed meanwhile
    missing: frozenset[int] = frozenset()  # no longer in the mailbox


@dataclass(frozen=True, slots=True)
class Copied:
    """What a copy or move proved (Rule 4)."""

    done: frozenset[int] = frozenset()  # source UIDs copied (or moved)
    new_uids: dict[int, int] | None = None  # source UID → UID in the target, when said

    def target_uid(self, uid: int) -> int | None:
        """The UID the copy of ``uid`` got in the target, when the server said."""
        return (self.new_uids or {}).get(uid)


@dataclass(frozen=True, slots=True)
class Removed:
    """What a removal proved (Rule 4)."""

    done: frozenset[int] = frozenset()  # gone, or (expunged False) marked \Deleted by us
    missing: frozenset[int] = frozenset()  # were no longer there: not removed by us
    expunged: bool = True  # False: the server cannot expunge single UIDs (Rule 3)


class MailboxWrites(Protocol):
    """Mailboxes by their full upstream name (its hierarchy separator included).

    A refused operation raises :class:`imapjmap.errors.ImapCommandFailed` (the server's
    answer, for ``set_error_from_imap``); a lost connection raises
    :class:`imapjmap.errors.UpstreamUnavailable`.
    """

    @property
    def creates_with_role(self) -> bool:
        """Whether :meth:`create_mailbox` can give the new mailbox a role."""
        ...

    async def create_mailbox(self, name: str, *, role: str | None = None) -> None:
        """Create ``name``; with ``role`` (a JMAP role, ``"archive"``) as its special use."""
        ...

    async def rename_mailbox(self, old: str, new: str, *, children: Collection[str] = ()) -> None:
        """Rename ``old`` (with ``children``, the names of the mailboxes below it) to ``new``.
        Subscriptions are not carried along."""
        ...

    async def delete_mailbox(self, name: str) -> None:
        """Delete ``name`` with whatever it holds."""
        ...

    async def subscribe(self, name: str, subscribed: bool = True) -> None:
        """Subscribe to ``name``, or (``subscribed`` False) unsubscribe from it."""
        ...

    async def message_count(self, name: str) -> int:
        """How many messages ``name`` holds now, asked of the server (not the cache)."""
        ...


class OpenMailbox(Protocol):
    """The messages of one mailbox, open for writing (see :meth:`MessageWrites.writing`).

    UIDs are the mailbox's.  Each operation returns what the server proved (Rule 4); a NO
    for the whole command raises :class:`imapjmap.errors.ImapCommandFailed`.
    """

    async def present(self, uids: Collection[int]) -> dict[int, tuple[str, ...]]:
        """The flags of those of ``uids`` still in the mailbox."""
        ...

    async def store_flags(
        self,
        uids: Sequence[int],
        op: str,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> Stored:
        """Add (``op`` ``"+"``) or remove (``"-"``) ``flags``; with ``unchanged_since``, only
        where no flag changed after that modseq (the others are ``modified``)."""
        ...

    async def copy(self, uids: Sequence[int], target: str) -> Copied:
        """Copy ``uids`` to the mailbox named ``target``."""
        ...

    async def move(self, uids: Sequence[int], target: str) -> Copied:
        """Move ``uids`` to the mailbox named ``target``."""
        ...

    async def remove(self, uids: Sequence[int]) -> Removed:
        """Remove exactly ``uids`` (Rule 3: never a message another client marked)."""
        ...


class MessageWrites(Protocol):
    """Messages: appended to a mailbox, or written in one opened with :meth:`writing`."""

    @property
    def appends_say_uid(self) -> bool:
        """Whether :meth:`append` says the new message's UID (else read :meth:`uid_next`
        before it and :meth:`find_appended` after)."""
        ...

    async def append(
        self,
        mailbox: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: dt.datetime | None = None,
    ) -> Appended:
        """Append ``raw`` to ``mailbox``."""
        ...

    async def uid_next(self, mailbox: str) -> int:
        """The UID the next message of ``mailbox`` gets at least (read before an APPEND
        that may not say its UID, as a floor for :meth:`find_appended`)."""
        ...

    async def find_appended(
        self, mailbox: str, message_id: str | None, *, floor: int = 1
    ) -> list[int]:
        """The UIDs from ``floor`` up in ``mailbox`` of messages with that Message-ID
        (without angle brackets; None: any message), for an APPEND that did not say."""
        ...

    def writing(self, mailbox: str) -> AbstractAsyncContextManager[OpenMailbox]:
        """``mailbox`` open for writing its messages until the block ends."""
        ...
