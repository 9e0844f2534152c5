"""Gmail's side of the seam (X-GM-EXT-1, Google's "IMAP Extensions" document): its search
dialect and the label operations of Gmail mode's writes.

In Gmail mode (the profile's ``labels_as_mailboxes``) every message is kept once, in
``[Gmail]/All Mail`` (or the Trash, or Spam), and each of its labels shows it in one more
folder (:mod:`imapjmap.sync.gmail`).  So:

* a search of a label is a search of All Mail: :func:`search_boxes` picks All Mail for any
  label, the Trash and Spam only when the query names them (or no mailbox at all), and
  :func:`search_command` sends ``text`` in Gmail's own syntax (``X-GM-RAW``);
* a label is added or removed with ``UID STORE +X-GM-LABELS``/``-X-GM-LABELS`` on the All
  Mail copy (:func:`store_labels`), proven as flags are (``sync.writes`` Rule 4);
* a message is found again by its X-GM-MSGID, which is its Email id without the ``M``
  (:func:`find_by_email_ids`, :func:`all_mail_uid`).

:class:`GmailMailbox` is the :class:`~imapjmap.upstream.labels.LabelMailbox` of the IMAP
Upstream.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Literal

from imapjmap.errors import ImapCommandFailed
from imapjmap.imap import commands
from imapjmap.imap.commands import Command, search_string, sequence_set
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.search import SearchMailbox, SearchTerm
from imapjmap.upstream.writes import Copied, Removed, Stored

if TYPE_CHECKING:  # the IMAP Upstream builds on this module
    from imapjmap.upstream.imap import ImapMailbox

# the roles of the folders that hold messages; every other readable mailbox is a label
HOLDING_ROLES: Final = ("all", "trash", "junk")


# -- search ----------------------------------------------------------------------------------


def search_boxes(
    mailboxes: Iterable[SearchMailbox], scope: Collection[str] | None
) -> list[SearchMailbox]:
    """Where a search runs: All Mail for every label, the Trash and Spam only when the
    query's mailboxes include them (or name none); an empty folder never."""
    rows = list(mailboxes)
    by_role = {row.role: row for row in rows if row.role in HOLDING_ROLES}
    labels = {row.mailbox_id for row in rows if row.role not in HOLDING_ROLES and row.readable}
    out: list[SearchMailbox] = []
    for role in HOLDING_ROLES:
        row = by_role.get(role)
        if row is None or row.messages == 0:
            continue
        in_label = role == "all" and any(m in labels for m in scope or ())
        if scope is None or row.mailbox_id in scope or in_label:
            out.append(row)
    return out


def search_command(term: SearchTerm) -> Command:
    """``UID SEARCH`` of one term: ``TEXT x`` becomes ``X-GM-RAW "x"`` (a phrase in
    Gmail's search syntax); BODY and HEADER stay standard IMAP keys."""
    if term.key != "TEXT":
        strings = [search_string(arg) for arg in term.args]
        head = "UID SEARCH" + ("" if all(a.isascii() for a in term.args) else " CHARSET UTF-8")
        return Command.join([head, term.key, *strings])
    phrase = '"' + term.args[0].replace('"', " ").replace("\\", " ").strip() + '"'
    head = "UID SEARCH" + ("" if phrase.isascii() else " CHARSET UTF-8")
    return Command.join([head, "X-GM-RAW", search_string(phrase)])


# -- label writes ----------------------------------------------------------------------------


def label_list(names: Iterable[str]) -> str:
    """``(\\Inbox "My label")``: system labels as atoms, others as mailbox names."""
    return (
        "("
        + " ".join(n if n.startswith("\\") else commands.mailbox(n) for n in sorted(names))
        + ")"
    )


async def store_labels(
    box: ImapMailbox, uids: Sequence[int], op: Literal["+", "-"], names: Collection[str]
) -> Collection[int]:
    """``UID STORE +X-GM-LABELS``/``-X-GM-LABELS`` in the open All Mail; the UIDs the
    reply shows labelled as wanted, else (no FETCH: nothing changed) those still there."""
    text = f"UID STORE {sequence_set(uids)} {op}X-GM-LABELS {label_list(names)}"
    reply = await box.session.execute(Command((text,)), what="UID STORE")
    wanted = {n.lower() for n in names}
    done: set[int] = set()
    for fetch in reply.fetches:
        if fetch.uid is not None and fetch.uid in uids and fetch.x_gm_labels is not None:
            have = {label.lower() for label in fetch.x_gm_labels}
            if (wanted <= have) if op == "+" else not (wanted & have):
                done.add(fetch.uid)
    return done | set(await box.present([u for u in uids if u not in done]))


def _msgid(email_id: str) -> str | None:
    return email_id[1:] if email_id[:1] == "M" and email_id[1:].isdigit() else None


async def find_by_email_ids(session: ImapSession, email_ids: Iterable[str]) -> dict[int, str]:
    """The UIDs in the selected folder of the Emails with these ids (``M`` + X-GM-MSGID)."""
    await session.noop()  # let the server show what just arrived
    found: dict[int, str] = {}
    for email_id in email_ids:
        msgid = _msgid(email_id)
        if msgid is not None:
            reply = await session.execute(
                Command((f"UID SEARCH X-GM-MSGID {msgid}",)), what="UID SEARCH"
            )
            found.update((u, email_id) for result in reply.searches for u in result.ids)
    return found


async def all_mail_uid(pool: ImapPool, folder: str, uid: int, all_mail: str) -> int | None:
    """The UID in All Mail of the message at ``uid`` in a label's ``folder``, found by its
    X-GM-MSGID; None when it cannot be found."""
    try:
        async with pool.session(folder, readonly=True) as session:
            reply = await session.execute(
                Command((f"UID FETCH {uid} (UID X-GM-MSGID)",)), what="UID FETCH"
            )
        msgid = next((r.x_gm_msgid for r in reply.fetches if r.uid == uid), None)
        if msgid is None:
            return None
        async with pool.session(all_mail, readonly=True) as session:
            reply = await session.execute(
                Command((f"UID SEARCH X-GM-MSGID {msgid}",)), what="UID SEARCH"
            )
    except ImapCommandFailed:
        return None
    found = [u for result in reply.searches for u in result.ids]
    return max(found) if found else None


class GmailMailbox:
    """A holding folder (All Mail, Trash, Spam) open for writing: the ordinary writes of
    ``box``, and Gmail's label ones on its session."""

    __slots__ = ("box",)

    def __init__(self, box: ImapMailbox) -> None:
        self.box = box

    async def present(self, uids: Collection[int]) -> dict[int, tuple[str, ...]]:
        return await self.box.present(uids)

    async def store_flags(
        self,
        uids: Sequence[int],
        op: str,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> Stored:
        return await self.box.store_flags(uids, op, flags, unchanged_since)

    async def copy(self, uids: Sequence[int], target: str) -> Copied:
        return await self.box.copy(uids, target)

    async def move(self, uids: Sequence[int], target: str) -> Copied:
        return await self.box.move(uids, target)

    async def remove(self, uids: Sequence[int]) -> Removed:
        return await self.box.remove(uids)

    async def store_labels(
        self, uids: Sequence[int], op: Literal["+", "-"], labels: Collection[str]
    ) -> Collection[int]:
        return await store_labels(self.box, uids, op, labels)

    async def find(self, email_ids: Iterable[str]) -> dict[int, str]:
        return await find_by_email_ids(self.box.session, email_ids)

    async def move_labelled(self, uid: int, target: str, more: Sequence[str]) -> bool:
        """``UID MOVE`` to ``target``, then ``UID COPY`` of the moved message (from
        ``target``, where it is now) into each folder of ``more``: that gives it their
        labels."""
        moved = await self.box.move([uid], target)
        new = moved.target_uid(uid)
        if not more or new is None:
            return uid in moved.done
        await self.box.session.select(target)
        for name in more:
            if new not in (await self.box.copy([new], name)).done:
                return False
        return True
