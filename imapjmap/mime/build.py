"""A JMAP Email create object → RFC 5322 message octets (RFC 8621 §4.6).  Pure: the caller
fetches every referenced blob beforehand (:func:`referenced_blob_ids`) and passes a lookup.

Theory of operation:

1. Check the object (CHECKLIST 12.8, 12.5): the top-level properties
   (:func:`_top_headers`), ``bodyValues``, then the body tree (:mod:`.build_parts`), then
   that the root part names no header the top level names (the root part's header fields
   become message header fields).  Any violation is ``invalidProperties`` naming the
   offending properties, as paths for nested ones (``bodyStructure/subParts/0/partId``).
2. Resolve the blobs; every missing one is listed in ``blobNotFound``'s ``notFound``.
3. Write: the top-level header fields in the client's property order, ``Date`` and
   ``Message-ID`` when missing (§4.6 MUST), ``MIME-Version: 1.0``, then the root entity.

Rule 1: every line is CRLF-terminated and at most 998 octets; headers are folded near 78.
Rule 2: the message reads back (through :func:`imapjmap.mime.email.email_properties`) to
        the values it was made from, up to the normalisations of each header form.
Rule 3: ``mailboxIds``, ``keywords`` and ``receivedAt`` are the caller's (they are not
        part of the octets); they are accepted here and ignored.

Decisions where the RFC leaves room: ``headers`` is refused (MUST NOT), and so are
server-set properties, even with a null value; an empty list value writes no field (it
reads back as null); a blob part without ``type`` takes its blob's type; the text of a
``partId`` part is written as ``us-ascii`` when it is ASCII and ``utf-8`` otherwise, with
its line breaks made CRLF.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from imapjmap.jmap.errors import SetError, SetErrorType
from imapjmap.jmap.wire import Json
from imapjmap.mime.build_headers import BadProperty, Field, header_spec, render
from imapjmap.mime.build_parts import TYPE_RE, PartSpec, assemble, parse_body_values, parse_part
from imapjmap.mime.codec import clean
from imapjmap.mime.encode import encode_body, fold, param_chunks, rfc5322_date
from imapjmap.mime.headers import raw_headers, select_header
from imapjmap.mime.tree import Params, assemble_params, split_params

__all__ = ["BlobLookup", "build_message", "referenced_blob_ids"]

BlobLookup = Callable[[str], tuple[bytes, str] | None]
"""blobId → (octets, media type), or None when there is no such blob."""

CALLER_PROPERTIES: Final = ("mailboxIds", "keywords", "receivedAt")
SERVER_SET: Final = ("id", "blobId", "threadId", "size", "hasAttachment", "preview")
_BODY: Final = ("bodyStructure", "bodyValues", "textBody", "htmlBody", "attachments")
_LISTS: Final = ("textBody", "htmlBody", "attachments")
_DOMAIN: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_NEWLINES: Final = re.compile(r"\r\n|\r|\n")
_MAX_LOCATION_LINE: Final = 76
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 2045 token


def _token() -> str:
    return secrets.token_hex(12)


def build_message(
    obj: Mapping[str, Json],
    blob_bytes: BlobLookup,
    *,
    now: dt.datetime | None = None,
    hostname: str = "localhost",
    token: Callable[[], str] = _token,
) -> bytes:
    """The message an Email/set create object describes.

    Args:
        obj: the create object as the client sent it (``#creationId`` references in
            ``mailboxIds`` are the caller's business).
        blob_bytes: the content and type of a blob, or None when it does not exist.
        now: the time for a missing ``Date`` (default: the current UTC time).
        hostname: the Message-ID domain when the From address gives none.
        token: random text for Message-IDs and MIME boundaries (tests pin it).

    Raises:
        SetError: ``invalidProperties`` (with ``properties``) for a broken create rule,
            ``blobNotFound`` (with ``notFound``) for blobs that do not exist.
    """
    try:
        top, top_keys = _top_headers(obj)
        values = parse_body_values(obj.get("bodyValues"))
        root = _body(obj, values)
        _check_root(root, top_keys)
    except BadProperty as exc:
        raise SetError(SetErrorType.INVALID_PROPERTIES, exc.description, exc.paths) from None
    blobs = _resolve(root, blob_bytes)
    writer = _Writer(blobs, token)
    head = b"".join(f.octets for f in top)
    keys = {f.key for f in top} | {f.key for f in root.fields}  # fields really written
    if "date" not in keys:
        moment = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        head += fold("Date", [" " + rfc5322_date(moment)])
    if "message-id" not in keys:
        head += fold("Message-ID", [f" <{token()}@{_domain(head, hostname)}>"])
    if "mime-version" not in keys:
        head += b"MIME-Version: 1.0\r\n"
    part_head, body = writer.entity(root)
    return head + part_head + b"\r\n" + body


# --- checks ----------------------------------------------------------------------------------


def _top_headers(obj: Mapping[str, Json]) -> tuple[list[Field], dict[str, str]]:
    """The top-level header fields, and which property named each header (lower case)."""
    fields: list[Field] = []
    keys: dict[str, str] = {}
    for prop, value in obj.items():
        if prop in CALLER_PROPERTIES or prop in _BODY:
            continue
        if prop in SERVER_SET:
            raise BadProperty(f"{prop} is set by the server", prop)
        if prop == "headers":
            raise BadProperty("headers must not be given; use header:* properties", prop)
        spec = header_spec(prop)
        if spec is None:
            raise BadProperty(f"unknown Email property {prop[:40]!r}", prop)
        if spec.key.startswith("content-"):
            raise BadProperty("Content-* header fields belong to body parts", prop)
        if spec.key in keys:
            raise BadProperty("two properties name one header field", keys[spec.key], prop)
        keys[spec.key] = prop
        fields.extend(render(spec, value))
    return fields, keys


def _body(obj: Mapping[str, Json], values: Mapping[str, str]) -> PartSpec:
    if obj.get("bodyStructure") is not None:
        given = [p for p in _LISTS if obj.get(p) is not None]
        if given:
            raise BadProperty(
                "bodyStructure excludes textBody, htmlBody and attachments", "bodyStructure", *given
            )
        return parse_part(obj["bodyStructure"], "bodyStructure", values)
    return assemble(obj.get("textBody"), obj.get("htmlBody"), obj.get("attachments"), values)


def _check_root(root: PartSpec, top_keys: Mapping[str, str]) -> None:
    """The root part's header fields are message header fields: none may repeat a header
    the top level names (§4.6)."""
    for key, prop in root.keys.items():
        if key in top_keys:
            raise BadProperty(
                "the body's root part repeats a top-level header field",
                top_keys[key],
                f"{root.path}/{prop}" if root.path else prop,
            )


def _walk(part: PartSpec) -> Iterator[PartSpec]:
    yield part
    for child in part.sub_parts:
        yield from _walk(child)


def _resolve(root: PartSpec, blob_bytes: BlobLookup) -> dict[str, tuple[bytes, str]]:
    found: dict[str, tuple[bytes, str]] = {}
    missing: list[str] = []
    for part in _walk(root):
        blob_id = part.blob_id
        if blob_id is None or blob_id in found or blob_id in missing:
            continue
        blob = blob_bytes(blob_id)
        if blob is None:
            missing.append(blob_id)
        else:
            found[blob_id] = blob
    if missing:
        raise SetError(SetErrorType.BLOB_NOT_FOUND, "no such blob", notFound=missing)
    return found


def referenced_blob_ids(obj: Mapping[str, Json]) -> list[str]:
    """Every ``blobId`` string the body parts of a create object name, in order, without
    repeats; best effort on objects that have not been checked (for prefetching)."""
    out: dict[str, None] = {}

    def visit(part: Json, depth: int) -> None:
        if not isinstance(part, dict) or depth > 64:
            return
        if isinstance(part.get("blobId"), str):
            out.setdefault(part["blobId"], None)
        for child in part.get("subParts") or []:
            visit(child, depth + 1)

    visit(obj.get("bodyStructure"), 0)
    for prop in _LISTS:
        items = obj.get(prop)
        for item in items if isinstance(items, list) else []:
            visit(item, 0)
    return list(out)


def _domain(head: bytes, hostname: str) -> str:
    """The domain of the first From address, else ``hostname`` (else ``localhost``)."""
    from_ = select_header(raw_headers(head), "From", "asAddresses", False) or []
    candidates = [str(a["email"]).rpartition("@")[2] for a in from_[:1] if "@" in a["email"]]
    for candidate in [*candidates, hostname]:
        if _DOMAIN.fullmatch(candidate):
            return candidate.lower()
    return "localhost"


# --- writing ---------------------------------------------------------------------------------


def _raw_param(key: str, value: str) -> list[str]:
    """A parameter the client wrote in a header:Content-* property, kept as written."""
    if _TOKEN.fullmatch(value):
        return [f" {key}={value}"]
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return [f' {key}="{escaped}"']


def _params_field(name: str, main: str, params: list[list[str]]) -> bytes:
    chunks = [" " + main]
    for param in params:
        chunks[-1] += ";"
        chunks.extend(param)
    return fold(name, chunks)


def _kept(params: Params, replaced: set[str]) -> list[list[str]]:
    return [_raw_param(k, v) for k, v in params if k.split("*", 1)[0] not in replaced]


class _Writer:
    """Writes entities; holds the resolved blobs and the token source for boundaries."""

    def __init__(self, blobs: Mapping[str, tuple[bytes, str]], token: Callable[[], str]) -> None:
        self.blobs = blobs
        self.token = token

    def entity(self, part: PartSpec) -> tuple[bytes, bytes]:
        """(header fields, body) of one part; the caller puts the empty line between."""
        if part.is_multipart:
            return self._multipart(part)
        return self._leaf(part)

    def _boundary(self, children: list[bytes]) -> str:
        boundary = "=_" + self.token()
        attempt = 0
        while any(b"--" + boundary.encode() in child for child in children):
            attempt += 1
            boundary = f"=_{self.token()}_{attempt}"
        return boundary

    def _multipart(self, part: PartSpec) -> tuple[bytes, bytes]:
        children = [b"%s\r\n%s" % self.entity(child) for child in part.sub_parts]
        boundary = self._boundary(children)
        delimiter = b"--" + boundary.encode()
        body = b"".join(delimiter + b"\r\n" + child + b"\r\n" for child in children)
        body += delimiter + b"--\r\n"
        params = [param_chunks("boundary", boundary), *_kept(part.type_params, {"boundary"})]
        head = _params_field("Content-Type", part.type or "multipart/mixed", params)
        return head + self._mime_fields(part), body

    def _content(self, part: PartSpec) -> tuple[bytes, str, str | None]:
        """(content octets, type, charset) of a leaf."""
        if part.text is not None:
            data = _NEWLINES.sub("\r\n", clean(part.text)).encode("utf-8")
            type_ = part.type or "text/plain"
            charset = (
                ("us-ascii" if data.isascii() else "utf-8") if type_.startswith("text/") else None
            )
            return data, type_, charset
        assert part.blob_id is not None
        data, blob_type = self.blobs[part.blob_id]
        main, params = split_params(blob_type or "")
        type_ = part.type or (main if TYPE_RE.fullmatch(main) else "application/octet-stream")
        charset = part.charset
        if charset is None and part.type is None and type_.startswith("text/"):
            charset = assemble_params(params).get("charset")
        return data, type_, charset

    def _leaf(self, part: PartSpec) -> tuple[bytes, bytes]:
        data, type_, charset = self._content(part)
        encoding, body = encode_body(data, type_)
        params: list[list[str]] = []
        replaced = {"boundary"}
        if charset:
            params.append(param_chunks("charset", charset))
            replaced.add("charset")
        if part.name:
            params.append(param_chunks("name", part.name))
            replaced.add("name")
        params.extend(_kept(part.type_params, replaced))
        head = _params_field("Content-Type", type_, params)
        head += fold("Content-Transfer-Encoding", [" " + encoding])
        return head + self._mime_fields(part), body

    def _mime_fields(self, part: PartSpec) -> bytes:
        """Content-Disposition/-ID/-Language/-Location, then the part's header:* fields."""
        out = b""
        if part.disposition is not None:
            params = [param_chunks("filename", part.name)] if part.name else []
            params.extend(_kept(part.disposition_params, {"filename"} if part.name else set()))
            out += _params_field("Content-Disposition", part.disposition, params)
        if part.cid is not None:
            out += fold("Content-ID", [f" <{part.cid}>"])
        if part.language is not None:
            chunks = [f" {tag}," for tag in part.language]
            chunks[-1] = chunks[-1][:-1]
            out += fold("Content-Language", chunks)
        if part.location is not None:
            loc = part.location
            pieces = [
                loc[i : i + _MAX_LOCATION_LINE] for i in range(0, len(loc), _MAX_LOCATION_LINE)
            ]
            out += fold("Content-Location", [" " + "\r\n ".join(pieces)])
        return out + b"".join(f.octets for f in part.fields)
