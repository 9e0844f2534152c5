"""IMAP write primitives used by every JMAP write (docs/design.md, "Writes").

Rule 1: IMAP first, then the cache is refreshed from what the server says; nothing here
        writes the cache.
Rule 2: flags are stored with ``UNCHANGEDSINCE`` where CONDSTORE is on, so a flag that
        another client changed meanwhile is never clobbered: the UIDs the server reports
        ``[MODIFIED]`` are returned to the caller, which re-reads and retries or reports.
Rule 3: messages are removed only by ``UID EXPUNGE`` of our own UIDs (UIDPLUS).  A message
        another client marked ``\\Deleted`` is never expunged by us.  Without UIDPLUS, our
        UIDs are marked ``\\Deleted`` and left for the user's client to expunge (the
        Email is hidden from JMAP at once, because a ``\\Deleted`` copy is invisible).
Rule 4: a write counts as done for a UID only when the server's answer proves it.  An IMAP
        server answers OK to a STORE, COPY or UID EXPUNGE of a UID that another client has
        just moved or expunged (RFC 2180 §4), so OK alone proves nothing:

        * STORE: the untagged ``FETCH`` of the UID shows the flags as wanted (no
          ``.SILENT``); a server sends none when the flags were already so, and then a
          ``UID FETCH (FLAGS)`` of the UIDs still unproven settles it;
        * COPY and MOVE: the UID is in the source set of ``[COPYUID]``; a server without
          UIDPLUS gives none, and then a COPY is proven by the UID still being there after
          it (UIDs are never reused, so it was there during the COPY) and a MOVE is
          unproven;
        * UID EXPUNGE: our own STORE proved the ``\\Deleted`` flag, and the UID is in a
          ``VANISHED`` of the reply or absent from a ``UID FETCH`` afterwards.

        Every primitive returns the UIDs it proved (``done``); the rest are the caller's
        to resync and retry or to report as not written.  A UID the server says is gone
        (``NO [EXPUNGEISSUED]``, Dovecot's answer to a COPY or MOVE of one) does not sink
        the others: the command is sent again for the UIDs that are still there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from imapjmap.errors import ImapCommandFailed, ImapProtocolViolation
from imapjmap.imap import commands
from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.models import Reply
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


@dataclass(frozen=True, slots=True)
class Stored:
    """What a ``UID STORE`` proved (Rule 4)."""

    done: frozenset[int] = frozenset()  # the server showed the flags as wanted
    modified: frozenset[int] = frozenset()  # refused by UNCHANGEDSINCE: changed meanwhile
    missing: frozenset[int] = frozenset()  # no longer in the mailbox


def _vanished(reply: Reply) -> set[int]:
    return {uid for v in reply.vanished for uid in v.uids}


def _flags_as_wanted(flags: Iterable[str], op: str, wanted: frozenset[str]) -> bool:
    """Whether ``flags`` show a ``+FLAGS``/``-FLAGS`` of ``wanted`` (flags are compared
    without regard to case, RFC 9051 §2.3.2)."""
    have = {f.lower() for f in flags}
    if op == "+":
        return wanted <= have
    return not (wanted & have)


async def present(session: ImapSession, uids: Collection[int]) -> dict[int, tuple[str, ...]]:
    """The flags of those of ``uids`` still in the selected mailbox (``UID FETCH``)."""
    if not uids:
        return {}
    reply = await session.execute(
        Command((f"UID FETCH {sequence_set(uids)} (FLAGS)",)), what="UID FETCH"
    )
    gone = _vanished(reply)
    return {
        f.uid: f.flags
        for f in reply.fetches
        if f.uid is not None and f.uid in uids and f.uid not in gone and f.flags is not None
    }


async def store_flags(
    session: ImapSession,
    uids: Sequence[int],
    op: str,
    flags: Iterable[str],
    unchanged_since: int | None = None,
) -> Stored:
    """``UID STORE uids +FLAGS (...)`` (op is ``+`` or ``-``) on the selected mailbox.

    ``modified``: the UIDs the server refused to change because they were modified since
    ``unchanged_since`` (RFC 7162 ``[MODIFIED]``).  ``done`` and ``missing``: Rule 4.
    """
    wanted = frozenset(f.lower() for f in flags)
    if not uids or not wanted:
        return Stored(done=frozenset(uids))
    modifier = ""
    if unchanged_since is not None and "CONDSTORE" in session.enabled:
        modifier = f" (UNCHANGEDSINCE {unchanged_since})"
    text = f"UID STORE {sequence_set(uids)}{modifier} {op}FLAGS {commands.flag_list(sorted(flags))}"
    reply = await session.execute(Command((text,)), what="UID STORE")
    code = reply.code("MODIFIED")
    modified = set(parse_uid_set(code.args)) if code is not None and code.args else set()
    gone = _vanished(reply)
    done = {
        f.uid
        for f in reply.fetches
        if f.uid is not None
        and f.uid in uids
        and f.uid not in gone
        and f.uid not in modified
        and f.flags is not None
        and _flags_as_wanted(f.flags, op, wanted)
    }
    unproven = set(uids) - done - modified - gone
    now = await present(session, unproven)
    done |= {uid for uid, have in now.items() if _flags_as_wanted(have, op, wanted)}
    missing = (set(uids) - modified - set(now)) - done
    return Stored(frozenset(done), frozenset(modified), frozenset(missing))


@dataclass(frozen=True, slots=True)
class Copied:
    """What a ``UID COPY`` or ``UID MOVE`` proved (Rule 4)."""

    done: frozenset[int] = frozenset()  # source UIDs copied (or moved)
    new_uids: dict[int, int] | None = None  # source UID → UID in the target (COPYUID)


def _copyuid(reply: Reply, uids: Collection[int]) -> dict[int, int] | None:
    """Source UID → target UID from ``[COPYUID v source target]`` (RFC 4315), or None when
    the reply has no (usable) COPYUID."""
    mapping: dict[int, int] = {}
    found = False
    for code in reply.codes:
        if code.name != "COPYUID":
            continue
        parts = code.args.split()
        if len(parts) != 3:
            continue
        try:
            pairs = list(zip(parse_uid_set(parts[1]), parse_uid_set(parts[2]), strict=True))
        except (ImapProtocolViolation, ValueError):
            continue  # the COPY itself succeeded: only its UIDs are unknown
        found = True
        mapping.update((old, new) for old, new in pairs if old in uids)
    return mapping if found else None


async def _expunge_tolerant(
    session: ImapSession, uids: Sequence[int], send: Callable[[Sequence[int]], Awaitable[Reply]]
) -> tuple[Reply | None, list[int]]:
    """Run ``send(uids)``; on ``NO [EXPUNGEISSUED]`` send it again for the UIDs still there.

    Returns the reply (None when no UID was left to send) and the UIDs it was sent for.
    """
    try:
        return await send(uids), list(uids)
    except ImapCommandFailed as exc:
        if exc.code != "EXPUNGEISSUED":
            raise
    survivors = sorted(await present(session, uids))
    if not survivors:
        return None, []
    return await send(survivors), survivors


async def copy(session: ImapSession, uids: Sequence[int], target: str) -> Copied:
    """``UID COPY`` to ``target``; which UIDs were copied (Rule 4)."""
    if not uids:
        return Copied()

    async def send(which: Sequence[int]) -> Reply:
        text = f"UID COPY {sequence_set(which)} {commands.mailbox(target)}"
        return await session.execute(Command((text,)), what="UID COPY")

    reply, sent = await _expunge_tolerant(session, uids, send)
    if reply is None:
        return Copied()
    mapping = _copyuid(reply, sent)
    if mapping is not None:
        return Copied(frozenset(mapping), mapping)
    return Copied(frozenset(await present(session, sent)))


async def copy_one(session: ImapSession, uid: int, target: str) -> int | None:
    """``UID COPY`` one message; its UID in ``target`` when the server says (RFC 4315
    ``[COPYUID uidvalidity source destination]``), else None."""
    copied = await copy(session, [uid], target)
    return (copied.new_uids or {}).get(uid)


async def move(session: ImapSession, uids: Sequence[int], target: str) -> Copied:
    """MOVE where offered (RFC 6851), else COPY then remove our own UIDs (Rule 3); which
    UIDs left for ``target`` (Rule 4: without COPYUID a MOVE proves nothing)."""
    if not uids:
        return Copied()
    if session.has("MOVE"):

        async def send(which: Sequence[int]) -> Reply:
            text = f"UID MOVE {sequence_set(which)} {commands.mailbox(target)}"
            return await session.execute(Command((text,)), what="UID MOVE")

        reply, sent = await _expunge_tolerant(session, uids, send)
        mapping = _copyuid(reply, sent) if reply is not None else None
        return Copied(frozenset(mapping or ()), mapping)
    copied = await copy(session, uids, target)
    removed = await remove(session, sorted(copied.done))
    return Copied(removed.done, copied.new_uids)


@dataclass(frozen=True, slots=True)
class Removed:
    """What a removal proved (Rule 4)."""

    done: frozenset[int] = frozenset()  # gone, or (without UIDPLUS) marked \Deleted by us
    missing: frozenset[int] = frozenset()  # were no longer there: not removed by us
    expunged: bool = True  # False: without UIDPLUS, only marked \Deleted (Rule 3)


async def remove(session: ImapSession, uids: Sequence[int]) -> Removed:
    """Remove exactly ``uids`` from the selected mailbox (Rules 3 and 4)."""
    if not uids:
        return Removed()
    stored = await store_flags(session, uids, "+", ["\\Deleted"])
    marked = sorted(stored.done)
    if not session.has("UIDPLUS"):
        return Removed(frozenset(marked), stored.missing, expunged=False)
    if not marked:
        return Removed(frozenset(), stored.missing)
    reply = await session.execute(
        Command((f"UID EXPUNGE {sequence_set(marked)}",)), what="UID EXPUNGE"
    )
    gone = _vanished(reply) & set(marked)
    left = await present(session, [u for u in marked if u not in gone])
    return Removed(frozenset(u for u in marked if u not in left), stored.missing)
