"""Email/parse (RFC 8621 §4.9): any readable blob seen as an Email, stored nowhere.

A blob is parsable when it starts with a header section (at least one header field):
parsing is best effort beyond that, as for Email/get (malformed MIME still gives a body
structure).  Metadata that only a stored Email has is null (``id``, ``mailboxIds``,
``keywords``, ``receivedAt``, and ``threadId``: no Thread is guessed); ``blobId`` is the
parsed blob and ``size`` its length.  Body parts get ``B`` blob ids (see
:mod:`imapjmap.blobs.content`), so every blobId in the answer can be downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from imapjmap.blobs import content as blob_store
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.limits import check_properties
from imapjmap.jmap.wire import Json, JsonObject
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email.get import BodyOptions
from imapjmap.mime import email as mime_email
from imapjmap.mime.headers import raw_headers

_ARGS: Final = frozenset(
    {
        "accountId",
        "blobIds",
        "properties",
        "bodyProperties",
        "fetchTextBodyValues",
        "fetchHTMLBodyValues",
        "fetchAllBodyValues",
        "maxBodyValueBytes",
    }
)
_NULL_METADATA: Final = ("id", "threadId", "mailboxIds", "keywords", "receivedAt")
_PART_LISTS: Final = ("bodyStructure", "textBody", "htmlBody", "attachments")
_MARK: Final = "~parsed~"  # placeholder blob prefix; never a valid Id, so never leaked


def looks_like_message(data: bytes) -> bool:
    """True when ``data`` begins with an RFC 5322 header section (one field or more)."""
    return bool(data) and bool(raw_headers(data))


def _rewrite_blob_ids(value: Any, base: str) -> None:
    """Turn the placeholder part blob ids into ``B`` ids of ``base``, in place."""
    if isinstance(value, list):
        for item in value:
            _rewrite_blob_ids(item, base)
    elif isinstance(value, dict):
        blob_id = value.get("blobId")
        if isinstance(blob_id, str) and blob_id.startswith(_MARK + "_"):
            try:
                value["blobId"] = blob_store.sub_blob_id(base, blob_id[len(_MARK) + 1 :])
            except ValueError:
                value["blobId"] = None
        _rewrite_blob_ids(value.get("subParts"), base)


def parsed_email(
    data: bytes, blob_id: str, properties: Sequence[str], options: BodyOptions
) -> dict[str, Json]:
    """The Email/parse object of one blob, with exactly ``properties``."""
    derived = mime_email.email_properties(
        data,
        properties=properties,
        body_properties=options.body_properties,
        fetch_text=options.fetch_text,
        fetch_html=options.fetch_html,
        fetch_all=options.fetch_all,
        max_body_value_bytes=options.max_body_value_bytes,
        blob_prefix=_MARK,
    )
    for prop in _PART_LISTS:
        if prop in derived:
            _rewrite_blob_ids(derived[prop], blob_id)
    metadata: dict[str, Json] = {p: None for p in _NULL_METADATA}
    metadata.update({"blobId": blob_id, "size": len(data)})
    out: dict[str, Json] = {}
    for prop in properties:
        out[prop] = metadata[prop] if prop in metadata else derived.get(prop)
    return out


def _parse_args(
    raw: JsonObject, max_objects: int, max_properties: int
) -> tuple[list[str], list[str], BodyOptions]:
    unknown = [name for name in raw if name not in _ARGS]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    blob_ids = raw.get("blobIds")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise invalid_arguments("'blobIds' is required and must be an array of Ids")
    blob_ids = list(dict.fromkeys(blob_ids))
    if len(blob_ids) > max_objects:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(blob_ids)} blobIds exceed maxObjectsInGet ({max_objects})",
        )
    props = raw.get("properties")
    if props is None:
        properties = list(mime_email.DEFAULT_PARSE_PROPERTIES)
    else:
        if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
            raise invalid_arguments("'properties' must be an array of Strings or null")
        try:
            mime_email.check_properties(props)
        except ValueError as exc:
            raise invalid_arguments(f"properties: {exc}") from None
        properties = list(dict.fromkeys(props))
        check_properties("properties", properties, max_properties)
    options = BodyOptions.parse({k: v for k, v in raw.items() if k in _ARGS}, max_properties)
    return blob_ids, properties, options


async def email_parse(ctx: MethodContext, call: Call) -> JsonObject:
    limits = ctx.cfg.limits
    blob_ids, properties, options = _parse_args(
        call.args, limits.max_objects_in_get, limits.max_properties
    )
    await ctx.refresh()
    parsed: JsonObject = {}
    not_parsable: list[str] = []
    not_found: list[str] = []
    # a "#creationId" (of a Blob/upload earlier in the request) answers under the real id
    for blob_id in dict.fromkeys(standard.resolve_ids(call, blob_ids)):
        blob = await blob_store.read(ctx.store, ctx.upstream, ctx.account_id, blob_id)
        if blob is None:
            not_found.append(blob_id)
        elif not looks_like_message(blob.data):
            not_parsable.append(blob_id)
        else:
            parsed[blob_id] = parsed_email(blob.data, blob_id, properties, options)
    return {
        "accountId": ctx.account_id,
        "parsed": parsed or None,
        "notParsable": not_parsable or None,
        "notFound": not_found or None,
    }
