"""Email/get and Email/changes (RFC 8621 §4.2, §4.3; checklist EML-GET-*, CORE-GET-*).

Theory of operation: the list properties a mail list shows come from the cache row and
never touch IMAP; everything else is derived from the message octets, fetched on demand
(``blobs.bodies.fetch_message``, a bounded LRU) and parsed by ``mime.email``.

- From the cache: ``id``, ``blobId``, ``threadId``, ``mailboxIds``, ``keywords``, ``size``,
  ``receivedAt``, ``messageId``, ``inReplyTo``, ``references``, ``from``, ``to``, ``cc``,
  ``bcc``, ``subject``, ``sentAt``, ``hasAttachment``, ``preview`` (computed once, then
  stored, when the sync could not get it).
- From the message: ``sender`` and ``replyTo`` (IMAP ENVELOPE fills both from From when the
  header is absent, RFC 3501 §7.4.2, so the cache cannot tell null from a copy of From),
  ``headers``, every ``header:*`` form, and the body properties.

Blob ids follow :mod:`imapjmap.blobs.ids`; part blob ids from ``mime`` are rewritten into
that scheme.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.blobs import bodies
from imapjmap.blobs import ids as blobs
from imapjmap.jmap import responses
from imapjmap.jmap.args import GetArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.limits import check_properties
from imapjmap.jmap.wire import (
    EncodedObject,
    Json,
    JsonObject,
    is_unsigned_int,
    utc_date_of_timestamp,
)
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.mime import email as mime_email
from imapjmap.store import email_queries as eq
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Tx

# Emails built per event-loop turn (a millisecond or two): an Email/get of maxObjectsInGet
# takes tens of milliseconds of the loop, which every other request would otherwise wait
# out; between the slices it paces itself like a long read (Store.pace).
_BUILD_TURN: Final = 25

CACHED_PROPERTIES: Final = frozenset(
    {
        *mime_email.METADATA_PROPERTIES,
        "messageId",
        "inReplyTo",
        "references",
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "sentAt",
        "hasAttachment",
        "preview",
    }
)
_GET_EXTRA: Final = (
    "bodyProperties",
    "fetchTextBodyValues",
    "fetchHTMLBodyValues",
    "fetchAllBodyValues",
    "maxBodyValueBytes",
)
_FETCH_CONCURRENCY: Final = 4
# Up to this many ids whose list properties may be kept, the rows are read on the event
# loop (store Rule 10): a mail list's page; mostly each row's updated_seq alone
_SMALL_READ: Final = 100


class _KnownProperties(Collection[str]):
    """``in`` is true for every Email property, ``header:*`` forms allowed for their header."""

    def __iter__(self) -> Iterator[str]:
        return iter(mime_email.EMAIL_PROPERTIES)

    def __len__(self) -> int:
        return len(mime_email.EMAIL_PROPERTIES)

    def __contains__(self, prop: object) -> bool:
        if not isinstance(prop, str):
            return False
        try:
            mime_email.check_properties([prop])
        except ValueError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class BodyOptions:
    """The Email/get arguments that shape body parts and ``bodyValues`` (§4.2)."""

    body_properties: tuple[str, ...] = mime_email.DEFAULT_BODY_PROPERTIES
    fetch_text: bool = False
    fetch_html: bool = False
    fetch_all: bool = False
    max_body_value_bytes: int = 0

    @classmethod
    def parse(cls, extra: JsonObject, max_properties: int) -> BodyOptions:
        """Raises MethodError invalidArguments for a bad value or body property, or more
        than ``max_properties`` distinct body properties."""
        props = extra.get("bodyProperties")
        if props is None:
            body_properties = mime_email.DEFAULT_BODY_PROPERTIES
        else:
            if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
                raise invalid_arguments("'bodyProperties' must be an array of Strings or null")
            try:
                mime_email.check_body_properties(props)
            except ValueError as exc:
                raise invalid_arguments(f"bodyProperties: {exc}") from None
            body_properties = tuple(dict.fromkeys(props))
            check_properties("bodyProperties", body_properties, max_properties)
        max_bytes = extra.get("maxBodyValueBytes")
        if max_bytes is not None and not is_unsigned_int(max_bytes):
            raise invalid_arguments("'maxBodyValueBytes' must be an UnsignedInt")
        return cls(
            body_properties,
            _flag(extra, "fetchTextBodyValues"),
            _flag(extra, "fetchHTMLBodyValues"),
            _flag(extra, "fetchAllBodyValues"),
            int(max_bytes or 0),
        )


def _flag(extra: JsonObject, name: str) -> bool:
    value = extra.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid_arguments(f"'{name}' must be a Boolean")
    return value


def received_at(row: em.EmailRow) -> str:
    return utc_date_of_timestamp(row.received_at)


# The properties read straight off the row; a table, because an Email/get of the list
# properties asks for ten of them per Email and an open inbox asks for fifty Emails.
_FROM_ROW: Final[dict[str, Callable[[em.EmailRow], Json]]] = {
    "id": lambda row: row.id,
    "blobId": lambda row: blobs.message_blob_id(row.id),
    "threadId": lambda row: row.thread_id,
    "size": lambda row: row.size,
    "hasAttachment": lambda row: row.has_attachment,
    "mailboxIds": lambda row: dict(row.mailbox_ids),
    "keywords": lambda row: dict(row.keywords),
    "receivedAt": received_at,
}


def cached_value(row: em.EmailRow, prop: str, previews: dict[str, str]) -> Json:
    """One property of :data:`CACHED_PROPERTIES` from the cache row."""
    from_row = _FROM_ROW.get(prop)
    if from_row is not None:
        return from_row(row)
    if prop == "preview":
        return row.preview if row.preview is not None else previews.get(row.id, "")
    return row.headers.get(prop)


def _rewrite_blob_ids(value: Any, email_id: str, prefix: str) -> None:
    """Turn mime's ``{prefix}_{partId}`` blob ids into the :mod:`blobs` scheme, in place."""
    if isinstance(value, list):
        for item in value:
            _rewrite_blob_ids(item, email_id, prefix)
    elif isinstance(value, dict):
        blob_id = value.get("blobId")
        if isinstance(blob_id, str) and blob_id.startswith(prefix):
            try:
                value["blobId"] = blobs.part_blob_id(email_id, blob_id[len(prefix) :])
            except ValueError:
                value["blobId"] = None
        _rewrite_blob_ids(value.get("subParts"), email_id, prefix)


def derived_properties(
    raw: bytes, email_id: str, properties: Sequence[str], options: BodyOptions
) -> dict[str, Json]:
    """The message-derived properties of one email, with blob ids in our scheme."""
    prefix = blobs.PART_PREFIX + email_id
    out = mime_email.email_properties(
        raw,
        properties=properties,
        body_properties=options.body_properties,
        fetch_text=options.fetch_text,
        fetch_html=options.fetch_html,
        fetch_all=options.fetch_all,
        max_body_value_bytes=options.max_body_value_bytes,
        blob_prefix=prefix,
    )
    for prop in ("bodyStructure", "textBody", "htmlBody", "attachments"):
        if prop in out:
            _rewrite_blob_ids(out[prop], email_id, prefix + "_")
    return out


async def fetch_all(ctx: MethodContext, email_ids: Iterable[str]) -> dict[str, bytes | None]:
    """The raw messages, a few at a time (the pool bounds the connections anyway)."""
    limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

    async def one(email_id: str) -> bytes | None:
        async with limit:
            return await bodies.fetch_message(ctx.store, ctx.upstream, ctx.account_id, email_id)

    ids = list(dict.fromkeys(email_ids))
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(i)) for i in ids]
    return {i: t.result() for i, t in zip(ids, tasks, strict=True)}


def _read_rows(
    tx: Tx,
    account_id: str,
    ids: list[str] | None,
    max_objects: int,
    known: Callable[[str, int], EncodedObject | None] | None = None,
) -> tuple[list[em.EmailRow | EncodedObject], int]:
    """The live rows of ``ids`` (all of them if None) in the order asked, each row that
    ``known`` has an object for replaced by that object; and the Email state."""
    rows: list[em.EmailRow | EncodedObject]
    if known is not None and ids is not None:
        kept = em.emails_unless_known(tx, account_id, ids, known)
        rows = [kept[i] for i in dict.fromkeys(ids) if i in kept]
    elif ids is None:
        count = eq.live_email_count(tx, account_id)
        if count > max_objects:
            raise MethodError(
                MethodErrorType.REQUEST_TOO_LARGE,
                f"the account has {count} emails, more than maxObjectsInGet {max_objects}",
            )
        rows = [*sorted(em.live_emails(tx, account_id), key=lambda r: r.id)]
    else:
        found = em.emails(tx, account_id, ids)
        rows = [found[i] for i in dict.fromkeys(ids) if i in found]
    return rows, q.type_state(tx, account_id, em.EMAIL_TYPE)


async def email_get(ctx: MethodContext, call: Call) -> JsonObject:
    limit = ctx.cfg.limits.max_objects_in_get
    args = GetArgs.parse(
        call.args,
        known_properties=_KnownProperties(),
        max_objects=limit,
        extra=_GET_EXTRA,
        max_properties=ctx.cfg.limits.max_properties,
    )
    options = BodyOptions.parse(args.extra, ctx.cfg.limits.max_properties)
    properties = args.properties or list(mime_email.DEFAULT_EMAIL_PROPERTIES)
    wanted = standard.resolve_ids(call, args.ids) if args.ids is not None else None
    derived = [p for p in properties if p not in CACHED_PROPERTIES]
    # the list properties of given ids: the objects answered before, while still true
    kept = ctx.services.email_objects if wanted is not None and not derived else None
    known = kept.lookup(ctx.account_id, ctx.account.epoch, properties) if kept else None
    await ctx.refresh()
    small = known is not None and wanted is not None and len(wanted) <= _SMALL_READ
    read = ctx.read_small if small else ctx.read
    epoch = ctx.account.epoch

    same = None
    if kept is not None and wanted is not None:  # the same page at the same state
        seq = await ctx.seq_of(em.EMAIL_TYPE)  # the Email/query before it read it, mostly
        same = kept.answer(ctx.account_id, epoch, properties, wanted, seq)
    if same is not None:
        rows: Sequence[em.EmailRow | EncodedObject] = same
    else:
        rows, seq = await read(lambda tx: _read_rows(tx, ctx.account_id, wanted, limit, known))
    previews: dict[str, str] = {}
    missing = [r.id for r in rows if isinstance(r, em.EmailRow) and r.preview is None]
    if "preview" in properties and missing:
        previews = await bodies.fetch_previews(ctx.store, ctx.upstream, ctx.account_id, missing)
    built = [r for r in rows if isinstance(r, em.EmailRow)]  # all of them unless kept
    raws = await fetch_all(ctx, [r.id for r in built]) if derived else {}
    found: list[JsonObject] = []
    first = started = time.thread_time()
    for n, row in enumerate(rows, 1):
        if isinstance(row, EncodedObject):
            found.append(row)
            continue
        if n % _BUILD_TURN == 0:  # other accounts' requests between slices of a big list
            now = time.thread_time()
            await ctx.store.pace(ctx.account_id, now - started, now - first)
            started = time.thread_time()
        obj = {p: cached_value(row, p, previews) for p in properties if p in CACHED_PROPERTIES}
        if derived:
            raw = raws.get(row.id)
            if raw is None:  # expunged upstream since the last sync: notFound
                continue
            obj.update(derived_properties(raw, row.id, derived, options))
        answer = {p: obj[p] for p in properties if p in obj}
        if kept is not None and (row.preview is not None or "preview" not in properties):
            answer = EncodedObject(answer)
            kept.keep(
                ctx.account_id, ctx.account.epoch, properties, row.id, row.updated_seq, answer
            )
        found.append(answer)
    whole = [o for o in found if isinstance(o, EncodedObject)]
    if kept is not None and wanted is not None and len(whole) == len(found):
        kept.keep_answer(ctx.account_id, epoch, properties, wanted, seq, whole)
    listed = {o["id"] for o in found}
    not_found = [i for i in dict.fromkeys(wanted or ()) if i not in listed]
    return responses.get_response(
        found, not_found, account_id=ctx.account_id, state=ctx.encode_state(seq)
    )


async def email_changes(ctx: MethodContext, call: Call) -> JsonObject:
    response, _, _ = await standard.changes(ctx, call.args, "emails", em.EMAIL_TYPE)
    return response
