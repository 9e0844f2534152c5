"""The Upstream over IMAP: :class:`ImapUpstream` on an account's connection pool.

Writes (docs/design.md, "Writes"):

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

The primitives are module functions over a session with the mailbox selected (so a test
can wrap one to race another client against it); the command text each operation sends
is built by the pure ``*_command`` functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)

from imapjmap.config import SieveConfig
from imapjmap.errors import ImapCommandFailed, ImapProtocolViolation
from imapjmap.imap import commands
from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.models import Reply
from imapjmap.imap.parse import parse_uid_set
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream import gmail, imap_quota, imap_search, imap_shares, managesieve
from imapjmap.upstream.imap_refresh import ImapRefresh
from imapjmap.upstream.imap_watch import ImapWatching
from imapjmap.upstream.profiles import Profile
from imapjmap.upstream.quota import QuotaReading
from imapjmap.upstream.search import Pacer, SearchMailbox, SearchTerm, UidHits, no_pause
from imapjmap.upstream.shares import Share
from imapjmap.upstream.sieve import SieveScripts, SieveServer
from imapjmap.upstream.writes import Appended, Copied, Removed, Stored

# --- command text (pure) ----------------------------------------------------------------------


def mailbox_command(verb: str, name: str, *tail: str) -> Command:
    """``VERB name tail...``: CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE of one mailbox."""
    return Command((" ".join([verb, commands.mailbox(name), *tail]),))


def create_command(name: str, role: str | None = None) -> Command:
    """CREATE, with RFC 6154 ``USE`` for a JMAP role (``archive`` → ``\\Archive``)."""
    tail = [f"(USE (\\{role.capitalize()}))"] if role is not None else []
    return mailbox_command("CREATE", name, *tail)


def rename_command(old: str, new: str) -> Command:
    return Command((f"RENAME {commands.mailbox(old)} {commands.mailbox(new)}",))


def append_command(
    mailbox: str, raw: bytes, flags: Iterable[str] = (), internaldate: dt.datetime | None = None
) -> Command:
    """APPEND with the message as a literal."""
    head = f"APPEND {commands.mailbox(mailbox)}"
    flag_list = list(flags)
    if flag_list:
        head += " " + commands.flag_list(flag_list)
    if internaldate is not None:
        head += " " + commands.internaldate(internaldate)
    return Command((head + " ", ""), (raw,))


def find_appended_command(message_id: str | None, floor: int = 1) -> Command:
    """``UID SEARCH`` for UIDs from ``floor`` up, by Message-ID when there is one."""
    if message_id is None:
        return Command.text(f"UID SEARCH UID {floor}:*")
    charset = "" if message_id.isascii() else " CHARSET UTF-8"
    wanted = commands.search_string(f"<{message_id}>")
    return Command.join([f"UID SEARCH{charset} UID {floor}:* HEADER Message-ID", wanted])


def store_command(
    uids: Collection[int], op: str, flags: Iterable[str], unchanged_since: int | None = None
) -> Command:
    """``UID STORE uids [(UNCHANGEDSINCE n)] ±FLAGS (...)``: never ``.SILENT``, since the
    untagged FETCHes it draws are the proof (Rule 4)."""
    modifier = f" (UNCHANGEDSINCE {unchanged_since})" if unchanged_since is not None else ""
    flag_list = commands.flag_list(sorted(flags))
    return Command((f"UID STORE {sequence_set(uids)}{modifier} {op}FLAGS {flag_list}",))


def transfer_command(verb: str, uids: Collection[int], target: str) -> Command:
    """``UID COPY`` or ``UID MOVE`` of ``uids`` to ``target``."""
    return Command((f"UID {verb} {sequence_set(uids)} {commands.mailbox(target)}",))


def fetch_command(uids: Collection[int], items: str) -> Command:
    return Command((f"UID FETCH {sequence_set(uids)} ({items})",))


# --- what replies prove (pure) ------------------------------------------------------------------


def _vanished(reply: Reply) -> set[int]:
    return {uid for v in reply.vanished for uid in v.uids}


def _flags_as_wanted(flags: Iterable[str], op: str, wanted: frozenset[str]) -> bool:
    """Whether ``flags`` show a ``+FLAGS``/``-FLAGS`` of ``wanted`` (flags are compared
    without regard to case, RFC 9051 §2.3.2)."""
    have = {f.lower() for f in flags}
    if op == "+":
        return wanted <= have
    return not (wanted & have)


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


def _appenduid(reply: Reply) -> Appended:
    code = reply.code("APPENDUID")
    if code is None:
        return Appended(None, None)
    parts = code.args.split()
    try:
        return Appended(int(parts[0]), int(parts[1]))
    except (IndexError, ValueError) as exc:
        raise ImapProtocolViolation(f"APPEND: bad APPENDUID {code.args!r}") from exc


# --- the primitives on a selected mailbox --------------------------------------------------------


async def present(session: ImapSession, uids: Collection[int]) -> dict[int, tuple[str, ...]]:
    """The flags of those of ``uids`` still in the selected mailbox (``UID FETCH``)."""
    if not uids:
        return {}
    reply = await session.execute(fetch_command(uids, "FLAGS"), what="UID FETCH")
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
    flags = list(flags)
    wanted = frozenset(f.lower() for f in flags)
    if not uids or not wanted:
        return Stored(done=frozenset(uids))
    if "CONDSTORE" not in session.enabled:
        unchanged_since = None
    command = store_command(uids, op, flags, unchanged_since)
    reply = await session.execute(command, what="UID STORE")
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
        return await session.execute(transfer_command("COPY", which, target), what="UID COPY")

    reply, sent = await _expunge_tolerant(session, uids, send)
    if reply is None:
        return Copied()
    mapping = _copyuid(reply, sent)
    if mapping is not None:
        return Copied(frozenset(mapping), mapping)
    return Copied(frozenset(await present(session, sent)))


async def move(session: ImapSession, uids: Sequence[int], target: str) -> Copied:
    """MOVE where offered (RFC 6851), else COPY then remove our own UIDs (Rule 3); which
    UIDs left for ``target`` (Rule 4: without COPYUID a MOVE proves nothing)."""
    if not uids:
        return Copied()
    if session.has("MOVE"):

        async def send(which: Sequence[int]) -> Reply:
            return await session.execute(transfer_command("MOVE", which, target), what="UID MOVE")

        reply, sent = await _expunge_tolerant(session, uids, send)
        mapping = _copyuid(reply, sent) if reply is not None else None
        return Copied(frozenset(mapping or ()), mapping)
    copied = await copy(session, uids, target)
    removed = await remove(session, sorted(copied.done))
    return Copied(removed.done, copied.new_uids)


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


# --- the Upstream ---------------------------------------------------------------------------------


class ImapMailbox:
    """An :class:`~imapjmap.upstream.api.OpenMailbox`: a pooled session with the mailbox
    selected read-write."""

    __slots__ = ("session",)

    def __init__(self, session: ImapSession) -> None:
        self.session = session

    async def present(self, uids: Collection[int]) -> dict[int, tuple[str, ...]]:
        return await present(self.session, uids)

    async def store_flags(
        self,
        uids: Sequence[int],
        op: str,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> Stored:
        return await store_flags(self.session, uids, op, flags, unchanged_since)

    async def copy(self, uids: Sequence[int], target: str) -> Copied:
        return await copy(self.session, uids, target)

    async def move(self, uids: Sequence[int], target: str) -> Copied:
        return await move(self.session, uids, target)

    async def remove(self, uids: Sequence[int]) -> Removed:
        return await remove(self.session, uids)


class ImapUpstream(ImapRefresh, ImapWatching):
    """An :class:`~imapjmap.upstream.api.Upstream` over one account's IMAP pool: each
    operation borrows a connection for as long as it runs."""

    __slots__ = ("pool", "share")

    def __init__(self, pool: ImapPool, share: Share | None = None) -> None:
        self.pool = pool
        self.share = share  # None: the login's own account; else that share's account

    def login_password(self) -> str:
        return self.pool.login_password()

    @property
    def profile(self) -> Profile:
        return self.pool.profile

    # ShareSource (upstream.imap_shares)

    async def shares(self) -> list[Share]:
        return await imap_shares.shares(self.pool)

    # Search (upstream.imap_search)

    async def search(
        self,
        mailboxes: Iterable[SearchMailbox],
        terms: Collection[SearchTerm],
        *,
        scope: Collection[str] | None = None,
        pace: Pacer = no_pause,
        within: Mapping[str, Collection[int]] | None = None,
    ) -> UidHits:
        return await imap_search.search(
            self.pool, mailboxes, terms, scope=scope, pace=pace, within=within
        )

    # SieveAccess (upstream.managesieve)

    async def sieve_server(self, cfg: SieveConfig) -> SieveServer | None:
        return await managesieve.server(cfg, self.pool)

    @property
    def sieve_known(self) -> SieveServer | None:
        return managesieve.known(self.pool)

    def sieve(self, cfg: SieveConfig) -> contextlib.AbstractAsyncContextManager[SieveScripts]:
        return managesieve.session(cfg, self.pool)

    # QuotaReads (upstream.imap_quota)

    @property
    def offers_quota(self) -> bool:
        return "QUOTA" in self.pool.capabilities

    async def quotas(self) -> list[QuotaReading]:
        return await imap_quota.quotas(self.pool)

    # LabelWrites (upstream.gmail)

    @contextlib.asynccontextmanager
    async def labelling(self, mailbox: str) -> AsyncIterator[gmail.GmailMailbox]:
        async with self.pool.session(mailbox) as session:
            yield gmail.GmailMailbox(ImapMailbox(session))

    async def holding_uid(self, folder: str, uid: int, holder: str) -> int | None:
        return await gmail.all_mail_uid(self.pool, folder, uid, holder)

    async def _run(self, command: Command, what: str) -> Reply:
        async with self.pool.session() as session:
            return await session.execute(command, what=what)

    # MailboxWrites

    @property
    def creates_with_role(self) -> bool:
        return "CREATE-SPECIAL-USE" in self.pool.capabilities

    async def create_mailbox(self, name: str, *, role: str | None = None) -> None:
        await self._run(create_command(name, role), "CREATE")

    async def rename_mailbox(self, old: str, new: str, *, children: Collection[str] = ()) -> None:
        await self._leave(old, *children)
        await self._run(rename_command(old, new), "RENAME")

    async def delete_mailbox(self, name: str) -> None:
        await self._leave(name)
        await self._run(mailbox_command("DELETE", name), "DELETE")

    async def _leave(self, *names: str) -> None:
        """Pooled connections must not have a mailbox selected while it is renamed or
        deleted: Dovecot disconnects a session whose selected mailbox is deleted under it."""
        for name in names:
            await self.pool.release_mailbox(name)

    async def subscribe(self, name: str, subscribed: bool = True) -> None:
        verb = "SUBSCRIBE" if subscribed else "UNSUBSCRIBE"
        await self._run(mailbox_command(verb, name), verb)

    async def message_count(self, name: str) -> int:
        async with self.pool.session() as session:
            status = await session.status(name, "MESSAGES")
        return status.messages or 0

    # MessageWrites

    @property
    def appends_say_uid(self) -> bool:
        return "UIDPLUS" in self.pool.capabilities

    async def append(
        self,
        mailbox: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: dt.datetime | None = None,
    ) -> Appended:
        """APPEND one message; the APPENDUID when the server gives it (RFC 4315)."""
        reply = await self._run(append_command(mailbox, raw, flags, internaldate), "APPEND")
        return _appenduid(reply)

    async def uid_next(self, mailbox: str) -> int:
        async with self.pool.session() as session:
            status = await session.status(mailbox)
        return status.uidnext or 1

    async def find_appended(
        self, mailbox: str, message_id: str | None, *, floor: int = 1
    ) -> list[int]:
        async with self.pool.session(mailbox, readonly=True) as session:
            reply = await session.execute(
                find_appended_command(message_id, floor), what="UID SEARCH"
            )
        return [uid for result in reply.searches for uid in result.ids if uid >= floor]

    @contextlib.asynccontextmanager
    async def writing(self, mailbox: str) -> AsyncIterator[ImapMailbox]:
        async with self.pool.session(mailbox) as session:
            yield ImapMailbox(session)

    # BodyReads

    async def message(self, mailbox: str, uid: int) -> bytes | None:
        async with self.pool.session(mailbox, readonly=True) as session:
            reply = await session.execute(fetch_command([uid], "UID BODY.PEEK[]"), what="UID FETCH")
        for record in reply.fetches:
            body = record.sections.get("BODY[]")
            if record.uid == uid and body is not None:
                return body
        return None

    async def previews(self, mailbox: str, uids: Collection[int]) -> dict[int, str]:
        """RFC 8970 PREVIEW, one ``UID FETCH``; empty where the server has no PREVIEW."""
        if "PREVIEW" not in self.pool.capabilities or not uids:
            return {}
        async with self.pool.session(mailbox, readonly=True) as session:
            reply = await session.execute(fetch_command(uids, "UID PREVIEW"), what="UID FETCH")
        return {
            record.uid: record.preview
            for record in reply.fetches
            if record.uid is not None and record.uid in uids and record.preview is not None
        }
