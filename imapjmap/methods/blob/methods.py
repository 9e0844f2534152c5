"""Blob/upload, Blob/get and Blob/lookup (RFC 9404, checklist §9).

- Blob/upload builds each blob from its data sources, concatenated in order:
  ``{"data:asText": s}`` (UTF-8 octets of s), ``{"data:asBase64": s}``, or
  ``{"blobId": id, "offset": n, "length": n}`` (a range of any blob the account can read,
  ``#creationId`` allowed, including blobs created earlier in the same call).  The result is
  stored as an upload (:mod:`imapjmap.blobs.content`), so its id is content-derived and
  it expires like an HTTP upload.
- Blob/get returns ``data:asText`` (null with ``isEncodingProblem`` when the octets are not
  UTF-8), ``data:asBase64``, ``data`` (text when valid UTF-8, else base64), ``digest:sha``
  and ``digest:sha-256`` (base64 of the digest) over the selected range, and ``size`` (of the
  whole blob).  ``isTruncated`` says the range ran past the end of the blob.
- Blob/lookup maps a blob to the objects that reference it: a message blob (and any part of
  it) to its Email, the Email's mailboxes and its Thread; an upload to nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.blobs import content as blob_store
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
from imapjmap.jmap.session import BLOB_DIGESTS, BLOB_MAX_DATA_SOURCES, BLOB_TYPE_NAMES
from imapjmap.jmap.wire import MAIL, JsonObject, is_id, is_unsigned_int
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.store import emails as em

DEFAULT_TYPE: Final = "application/octet-stream"
DEFAULT_GET_PROPERTIES: Final = ("data", "size")
_DATA_PROPERTIES: Final = ("data", "data:asText", "data:asBase64")
_DIGESTS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "sha": lambda octets: hashlib.sha1(octets).digest(),
    "sha-256": lambda octets: hashlib.sha256(octets).digest(),
}
_TYPE_CAPABILITY: Final = {"Mailbox": MAIL, "Thread": MAIL, "Email": MAIL}
assert set(_DIGESTS) == set(BLOB_DIGESTS) and set(_TYPE_CAPABILITY) == set(BLOB_TYPE_NAMES)


def _unknown_args(raw: JsonObject, allowed: frozenset[str]) -> None:
    unknown = [name for name in raw if name not in allowed]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")


def _id_list(raw: JsonObject, name: str, maximum: int) -> list[str]:
    value = raw.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_arguments(f"'{name}' is required and must be an array of Strings")
    if len(value) > maximum:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE, f"{len(value)} {name} exceed the maximum {maximum}"
        )
    return list(dict.fromkeys(value))


# --- Blob/upload -----------------------------------------------------------------------------


class _Builder:
    """Concatenates the data sources of one UploadObject, within maxSizeBlobSet."""

    def __init__(self, ctx: MethodContext, call: Call) -> None:
        self.ctx = ctx
        self.call = call
        self.limit = ctx.cfg.limits.max_size_upload

    async def build(self, obj: JsonObject) -> tuple[bytes, str]:
        unknown = sorted(set(obj) - {"data", "type"})
        if unknown:
            raise invalid_properties("unknown properties", *unknown)
        type_ = obj.get("type")
        if type_ is not None and (not isinstance(type_, str) or not type_.isprintable()):
            raise invalid_properties("type must be a String or null", "type")
        sources = obj.get("data")
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise invalid_properties("data must be an array of DataSourceObjects", "data")
        if len(sources) > BLOB_MAX_DATA_SOURCES:
            raise SetError(
                SetErrorType.TOO_LARGE, f"more than {BLOB_MAX_DATA_SOURCES} data sources"
            )
        pieces: list[bytes] = []
        size = 0
        for source in sources:
            piece = await self._source(source)
            size += len(piece)
            if size > self.limit:
                raise SetError(SetErrorType.TOO_LARGE, f"larger than maxSizeBlobSet {self.limit}")
            pieces.append(piece)
        return b"".join(pieces), type_ or DEFAULT_TYPE

    async def _source(self, source: JsonObject) -> bytes:
        kinds = [k for k in ("data:asText", "data:asBase64", "blobId") if k in source]
        extra = set(source) - {"data:asText", "data:asBase64", "blobId", "offset", "length"}
        if len(kinds) != 1 or extra or (kinds[0] != "blobId" and len(source) != 1):
            raise invalid_properties("each data source holds exactly one kind of data", "data")
        value = source[kinds[0]]
        if not isinstance(value, str):
            raise invalid_properties(f"{kinds[0]} must be a String", "data")
        if kinds[0] == "data:asText":
            return value.encode("utf-8", "surrogatepass")
        if kinds[0] == "data:asBase64":
            return _base64(value)
        return await self._range(value, source.get("offset"), source.get("length"))

    async def _range(self, blob_id: str, offset: Any, length: Any) -> bytes:
        for name, number in (("offset", offset), ("length", length)):
            if number is not None and not is_unsigned_int(number):
                raise invalid_properties(f"{name} must be an UnsignedInt or null", "data")
        try:
            resolved = resolve_creation_id(self.call, blob_id)
        except UnknownCreationId:
            raise SetError(SetErrorType.BLOB_NOT_FOUND, notFound=[blob_id]) from None
        blob = await blob_store.read(
            self.ctx.store, self.ctx.upstream, self.ctx.account_id, resolved
        )
        if blob is None:
            raise SetError(SetErrorType.BLOB_NOT_FOUND, notFound=[blob_id])
        start = offset or 0
        end = len(blob.data) if length is None else start + length
        if start > len(blob.data) or end > len(blob.data):
            raise invalid_properties("offset and length run past the end of the blob", "data")
        return blob.data[start:end]


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_properties("data:asBase64 is not valid base64", "data") from None


async def blob_upload(ctx: MethodContext, call: Call) -> JsonObject:
    _unknown_args(call.args, frozenset({"accountId", "create"}))
    create = call.args.get("create")
    if not isinstance(create, dict) or not all(isinstance(v, dict) for v in create.values()):
        raise invalid_arguments("'create' is required and must map creation ids to objects")
    if any(not is_id(key) for key in create):
        raise invalid_arguments("'create' keys must be valid creation ids")
    maximum = ctx.cfg.limits.max_objects_in_set
    if len(create) > maximum:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE, f"{len(create)} creates exceed {maximum}"
        )
    builder = _Builder(ctx, call)
    created: JsonObject = {}
    not_created: JsonObject = {}
    for creation_id, obj in create.items():
        try:
            data, type_ = await builder.build(obj)
        except SetError as exc:
            not_created[creation_id] = exc.to_json()
            continue
        try:
            row = await blob_store.save_upload(
                ctx.store,
                ctx.account_id,
                data,
                type_,
                quota=ctx.cfg.limits.max_upload_bytes_per_account,
            )
        except blob_store.UploadOverQuota as exc:
            not_created[creation_id] = SetError(SetErrorType.OVER_QUOTA, str(exc)).to_json()
            continue
        created[creation_id] = {"id": row.id, "type": type_, "size": row.size}
        call.created_ids[creation_id] = row.id
    return responses.create_response(created, not_created, account_id=ctx.account_id)


# --- Blob/get --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _GetArgs:
    ids: list[str]
    properties: tuple[str, ...]
    offset: int
    length: int | None


def _get_args(raw: JsonObject, max_objects: int) -> _GetArgs:
    _unknown_args(raw, frozenset({"accountId", "ids", "properties", "offset", "length"}))
    if raw.get("ids") is None:
        raise invalid_arguments("'ids' is required: blobs cannot be listed")
    ids = _id_list(raw, "ids", max_objects)
    props = raw.get("properties")
    if props is None:
        properties: tuple[str, ...] = DEFAULT_GET_PROPERTIES
    else:
        if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
            raise invalid_arguments("'properties' must be an array of Strings or null")
        known = {*_DATA_PROPERTIES, "size", *(f"digest:{alg}" for alg in _DIGESTS)}
        unknown = [p for p in props if p not in known and p != "id"]
        if unknown:
            raise invalid_arguments(f"unknown or unsupported property {unknown[0][:60]!r}")
        properties = tuple(p for p in dict.fromkeys(props) if p != "id")
    offset, length = raw.get("offset"), raw.get("length")
    for name, number in (("offset", offset), ("length", length)):
        if number is not None and not is_unsigned_int(number):
            raise invalid_arguments(f"'{name}' must be an UnsignedInt or null")
    return _GetArgs(ids, properties, int(offset or 0), None if length is None else int(length))


def blob_json(blob_id: str, data: bytes, args: _GetArgs) -> JsonObject:
    """One Blob/get entry for the octets ``data`` of blob ``blob_id``."""
    end = len(data) if args.length is None else args.offset + args.length
    selected = data[args.offset : end]
    truncated = args.offset > len(data) or end > len(data)
    try:
        text: str | None = selected.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    out: JsonObject = {"id": blob_id}
    wants_text = False
    for prop in args.properties:
        if prop == "data:asText" or (prop == "data" and text is not None):
            out["data:asText"] = text
            wants_text = True
        elif prop in ("data:asBase64", "data"):
            out["data:asBase64"] = base64.b64encode(selected).decode("ascii")
            wants_text = wants_text or prop == "data"
        elif prop == "size":
            out["size"] = len(data)
        else:
            digest = _DIGESTS[prop.removeprefix("digest:")](selected)
            out[prop] = base64.b64encode(digest).decode("ascii")
    if any(p in _DATA_PROPERTIES for p in args.properties):
        out["isEncodingProblem"] = wants_text and text is None
        out["isTruncated"] = truncated
    return out


async def blob_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = _get_args(call.args, ctx.cfg.limits.max_objects_in_get)
    await ctx.refresh()
    found: list[JsonObject] = []
    not_found: list[str] = []
    for blob_id in dict.fromkeys(standard.resolve_ids(call, args.ids)):
        blob = await blob_store.read(ctx.store, ctx.upstream, ctx.account_id, blob_id)
        if blob is None:
            not_found.append(blob_id)
        else:
            found.append(blob_json(blob_id, blob.data, args))
    return responses.get_response(found, not_found, account_id=ctx.account_id)


# --- Blob/lookup -----------------------------------------------------------------------------


def _type_names(raw: JsonObject, using: frozenset[str]) -> list[str]:
    names = raw.get("typeNames")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise invalid_arguments("'typeNames' is required and must be an array of Strings")
    for name in names:
        capability = _TYPE_CAPABILITY.get(name)
        if capability is None or capability not in using:
            raise MethodError(MethodErrorType.UNKNOWN_DATA_TYPE, f"no data type {name[:60]!r} here")
    return list(dict.fromkeys(names))


def _matches(row: em.EmailRow | None, type_names: list[str]) -> dict[str, list[str]]:
    referencing: dict[str, list[str]] = {
        "Email": [row.id] if row else [],
        "Mailbox": sorted(row.mailbox_ids) if row else [],
        "Thread": [row.thread_id] if row else [],
    }
    return {name: referencing[name] for name in type_names}


async def _email_row(ctx: MethodContext, email_id: str) -> em.EmailRow | None:
    return await ctx.read(lambda tx: em.email(tx, ctx.account_id, email_id))


async def blob_lookup(ctx: MethodContext, call: Call) -> JsonObject:
    _unknown_args(call.args, frozenset({"accountId", "typeNames", "ids"}))
    type_names = _type_names(call.args, call.using)
    ids = _id_list(call.args, "ids", ctx.cfg.limits.max_objects_in_get)
    await ctx.refresh()
    listed: list[JsonObject] = []
    not_found: list[str] = []
    for blob_id in dict.fromkeys(standard.resolve_ids(call, ids)):
        if not await blob_store.exists(ctx.store, ctx.upstream, ctx.account_id, blob_id):
            not_found.append(blob_id)
            continue
        email_id = blob_store.email_of(blob_id)
        row = None if email_id is None else await _email_row(ctx, email_id)
        listed.append({"id": blob_id, "matchedIds": _matches(row, type_names)})
    return responses.get_response(listed, not_found, account_id=ctx.account_id)
