"""Email/import (RFC 8621 §4.8).

Email/import, one EmailImport at a time:

1. check the object: ``mailboxIds`` non-empty and naming live, selectable mailboxes,
   ``keywords`` valid, ``receivedAt`` a UTCDate (``invalidProperties``);
2. read the blob (any blob this account can read: an upload, a message, a part;
   a blob it cannot read is ``invalidProperties`` on ``blobId``, as RFC 8621 §4.8 says of
   an id not found, unlike Email/set's ``blobNotFound``) and check it is a message
   (``invalidEmail``);
3. ``APPEND`` it to the first mailbox with the keywords' flags and ``receivedAt`` as the
   INTERNALDATE, then ``UID COPY`` it into each other mailbox, so that servers that keep a
   message's id across COPY (Dovecot's X-GUID, RFC 8474 EMAILID, Gmail) show ONE Email in
   several mailboxes.  A COPY refused half-way removes what was already written (our own
   UIDs only), so each import lands entirely or not at all (CORE-SET-02).

Then ONE refresh of the cache, and each new Email is found through its location
(mailbox, APPENDUID uid).  Servers without UIDPLUS give no APPENDUID: the new message is
found by ``UID SEARCH`` in the first mailbox among the UIDs at or above the UIDNEXT read
just before the APPEND, narrowed by its Message-ID when it has one (a message delivered in
the same instant without a Message-ID could be mistaken for it; that is the documented
limit of such servers).

A server that holds one Email per content (Cyrus gives identical bytes one RFC 8474 EMAILID)
makes an import of bytes it already has one more copy of an existing Email.  Such an import,
and a later one of the same call that became the same Email as an earlier one, fails with
``alreadyExists`` and ``existingId`` (RFC 8621 §4.8), and the copies it wrote are removed
again (our own UIDs only), also when the existing Email is in other mailboxes: the client
asked for a new Email, not to file the old one.  The test is shared with Email/set create
(:func:`imapjmap.methods.email.create.existed_before`).

An IMAP NO becomes that record's SetError (``[OVERQUOTA]`` → ``overQuota`` ...); a lost
connection after something landed is ``serverPartialFail``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.blobs import content as blob_store
from imapjmap.blobs import ids as blobs
from imapjmap.errors import ImapCommandFailed, ProxyError, UpstreamUnavailable
from imapjmap.jmap import responses
from imapjmap.jmap.dispatch import Call, UnknownCreationId, resolve_creation_id
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
    invalid_properties,
)
from imapjmap.jmap.wire import JsonObject, is_id, parse_utc_date
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import label_writes
from imapjmap.methods.email.create import Written, existed_before, take_back
from imapjmap.methods.email.parse import looks_like_message
from imapjmap.methods.imaperrors import set_error_from_imap
from imapjmap.mime.headers import raw_headers, select_header
from imapjmap.store import blobs as stored
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Tx

log = logging.getLogger(__name__)

_IMPORT_ARGS: Final = frozenset({"accountId", "ifInState", "emails"})
_IMPORT_PROPERTIES: Final = frozenset({"blobId", "mailboxIds", "keywords", "receivedAt"})
# RFC 8621 §4.1.1: 1-255 of %x21-%x7e except ( ) { ] % * " \
_KEYWORD: Final = re.compile(r"[\x21-\x7e]{1,255}")
_KEYWORD_BAD: Final = frozenset('(){]%*"\\')


def valid_keyword(keyword: str) -> bool:
    return bool(_KEYWORD.fullmatch(keyword)) and not (set(keyword) & _KEYWORD_BAD)


@dataclass(frozen=True, slots=True)
class EmailImport:
    """One checked EmailImport object."""

    blob_id: str
    mailboxes: tuple[q.MailboxRow, ...]  # the APPEND goes to the first
    flags: tuple[str, ...]
    received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Landed:
    creation_id: str
    mailbox_id: str  # (mailbox_id, uid): where the cache will show the message
    uid: int
    written: tuple[Written, ...]  # every copy the import made, the APPEND first

    @property
    def locations(self) -> set[tuple[str, int | None]]:
        return {(self.mailbox_id, self.uid), *((row.id, uid) for row, uid in self.written)}


# --- arguments -------------------------------------------------------------------------------


def _import_args(raw: JsonObject, max_objects: int) -> tuple[str | None, dict[str, JsonObject]]:
    unknown = [name for name in raw if name not in _IMPORT_ARGS]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    if_in_state = raw.get("ifInState")
    if if_in_state is not None and not isinstance(if_in_state, str):
        raise invalid_arguments("'ifInState' must be a String or null")
    emails = raw.get("emails")
    if not isinstance(emails, dict) or not all(isinstance(v, dict) for v in emails.values()):
        raise invalid_arguments("'emails' is required and must map creation ids to objects")
    bad = next((key for key in emails if not is_id(key)), None)
    if bad is not None:
        raise invalid_arguments(f"'emails' key {bad[:40]!r} is not a valid creation id")
    if len(emails) > max_objects:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(emails)} emails exceed maxObjectsInSet ({max_objects})",
        )
    return if_in_state, emails


def check_mailboxes(
    call: Call, value: Any, live: dict[str, q.MailboxRow]
) -> tuple[q.MailboxRow, ...]:
    if not isinstance(value, dict) or not value:
        raise invalid_properties("mailboxIds must name at least one mailbox", "mailboxIds")
    rows: list[q.MailboxRow] = []
    for key, flag in value.items():
        if flag is not True:
            raise invalid_properties("mailboxIds values must be true", "mailboxIds")
        try:
            mailbox_id = resolve_creation_id(call, key)
        except UnknownCreationId as exc:
            raise exc.set_error(SetErrorType.INVALID_PROPERTIES, "mailboxIds") from None
        row = live.get(mailbox_id)
        selectable = row is not None and row.my_rights.get("mayReadItems", False)
        if row is None or (row.uidvalidity is None and not selectable):  # \Noselect
            raise invalid_properties(f"no mailbox {key[:60]!r} to import into", "mailboxIds")
        if row not in rows:
            rows.append(row)
    return tuple(rows)


def check_flags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or any(v is not True for v in value.values()):
        raise invalid_properties("keywords must map keywords to true", "keywords")
    keywords = [k.lower() for k in value]
    if not all(valid_keyword(k) for k in keywords):
        raise invalid_properties("keywords holds an invalid keyword", "keywords")
    # a valid keyword is an IMAP atom (RFC 8621 excludes the atom-specials), so every flag
    # can be sent
    return tuple(em.flags_from_keywords(dict.fromkeys(keywords)))


def check_received_at(value: Any) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    parsed = parse_utc_date(value)
    if parsed is None:
        raise invalid_properties("receivedAt must be a UTCDate", "receivedAt")
    return parsed.replace(microsecond=0)


def check_import(call: Call, raw: JsonObject, live: dict[str, q.MailboxRow]) -> EmailImport:
    """Check one EmailImport object.

    Raises:
        SetError: invalidProperties (unknown property, bad mailboxIds/keywords/receivedAt,
            a ``#creationId`` blobId that names nothing).
    """
    unknown = sorted(set(raw) - _IMPORT_PROPERTIES)
    if unknown:
        raise invalid_properties("unknown properties", *unknown)
    blob_id = raw.get("blobId")
    if not isinstance(blob_id, str):
        raise invalid_properties("blobId is required", "blobId")
    try:
        blob_id = resolve_creation_id(call, blob_id)
    except UnknownCreationId as exc:
        raise exc.set_error(SetErrorType.INVALID_PROPERTIES, "blobId") from None
    return EmailImport(
        blob_id,
        check_mailboxes(call, raw.get("mailboxIds"), live),
        check_flags(raw.get("keywords")),
        check_received_at(raw.get("receivedAt")),
    )


# --- the IMAP side -----------------------------------------------------------------------------


class Importer:
    """Lands the messages of one Email/import call and finds the Emails they became."""

    def __init__(self, ctx: MethodContext, call: Call, live: dict[str, q.MailboxRow]) -> None:
        self.ctx = ctx
        self.call = call
        self.live = live
        self.landed = 0

    async def land(self, creation_id: str, raw: JsonObject) -> Landed:
        """Write one message; raises SetError or ImapCommandFailed when it did not land."""
        item = check_import(self.call, raw, self.live)
        blob = await blob_store.read(
            self.ctx.store, self.ctx.upstream, self.ctx.account_id, item.blob_id
        )
        if blob is None:
            raise invalid_properties("no such blob in this account", "blobId")
        if not looks_like_message(blob.data):
            raise SetError(
                SetErrorType.INVALID_EMAIL, "the blob is not an RFC 5322 message", ["blobId"]
            )
        first = item.mailboxes[0]
        upstream = self.ctx.upstream
        says_uid = upstream.appends_say_uid
        floor = None if says_uid else await upstream.uid_next(first.imap_name)
        appended = await upstream.append(first.imap_name, blob.data, item.flags, item.received_at)
        self.landed += 1
        uid = appended.uid if says_uid else None
        if uid is None:
            uid = await self._find(first, blob.data, floor or 1)
        written = ((first, uid), *await self._copy(first, uid, item.mailboxes[1:]))
        if upstream.profile.labels:
            # a label's folder is not synced: find the message's holding copy
            rows = list(self.live.values())
            where = await label_writes.holding_location(self.ctx, rows, first, uid)
            return Landed(creation_id, *where, written)
        return Landed(creation_id, first.id, uid, written)

    async def _find(self, mailbox: q.MailboxRow, data: bytes, floor: int) -> int:
        """The UID of the message just appended, on a server that gave no APPENDUID:
        from ``floor``, the UIDNEXT before the APPEND, by Message-ID where it has one."""
        message_ids = select_header(raw_headers(data), "Message-ID", "asMessageIds", False)
        message_id = str(message_ids[0]) if isinstance(message_ids, list) and message_ids else None
        uids = await self.ctx.upstream.find_appended(mailbox.imap_name, message_id, floor=floor)
        if not uids:
            raise MethodError(
                MethodErrorType.SERVER_PARTIAL_FAIL,
                "a message was imported but could not be found again; resynchronise",
            )
        return max(uids)

    async def _copy(
        self, first: q.MailboxRow, uid: int, others: tuple[q.MailboxRow, ...]
    ) -> list[Written]:
        """COPY into each other mailbox: the copies, with their UIDs where the server gives
        COPYUID.  On a NO, undo what this import wrote, then re-raise."""
        done: list[Written] = []
        if not others:
            return done
        try:
            async with self.ctx.upstream.writing(first.imap_name) as box:
                for other in others:
                    copied = await box.copy([uid], other.imap_name)
                    done.append((other, copied.target_uid(uid)))
        except ImapCommandFailed:
            await self._undo([(first, uid), *done])
            raise
        return done

    async def _undo(self, written: list[Written]) -> None:
        for mailbox, uid in written:
            if uid is None:
                log.warning("import into %s: copy without COPYUID left behind", mailbox.id)
                continue
            try:
                async with self.ctx.upstream.writing(mailbox.imap_name) as box:
                    await box.remove([uid])
            except ProxyError as exc:
                log.warning("import into %s: could not undo uid %d: %s", mailbox.id, uid, exc)
        self.landed -= 1

    async def created(
        self, landed: list[Landed], since: int
    ) -> tuple[dict[str, JsonObject], dict[str, JsonObject]]:
        """Refresh once, then each landed message's Email: ``{id, blobId, threadId, size}``,
        and the ``alreadyExists`` SetErrors of those that became an Email that was there
        before (``since``: the Email state's seq read before the first APPEND) or that an
        earlier import of this call became (their copies are removed again)."""
        if not landed:
            return {}, {}
        await self.ctx.refresh(force=True)
        found = await self.ctx.read(lambda tx: _emails_at(tx, self.ctx.account_id, landed))
        if len(found) < len(landed):
            # a first sync still filling the mailbox in the background skips it; wait for it
            await self.ctx.services.sync_for(self.ctx.account_id).wait_filled()
            await self.ctx.refresh(force=True)
            found = await self.ctx.read(lambda tx: _emails_at(tx, self.ctx.account_id, landed))
        if len(found) < len(landed):
            raise MethodError(
                MethodErrorType.SERVER_PARTIAL_FAIL,
                "imported messages are not visible upstream; resynchronise",
            )
        duplicates = await self._duplicates(landed, found, since)
        if duplicates:
            for item in landed:
                if item.creation_id in duplicates:
                    await take_back(self.ctx, item.written)
            await self.ctx.refresh(force=True)
        created: dict[str, JsonObject] = {
            cid: {
                "id": row.id,
                "blobId": blobs.message_blob_id(row.id),
                "threadId": row.thread_id,
                "size": row.size,
            }
            for cid, row in found.items()
            if cid not in duplicates
        }
        not_created: dict[str, JsonObject] = {
            cid: SetError(SetErrorType.ALREADY_EXISTS, existingId=email_id).to_json()
            for cid, email_id in duplicates.items()
        }
        return created, not_created

    async def _duplicates(
        self, landed: list[Landed], found: dict[str, em.EmailRow], since: int
    ) -> dict[str, str]:
        """creation id → the existing Email id, for each import that made no new Email."""
        # the copies of every import of this call are "ours": two of them becoming one Email
        # is told by the order of the call (the first one created it)
        ours: set[tuple[str, int | None]] | None = {
            where for item in landed for where in item.locations
        }
        if self.ctx.upstream.profile.labels:
            ours = None  # label locations are no copies (see existed_before)
        account_id = self.ctx.account_id
        existed = await self.ctx.read(
            lambda tx: {
                row.id
                for row in found.values()
                if existed_before(tx, account_id, row.id, ours, since)
            }
        )
        duplicates: dict[str, str] = {}
        claimed: set[str] = set()
        for item in landed:
            row = found[item.creation_id]
            if row.id in existed or row.id in claimed:
                duplicates[item.creation_id] = row.id
            claimed.add(row.id)
        return duplicates


def _emails_at(tx: Tx, account_id: str, landed: list[Landed]) -> dict[str, em.EmailRow]:
    out: dict[str, em.EmailRow] = {}
    for item in landed:
        email_id = stored.email_at(tx, account_id, item.mailbox_id, item.uid)
        row = em.email(tx, account_id, email_id) if email_id is not None else None
        if row is not None:
            out[item.creation_id] = row
    return out


# --- the methods -------------------------------------------------------------------------------


async def land_all(
    importer: Importer, emails: dict[str, JsonObject], not_created: JsonObject
) -> list[Landed]:
    landed: list[Landed] = []
    for creation_id, raw in emails.items():
        try:
            landed.append(await importer.land(creation_id, raw))
        except SetError as exc:
            not_created[creation_id] = exc.to_json()
        except ImapCommandFailed as exc:
            not_created[creation_id] = set_error_from_imap(exc).to_json()
        except UpstreamUnavailable as exc:
            if importer.landed:
                raise MethodError(
                    MethodErrorType.SERVER_PARTIAL_FAIL,
                    "the upstream failed after some emails were imported",
                ) from exc
            raise
    return landed


async def email_import(ctx: MethodContext, call: Call) -> JsonObject:
    if_in_state, emails = _import_args(call.args, ctx.cfg.limits.max_objects_in_set)
    await ctx.refresh()
    since = await ctx.read(lambda tx: q.type_state(tx, ctx.account_id, em.EMAIL_TYPE))
    old_state = ctx.encode_state(since)
    if if_in_state is not None and if_in_state != old_state:
        raise MethodError(MethodErrorType.STATE_MISMATCH)
    live = {row.id: row for row in await ctx.read(lambda tx: q.live_mailboxes(tx, ctx.account_id))}
    importer = Importer(ctx, call, live)
    not_created: JsonObject = {}
    landed = await land_all(importer, emails, not_created)
    created, duplicates = await importer.created(landed, since)
    not_created.update(duplicates)
    for creation_id, obj in created.items():
        call.created_ids[creation_id] = obj["id"]
    return responses.create_response(
        created,
        not_created,
        account_id=ctx.account_id,
        old_state=old_state,
        new_state=await ctx.state(em.EMAIL_TYPE),
    )
