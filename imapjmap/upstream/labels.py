"""Writes on a server whose labels are mailboxes (the profile's ``labels``: Gmail mode).

There every message is kept once, in the folder that *holds* it (All Mail, or the Trash, or
Spam), and each of its labels shows it in one more folder.  So a change of mailboxes is a
change of labels on the holding copy, and a message leaves the holding folders only
through the Trash (:mod:`imapjmap.methods.email.label_writes` plans it).  These are the
operations that differ from an ordinary server's; each returns what the server proved, as
the :class:`~imapjmap.upstream.writes.OpenMailbox` operations do (docs/design.md, "Writes").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from imapjmap.upstream.writes import OpenMailbox


class LabelMailbox(OpenMailbox, Protocol):
    """A holding folder open for writing."""

    async def store_labels(
        self, uids: Sequence[int], op: Literal["+", "-"], labels: Collection[str]
    ) -> Collection[int]:
        """Add (``op`` ``"+"``) or remove (``"-"``) ``labels`` (``\\Inbox``, ``Work``) on
        ``uids``; the UIDs the server proved labelled as wanted."""
        ...

    async def find(self, email_ids: Iterable[str]) -> dict[int, str]:
        """The UIDs in this folder of the messages of these Emails, with their Email ids (a
        message moved here by :meth:`OpenMailbox.move` when the server did not say its
        UID)."""
        ...

    async def move_labelled(self, uid: int, target: str, more: Sequence[str]) -> bool:
        """Move ``uid`` to the folder ``target`` (a label's, or another holding folder),
        then give it the labels of the folders ``more`` too; whether all of it was proven."""
        ...


class LabelWrites(Protocol):
    """The account's holding folders, open for label writes."""

    def labelling(self, mailbox: str) -> AbstractAsyncContextManager[LabelMailbox]:
        """The holding folder ``mailbox`` open for writing until the block ends."""
        ...

    async def holding_uid(self, folder: str, uid: int, holder: str) -> int | None:
        """The UID in the holding folder ``holder`` of the message at ``uid`` in the
        label's ``folder`` (where an APPEND or a COPY into a label put it); None when it
        cannot be found."""
        ...
