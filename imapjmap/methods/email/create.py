"""The create half of Email/set (RFC 8621 §4.6): a create object → APPEND (+ UID COPY).

Theory of operation: every check (mailboxIds, keywords, receivedAt, the whole Email in
:func:`imapjmap.mime.build.build_message`) runs before anything is written.  The message
is APPENDed to the first of its mailboxes with the keywords as flags and receivedAt as
INTERNALDATE, then copied with ``UID COPY`` to the others, so every copy is the same
message (same Email on servers that keep a GUID across COPY).  The cache is then
refreshed and the Email found by (mailbox, APPENDUID uid).

Rule 1: a create is atomic (CORE-SET-02): when a COPY is refused, the copies already made
        and the appended message are removed again (our own UIDs only, docs/design.md,
        "Writes", Rule 3) before the SetError is reported.
Rule 2: once the APPEND landed, a lost connection is ``serverPartialFail``: the client
        must resync to learn whether the Email exists.
Rule 3: the blobs are read once, before building, through a :class:`BlobReader` (uploads
        and the blobs of existing Emails alike).
Rule 4: a server that holds one Email per content (Cyrus gives identical bytes one RFC 8474
        EMAILID) turns the APPEND of bytes it already has into one more copy of an existing
        Email.  That is no new Email: the copies this write made are removed again and the
        create fails with ``alreadyExists`` and ``existingId`` (RFC 8621 §4.8, the same rule
        for Email/import, which shares :func:`existed_before` and :func:`take_back`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Collection, Mapping, Sequence
from typing import Final, Protocol

from imapjmap.blobs.ids import message_blob_id
from imapjmap.errors import ImapCommandFailed, ProxyError, UpstreamUnavailable
from imapjmap.jmap.dispatch import Call, UnknownCreationId, resolve_creation_id
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_properties,
)
from imapjmap.jmap.wire import Json, JsonObject, parse_utc_date
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import label_writes
from imapjmap.methods.imaperrors import set_error_from_imap
from imapjmap.mime.build import build_message, referenced_blob_ids
from imapjmap.mime.headers import raw_headers, select_header
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.store.email_lookup import EmailAt, email_at

__all__ = ["BlobReader", "Written", "create_email", "existed_before", "take_back"]

log = logging.getLogger(__name__)

_KEYWORD_BAD: Final = frozenset('(){]%*"\\')


#: A copy of a message that one write made: its mailbox and UID (None when the server did not
#: say, a COPY without COPYUID).
Written = tuple[q.MailboxRow, int | None]


class BlobReader(Protocol):
    """Reads one blob of the account: (octets, media type), or None when there is none."""

    async def __call__(self, blob_id: str) -> tuple[bytes, str] | None: ...


def _store_reader(ctx: MethodContext) -> BlobReader:
    """Uploads and the blobs of existing Emails, through the account's blob store."""

    async def read(blob_id: str) -> tuple[bytes, str] | None:
        # imported here: the blob store is another module's work in progress, and an
        # Email/set without blob parts must not depend on it
        from imapjmap.blobs import content as blob_store

        return await blob_store.read_blob(ctx.store, ctx.upstream, ctx.account_id, blob_id)

    return read


async def create_email(
    ctx: MethodContext, call: Call, obj: JsonObject, *, read_blob: BlobReader | None = None
) -> JsonObject:
    """Create one Email; returns its ``{id, blobId, threadId, size}`` (§4.6).

    Raises:
        SetError: the create is refused (invalidProperties, blobNotFound, tooLarge,
            forbidden, or the mapping of an IMAP NO); nothing was left behind.
        MethodError: ``serverPartialFail`` when the upstream failed after the APPEND.
    """
    await ctx.refresh()  # once per request: Email/set has normally done it already
    since = await ctx.read(lambda tx: q.type_state(tx, ctx.account_id, em.EMAIL_TYPE))
    rows = await ctx.read(lambda tx: q.live_mailboxes(tx, ctx.account_id))
    mailboxes = _mailboxes(call, obj.get("mailboxIds"), {row.id: row for row in rows})
    flags = em.flags_from_keywords(_keywords(obj.get("keywords", {})))
    received = obj.get("receivedAt")
    internaldate = parse_utc_date(received) if received is not None else None
    if received is not None and internaldate is None:
        raise invalid_properties("receivedAt must be a UTCDate", "receivedAt")
    blobs = await _read_blobs(ctx, obj, read_blob or _store_reader(ctx))
    raw = build_message(obj, blobs.get, hostname=_hostname())
    try:
        appended = await ctx.upstream.append(mailboxes[0].imap_name, raw, flags, internaldate)
    except ImapCommandFailed as exc:
        raise set_error_from_imap(exc) from None
    try:
        uid = appended.uid or await _find_uid(ctx, mailboxes[0].imap_name, raw)
        written = [(mailboxes[0], uid), *await _copy_all(ctx, mailboxes, uid)]
        where = (mailboxes[0].id, uid)
        labelled = ctx.upstream.profile.labels
        if labelled:
            # a label's folder is not synced: find the message's holding copy
            where = await label_writes.holding_location(ctx, rows, mailboxes[0], uid)
        found = await _created(ctx, *where)
        # labels as mailboxes: label locations are no copies (see existed_before)
        ours = None if labelled else {where, *((row.id, copy_uid) for row, copy_uid in written)}
        duplicate = await ctx.read(
            lambda tx: existed_before(tx, ctx.account_id, found.email_id, ours, since)
        )
        if duplicate:
            await take_back(ctx, written)  # Rule 4
            await ctx.refresh(force=True)
            raise SetError(SetErrorType.ALREADY_EXISTS, existingId=found.email_id)
    except UpstreamUnavailable as exc:
        raise MethodError(
            MethodErrorType.SERVER_PARTIAL_FAIL,
            "the upstream failed after the message was appended",
        ) from exc
    return {
        "id": found.email_id,
        "blobId": message_blob_id(found.email_id),
        "threadId": found.thread_id,
        "size": found.size,
    }


# --- checks --------------------------------------------------------------------------------


def _mailboxes(call: Call, value: Json, live: Mapping[str, q.MailboxRow]) -> list[q.MailboxRow]:
    """The target mailboxes, the first one getting the APPEND (§4.1.1: at least one)."""
    if not isinstance(value, dict) or not value:
        raise invalid_properties("mailboxIds must name at least one mailbox", "mailboxIds")
    if any(flag is not True for flag in value.values()):
        raise invalid_properties("mailboxIds values must be true", "mailboxIds")
    targets: dict[str, q.MailboxRow] = {}
    for key in value:
        try:
            mailbox_id = resolve_creation_id(call, key)
        except UnknownCreationId as exc:
            raise exc.set_error(SetErrorType.INVALID_PROPERTIES, "mailboxIds") from None
        row = live.get(mailbox_id)
        if row is None:
            raise invalid_properties(f"no mailbox {key[:40]!r}", "mailboxIds")
        if not row.my_rights.get("mayAddItems", True):
            raise SetError(SetErrorType.FORBIDDEN, f"mailbox {mailbox_id} does not allow adding")
        targets[mailbox_id] = row
    return list(targets.values())


def _keywords(value: Json) -> list[str]:
    """Keywords (§4.1.1): 1-255 of %x21-%x7e but ``( ) { ] % * " \\``, values true."""
    if value is None:
        return []
    if not isinstance(value, dict) or any(flag is not True for flag in value.values()):
        raise invalid_properties("keywords must map keywords to true", "keywords")
    for keyword in value:
        ok = 1 <= len(keyword) <= 255 and all("\x21" <= c <= "\x7e" for c in keyword)
        if not ok or set(keyword) & _KEYWORD_BAD:
            raise invalid_properties(f"invalid keyword {keyword[:40]!r}", "keywords")
    return [keyword.lower() for keyword in value]


async def _read_blobs(
    ctx: MethodContext, obj: JsonObject, read_blob: BlobReader
) -> dict[str, tuple[bytes, str]]:
    """Every blob the body parts name that exists (the builder reports the others)."""
    blobs: dict[str, tuple[bytes, str]] = {}
    for blob_id in referenced_blob_ids(obj):
        blob = await read_blob(blob_id)
        if blob is not None:
            blobs[blob_id] = blob
    limit = ctx.cfg.limits.max_size_upload  # maxSizeAttachmentsPerEmail
    if sum(len(data) for data, _ in blobs.values()) > limit:
        raise SetError(SetErrorType.TOO_LARGE, f"attachments exceed {limit} octets")
    return blobs


def _hostname() -> str:
    """This host's name, for Message-IDs when the From address gives no domain."""
    return socket.gethostname() or "localhost"


# --- the upstream -------------------------------------------------------------------------


async def _find_uid(ctx: MethodContext, mailbox: str, raw: bytes) -> int:
    """The server did not say the new message's UID (no APPENDUID): find it by its
    Message-ID."""
    ids = select_header(raw_headers(raw), "Message-ID", "asMessageIds", False) or []
    if ids:
        uids = await ctx.upstream.find_appended(mailbox, ids[0])
        if uids:
            return max(uids)
    raise SetError(SetErrorType.FORBIDDEN, "the server did not keep the new message")


async def _copy_all(ctx: MethodContext, mailboxes: list[q.MailboxRow], uid: int) -> list[Written]:
    """Copy the appended message to the other mailboxes; the copies made, each with its UID
    when the server said (COPYUID).  Undo everything on a NO (Rule 1)."""
    first = mailboxes[0].imap_name
    done: list[Written] = []
    failure: ImapCommandFailed | None = None
    async with ctx.upstream.writing(first) as box:
        for row in mailboxes[1:]:
            try:
                copied = await box.copy([uid], row.imap_name)
            except ImapCommandFailed as exc:
                failure = exc
                break
            done.append((row, copied.target_uid(uid)))
        if failure is not None:
            await box.remove([uid])
    if failure is None:
        return done
    for row, copied_uid in done:
        if copied_uid is not None:
            async with ctx.upstream.writing(row.imap_name) as box:
                await box.remove([copied_uid])
    raise set_error_from_imap(failure)


async def _created(ctx: MethodContext, mailbox_id: str, uid: int) -> EmailAt:
    """The Email at (mailbox, uid) after a refresh; a second refresh covers one that was
    already running when the APPEND landed."""
    for _attempt in range(2):
        await ctx.refresh(force=True)
        found = await ctx.read(lambda tx: email_at(tx, ctx.account_id, mailbox_id, uid))
        if found is not None:
            return found
    raise SetError(SetErrorType.FORBIDDEN, "the new message is not visible upstream")


# --- one Email per content (Rule 4, shared with Email/import) --------------------------------


def existed_before(
    tx: Tx,
    account_id: str,
    email_id: str,
    ours: Collection[tuple[str, int | None]] | None,
    since: int,
) -> bool:
    """Whether the Email that newly written copies became was there before the write.

    ``since`` is the Email state's seq read before the APPEND; ``ours`` holds the
    (mailbox id, UID) of every copy the write made (UID None: somewhere in that mailbox).
    The Email existed when the cache knew it then (created at or before ``since``), or when
    it has a visible copy that the write did not make (one the cache had not seen yet).
    ``ours`` is None in Gmail mode, where an Email's label locations are no copies of their
    own (they carry the All Mail UID): only the first test applies there.
    """
    row = em.email(tx, account_id, email_id)
    if row is None:
        return False
    if row.created_seq <= since:
        return True
    if ours is None:
        return False
    unsure = {mailbox_id for mailbox_id, uid in ours if uid is None}
    return any(
        not loc.deleted and (loc.mailbox_id, loc.uid) not in ours and loc.mailbox_id not in unsure
        for loc in em.locations_of_email(tx, account_id, email_id)
    )


async def take_back(ctx: MethodContext, written: Sequence[Written]) -> None:
    """Remove exactly the copies one write made (our own UIDs, docs/design.md, "Writes",
    Rule 3: expunged where the server can expunge single UIDs, else ``\\Deleted`` only);
    the caller refreshes.

    A copy whose UID the server did not give stays (logged), and so does everything in
    Gmail mode: there a UID in a label's folder is not known to be a new copy (when Gmail
    merges the APPEND into a message it holds, it can be the original's), and removing it
    would take the label off the original.
    """
    if ctx.upstream.profile.labels:
        log.info("duplicate message where labels are mailboxes: the labels it gained stay")
        return
    for mailbox, uid in written:
        if uid is None:
            log.warning("duplicate message in %s: a copy without COPYUID left behind", mailbox.id)
            continue
        try:
            async with ctx.upstream.writing(mailbox.imap_name) as box:
                await box.remove([uid])
        except ProxyError as exc:
            log.warning(
                "duplicate message in %s: could not remove uid %d: %s", mailbox.id, uid, exc
            )
