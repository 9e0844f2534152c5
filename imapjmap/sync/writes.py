"""IMAP write primitives used by every JMAP write (DESIGN.md "Writes lose nothing").

Rule 1: IMAP first, then the cache is refreshed from what the server says; nothing here
        writes the cache.
Rule 2: flags are stored with ``UNCHANGEDSINCE`` where CONDSTORE is on, so a flag that
        another client changed meanwhile is never clobbered: the UIDs the server reports
        ``[MODIFIED]`` are returned to the caller, which re-reads and retries or reports.
Rule 3: messages are removed only by ``UID EXPUNGE`` of our own UIDs (UIDPLUS).  A message
        another client marked ``\\Deleted`` is never expunged by us.  Without UIDPLUS, our
        UIDs are marked ``\\Deleted`` and left for the user's client to expunge (the
        Email is hidden from JMAP at once, because a ``\\Deleted`` copy is invisible).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from imapjmap.errors import ImapProtocolViolation
from imapjmap.imap import commands
from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.models import UidSet
from imapjmap.imap.parse import parse_uid_set
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession


@dataclass(frozen=True, slots=True)
class Appended:
    uidvalidity: int | None
    uid: int | None  # None when the server lacks UIDPLUS (no APPENDUID)


async def append(
    pool: ImapPool,
    mailbox: str,
    raw: bytes,
    flags: Iterable[str] = (),
    internaldate: dt.datetime | None = None,
) -> Appended:
    """APPEND one message; the APPENDUID when the server gives it (RFC 4315)."""
    head = f"APPEND {commands.mailbox(mailbox)}"
    flag_list = list(flags)
    if flag_list:
        head += " " + commands.flag_list(flag_list)
    if internaldate is not None:
        head += " " + commands.internaldate(internaldate)
    command = Command((head + " ", ""), (raw,))
    async with pool.session() as session:
        reply = await session.execute(command, what="APPEND")
    code = reply.code("APPENDUID")
    if code is None:
        return Appended(None, None)
    parts = code.args.split()
    try:
        return Appended(int(parts[0]), int(parts[1]))
    except (IndexError, ValueError) as exc:
        raise ImapProtocolViolation(f"APPEND: bad APPENDUID {code.args!r}") from exc


async def store_flags(
    session: ImapSession,
    uids: Sequence[int],
    op: str,
    flags: Iterable[str],
    unchanged_since: int | None = None,
) -> UidSet:
    """``UID STORE uids +FLAGS.SILENT (...)`` (op is ``+`` or ``-``) on the selected mailbox.

    Returns the UIDs the server refused to change because they were modified since
    ``unchanged_since`` (RFC 7162 ``[MODIFIED]``); empty when everything was stored.
    """
    flag_list = list(flags)
    if not uids or not flag_list:
        return UidSet()
    modifier = ""
    if unchanged_since is not None and "CONDSTORE" in session.enabled:
        modifier = f" (UNCHANGEDSINCE {unchanged_since})"
    text = (
        f"UID STORE {sequence_set(uids)}{modifier} {op}FLAGS.SILENT {commands.flag_list(flag_list)}"
    )
    reply = await session.execute(Command((text,)), what="UID STORE")
    code = reply.code("MODIFIED")
    return parse_uid_set(code.args) if code is not None and code.args else UidSet()


async def copy(session: ImapSession, uids: Sequence[int], target: str) -> None:
    await session.execute(
        Command((f"UID COPY {sequence_set(uids)} {commands.mailbox(target)}",)), what="UID COPY"
    )


async def copy_one(session: ImapSession, uid: int, target: str) -> int | None:
    """``UID COPY`` one message; its UID in ``target`` when the server says (RFC 4315
    ``[COPYUID uidvalidity source destination]``), else None."""
    command = Command((f"UID COPY {sequence_set([uid])} {commands.mailbox(target)}",))
    reply = await session.execute(command, what="UID COPY")
    code = reply.code("COPYUID")
    parts = code.args.split() if code is not None and code.args else []
    try:
        new = list(parse_uid_set(parts[2])) if len(parts) == 3 else []
    except ImapProtocolViolation:  # the COPY itself succeeded: only its UID is unknown
        new = []
    return new[0] if len(new) == 1 else None


async def move(session: ImapSession, uids: Sequence[int], target: str) -> None:
    """MOVE where offered (RFC 6851), else COPY then remove our own UIDs (Rule 3)."""
    if session.has("MOVE"):
        await session.execute(
            Command((f"UID MOVE {sequence_set(uids)} {commands.mailbox(target)}",)), what="UID MOVE"
        )
        return
    await copy(session, uids, target)
    await remove(session, uids)


async def remove(session: ImapSession, uids: Sequence[int]) -> bool:
    """Remove exactly ``uids`` from the selected mailbox (Rule 3).

    Returns True when they are gone, False when the server lacks UIDPLUS and they were only
    marked ``\\Deleted`` (hidden from JMAP, expunged later by the user's own client).
    """
    if not uids:
        return True
    await store_flags(session, uids, "+", ["\\Deleted"])
    if not session.has("UIDPLUS"):
        return False
    await session.execute(Command((f"UID EXPUNGE {sequence_set(uids)}",)), what="UID EXPUNGE")
    return True
