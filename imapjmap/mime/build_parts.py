"""EmailBodyPart objects of an Email/set create → a checked tree of :class:`PartSpec`.

Covers the body rules of RFC 8621 §4.6 (CHECKLIST 12.8) and the shape of the tree that
``textBody``/``htmlBody``/``attachments`` stand for (the inverse of the §4.1.4 algorithm):

- ``htmlBody`` plus the attachments that carry a ``cid`` and are not
  ``disposition: attachment`` form ``multipart/related`` (html first);
- ``textBody`` and that html block form ``multipart/alternative`` (text first);
- the other attachments follow the body in ``multipart/mixed``.

An attachment without a disposition gets ``attachment`` (``inline`` when it joins the
related block), so that the parse algorithm puts it back into ``attachments``: an
undisposed image or text part after the body would otherwise be read as part of the body.

Property paths in errors are JSON-Pointer-like: ``bodyStructure/subParts/1/partId``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from imapjmap.jmap.wire import Json
from imapjmap.mime.build_headers import BadProperty, Field, header_spec, render, text_value
from imapjmap.mime.email import BODY_PART_PROPERTIES
from imapjmap.mime.headers import unfold
from imapjmap.mime.tree import MAX_DEPTH, Params, split_params

__all__ = ["PartSpec", "assemble", "parse_body_values", "parse_part"]

TYPE_RE: Final = re.compile(r"[^\s/()<>@,;:\\\"\[\]?=]+/[^\s/()<>@,;:\\\"\[\]?=]+")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CID: Final = re.compile(r"[!-;=?-~]+")  # printable ASCII but < > and space
_LANGUAGE: Final = re.compile(r"[A-Za-z0-9*-]+")
_LOCATION: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")

# A typed EmailBodyPart property and the header field it is written to (§4.6: no two
# properties may represent the same header field).  ``name`` is a parameter merged into
# whichever of Content-Disposition / Content-Type is written, so it collides with neither.
_TYPED_HEADER: Final = {
    "type": "content-type",
    "charset": "content-type",
    "disposition": "content-disposition",
    "cid": "content-id",
    "language": "content-language",
    "location": "content-location",
}
_PARSED_HEADERS: Final = ("content-type", "content-disposition")


@dataclass(slots=True, eq=False)
class PartSpec:
    """One checked body part.  ``type`` None: a blob part that takes its blob's type."""

    path: str
    type: str | None = None
    type_params: Params = field(default_factory=list)
    charset: str | None = None
    disposition: str | None = None
    disposition_params: Params = field(default_factory=list)
    name: str | None = None
    cid: str | None = None
    language: list[str] | None = None
    location: str | None = None
    fields: list[Field] = field(default_factory=list)  # header:* fields, client order
    keys: dict[str, str] = field(default_factory=dict)  # header it defines → property
    text: str | None = None  # the bodyValues value of a partId part
    blob_id: str | None = None
    sub_parts: list[PartSpec] = field(default_factory=list)

    @property
    def is_multipart(self) -> bool:
        return self.type is not None and self.type.startswith("multipart/")

    @property
    def has_cid(self) -> bool:
        return self.cid is not None or "content-id" in self.keys


def parse_body_values(raw: Json) -> dict[str, str]:
    """``bodyValues``: partId → text (§4.6: isEncodingProblem/isTruncated false or absent)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadProperty("bodyValues must be an object", "bodyValues")
    values: dict[str, str] = {}
    for part_id, body_value in raw.items():
        path = f"bodyValues/{part_id}"
        if not isinstance(body_value, dict):
            raise BadProperty("an EmailBodyValue must be an object", path)
        unknown = [k for k in body_value if k not in ("value", "isEncodingProblem", "isTruncated")]
        if unknown:
            raise BadProperty(
                "unknown EmailBodyValue properties", *(f"{path}/{k}" for k in unknown)
            )
        for flag in ("isEncodingProblem", "isTruncated"):
            if body_value.get(flag, False) is not False:
                raise BadProperty(f"{flag} must be false or omitted", f"{path}/{flag}")
        if not isinstance(body_value.get("value"), str):
            raise BadProperty("an EmailBodyValue value must be a string", f"{path}/value")
        values[part_id] = body_value["value"]
    return values


def _parsed_header(path: str, prop: str, form: str, all_: bool, value: Json) -> tuple[str, Params]:
    """A ``header:Content-Type`` / ``header:Content-Disposition`` value as (main, params)."""
    if form not in ("asRaw", "asText") or all_:
        raise BadProperty("this header takes a single raw or text value", f"{path}/{prop}")
    if not isinstance(value, str):
        raise BadProperty("a header value must be a string", f"{path}/{prop}")
    main, params = split_params(unfold(value))
    return main, params


@dataclass(slots=True)
class _Headers:
    fields: list[Field] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # lower-case name → property
    parsed: dict[str, tuple[str, Params]] = field(default_factory=dict)


def _header_props(raw: Mapping[str, Json], path: str) -> _Headers:
    out = _Headers()
    for prop, value in raw.items():
        try:
            spec = header_spec(prop) if prop.startswith("header:") else None
        except BadProperty as exc:
            raise BadProperty(exc.description, f"{path}/{prop}") from None
        if spec is None:
            continue
        if spec.key in out.keys:
            raise BadProperty(
                "two properties name one header", *_paths(path, out.keys[spec.key], prop)
            )
        out.keys[spec.key] = prop
        if spec.key == "content-transfer-encoding":
            raise BadProperty("Content-Transfer-Encoding must not be given", f"{path}/{prop}")
        if spec.key in _PARSED_HEADERS:
            if value is not None:
                out.parsed[spec.key] = _parsed_header(path, prop, spec.form, spec.all, value)
            continue
        try:
            out.fields.extend(render(spec, value))
        except BadProperty as exc:
            raise BadProperty(exc.description, f"{path}/{prop}") from None
    return out


def _paths(path: str, *props: str) -> list[str]:
    return [f"{path}/{p}" if path else p for p in props]


def _check_keys(raw: Mapping[str, Json], path: str, headers: _Headers) -> None:
    for key in raw:
        if key == "headers":
            raise BadProperty(
                "headers must not be given; use header:* properties", f"{path}/headers"
            )
        if not key.startswith("header:") and key not in BODY_PART_PROPERTIES:
            raise BadProperty("unknown EmailBodyPart property", f"{path}/{key}")
        header = _TYPED_HEADER.get(key)
        if header is not None and raw[key] is not None and header in headers.keys:
            raise BadProperty(
                "two properties name one header", *_paths(path, key, headers.keys[header])
            )


def _string(
    raw: Mapping[str, Json], key: str, path: str, pattern: re.Pattern[str] | None
) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        raise BadProperty(f"{key} is not valid", f"{path}/{key}")
    return value


def _typed(raw: Mapping[str, Json], path: str, spec: PartSpec, headers: _Headers) -> None:
    type_ = _string(raw, "type", path, TYPE_RE)
    if type_ is not None:
        spec.type = type_.lower()
    elif "content-type" in headers.parsed:
        main, spec.type_params = headers.parsed["content-type"]
        if not TYPE_RE.fullmatch(main):
            raise BadProperty("Content-Type is not valid", f"{path}/{headers.keys['content-type']}")
        spec.type = main
    spec.charset = _string(raw, "charset", path, _TOKEN)
    disposition = _string(raw, "disposition", path, _TOKEN)
    if disposition is not None:
        spec.disposition = disposition.lower()
    elif "content-disposition" in headers.parsed:
        main, spec.disposition_params = headers.parsed["content-disposition"]
        if not _TOKEN.fullmatch(main):
            raise BadProperty(
                "Content-Disposition is not valid", f"{path}/{headers.keys['content-disposition']}"
            )
        spec.disposition = main
    name = _string(raw, "name", path, None)
    spec.name = (text_value(name, phrase=True) or None) if name is not None else None
    spec.cid = _string(raw, "cid", path, _CID)
    spec.location = _string(raw, "location", path, _LOCATION)
    language = raw.get("language")
    if language is not None:
        if (
            not isinstance(language, list)
            or not language
            or not all(isinstance(t, str) and _LANGUAGE.fullmatch(t) for t in language)
        ):
            raise BadProperty("language is a non-empty list of language tags", f"{path}/language")
        spec.language = list(language)


def _content(
    raw: Mapping[str, Json],
    path: str,
    spec: PartSpec,
    values: Mapping[str, str],
    depth: int,
    default_type: str | None,
) -> None:
    part_id, blob_id, sub_parts = raw.get("partId"), raw.get("blobId"), raw.get("subParts")
    if part_id is not None and blob_id is not None:
        raise BadProperty(
            "a part has a partId or a blobId, not both", f"{path}/partId", f"{path}/blobId"
        )
    if sub_parts is not None or spec.is_multipart:
        _multipart(raw, path, spec, values, depth)
        return
    if part_id is not None:
        if not isinstance(part_id, str) or part_id not in values:
            raise BadProperty("partId must name an entry of bodyValues", f"{path}/partId")
        for key in ("charset", "size"):
            if raw.get(key) is not None:
                raise BadProperty(f"{key} must be omitted with a partId", f"{path}/{key}")
        spec.text = values[part_id]
        spec.type = spec.type or default_type or "text/plain"
    elif blob_id is not None:
        if not isinstance(blob_id, str):
            raise BadProperty("blobId must be a string", f"{path}/blobId")
        spec.blob_id = blob_id
        spec.type = spec.type or default_type
    else:
        raise BadProperty("a part needs a partId, a blobId or subParts", path)


def _multipart(
    raw: Mapping[str, Json], path: str, spec: PartSpec, values: Mapping[str, str], depth: int
) -> None:
    sub_parts = raw.get("subParts")
    for key in ("partId", "blobId", "charset"):
        if raw.get(key) is not None:
            raise BadProperty(f"a multipart part has no {key}", f"{path}/{key}")
    if spec.type is None:
        spec.type = "multipart/mixed"
    if not spec.is_multipart:
        raise BadProperty("only a multipart/* part has subParts", f"{path}/subParts")
    if not isinstance(sub_parts, list) or not sub_parts:
        raise BadProperty("a multipart part needs a non-empty subParts list", f"{path}/subParts")
    if depth >= MAX_DEPTH:
        raise BadProperty("body parts are nested too deeply", f"{path}/subParts")
    spec.sub_parts = [
        parse_part(child, f"{path}/subParts/{i}", values, depth + 1)
        for i, child in enumerate(sub_parts)
    ]


def parse_part(
    raw: Json,
    path: str,
    values: Mapping[str, str],
    depth: int = 0,
    default_type: str | None = None,
) -> PartSpec:
    """One EmailBodyPart of a create, checked (§4.6), with its subParts.

    A part without a type is ``default_type`` (given for textBody/htmlBody); otherwise a
    ``partId`` part is text/plain (as in MIME) and a ``blobId`` part takes its blob's type.

    Raises:
        BadProperty: a rule is broken; the paths name the offending properties.
    """
    if not isinstance(raw, dict):
        raise BadProperty("an EmailBodyPart must be an object", path)
    headers = _header_props(raw, path)
    _check_keys(raw, path, headers)
    spec = PartSpec(path, fields=headers.fields, keys=dict(headers.keys))
    for prop, header in _TYPED_HEADER.items():
        if raw.get(prop) is not None:
            spec.keys.setdefault(header, prop)
    _typed(raw, path, spec, headers)
    _content(raw, path, spec, values, depth, default_type)
    return spec


# --- textBody / htmlBody / attachments ----------------------------------------------------------


def _single(raw: Json, prop: str, type_: str, values: Mapping[str, str]) -> PartSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 1:
        raise BadProperty(f"{prop} must hold exactly one body part", prop)
    part = parse_part(raw[0], f"{prop}/0", values, default_type=type_)
    if part.type != type_:
        raise BadProperty(f"{prop} must hold one {type_} part", f"{prop}/0/type")
    return part


def _multipart_of(subtype: str, children: list[PartSpec]) -> PartSpec:
    return PartSpec("", type=f"multipart/{subtype}", sub_parts=children)


def assemble(
    text_body: Json, html_body: Json, attachments: Json, values: Mapping[str, str]
) -> PartSpec:
    """The body tree that ``textBody``/``htmlBody``/``attachments`` describe (see the
    module docstring); an empty text/plain part when all three are absent."""
    text = _single(text_body, "textBody", "text/plain", values)
    html = _single(html_body, "htmlBody", "text/html", values)
    if attachments is not None and not isinstance(attachments, list):
        raise BadProperty("attachments must be a list of body parts", "attachments")
    parts = [parse_part(p, f"attachments/{i}", values) for i, p in enumerate(attachments or [])]
    related = [
        p
        for p in parts
        if html is not None and p.has_cid and p.disposition != "attachment" and not p.is_multipart
    ]
    for part in parts:
        if (
            part.disposition is None
            and not part.is_multipart
            and "content-disposition" not in part.keys
        ):
            part.disposition = "inline" if part in related else "attachment"
            part.keys["content-disposition"] = "disposition"
    html_block = html
    if html is not None and related:
        html_block = _multipart_of("related", [html, *related])
    body = text if html_block is None else html_block
    if text is not None and html_block is not None:
        body = _multipart_of("alternative", [text, html_block])
    rest = [p for p in parts if p not in related]
    if rest:
        return _multipart_of("mixed", rest if body is None else [body, *rest])
    return PartSpec("", type="text/plain", text="") if body is None else body
