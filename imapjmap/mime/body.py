"""Body properties of RFC 8621 §4.1.4: EmailBodyPart, the body lists, bodyValues, preview.

The part tree comes from :mod:`imapjmap.mime.tree` (partId = IMAP section number; see
there).  ``blobId`` of a leaf is ``f"{blob_prefix}_{partId}"``: the caller picks a prefix that
names the message, and :func:`part_content` serves the blob back from the raw message.
Note that a nested partId such as ``2.1`` contains ``.``, which is not an RFC 8620 Id
character: a caller exposing these blobIds must map the dot (e.g. to ``-``).

Decisions where the RFC leaves room:

- ``size`` of a multipart part (it has no blob) is the length of its raw body.
- ``charset`` is the parameter as written (trimmed, unquoted); ``us-ascii`` for text/*
  without one; null for other types.
- ``disposition`` is lower case (dispositions are case-insensitive, RFC 2183 §2, and the
  §4.1.4 algorithm compares it with ``"attachment"``).
- ``hasAttachment`` is the SHOULD rule only: some part in ``attachments`` whose disposition
  is not ``inline``.  The MAY (ignore images referenced from the HTML) is not applied, so
  the answer can also be computed from an IMAP BODYSTRUCTURE (see
  :mod:`imapjmap.mime.envelope`).
- ``preview`` joins the text of the ``textBody`` text parts in order (HTML converted to text
  when that is all there is), collapses white space and cuts at 256 characters.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, Self, TypeVar

from imapjmap.jmap.wire import Json
from imapjmap.mime.codec import decode_text
from imapjmap.mime.headers import (
    decode_raw,
    header_property,
    select_header,
    unfold,
)
from imapjmap.mime.tree import Part, find_part, parse_message

__all__ = [
    "BodyNode",
    "ParsedBody",
    "analyse",
    "body_values",
    "decompose",
    "has_attachment",
    "html_to_text",
    "parse_structure",
    "part_content",
    "part_json",
    "part_text",
    "preview",
    "truncate",
]

PREVIEW_LENGTH: Final = 256
PREVIEW_PARTS: Final = 64
"""The preview looks at no more than this many textBody parts (hostile messages have
thousands of empty ones)."""


# --- the §4.1.4 algorithm ------------------------------------------------------------------


class BodyNode(Protocol):
    """What the decomposition needs to know about a part (a Part or a BODYSTRUCTURE view)."""

    @property
    def type(self) -> str: ...

    @property
    def disposition(self) -> str | None: ...

    @property
    def name(self) -> str | None: ...

    @property
    def sub_parts(self) -> Sequence[Self]: ...


N = TypeVar("N", bound=BodyNode)


def _is_inline_media_type(type_: str) -> bool:
    return type_.startswith(("image/", "audio/", "video/"))


def parse_structure(  # noqa: C901 - a literal port; keep it shaped like the RFC text
    parts: Sequence[N],
    multipart_type: str,
    in_alternative: bool,
    html_body: list[N] | None,
    text_body: list[N] | None,
    attachments: list[N],
) -> None:
    """RFC 8621 §4.1.4 ``parseStructure``, ported line by line from the JavaScript.

    JavaScript truthiness of an array is "not null" (an empty array is true), so every
    ``if (textBody)`` is ``is not None`` here.  Assigning null to ``textBody``/``htmlBody``
    only affects this call's locals, exactly as in the original.  One deviation: the
    original would throw pushing to a null list when a ``multipart/alternative`` is nested
    where one list was already dropped; that push is skipped.
    """
    # For multipartType == alternative
    text_length = len(text_body) if text_body is not None else -1
    html_length = len(html_body) if html_body is not None else -1

    for i, part in enumerate(parts):
        is_multipart = part.type.startswith("multipart/")
        # Is this a body part rather than an attachment
        is_inline = (
            part.disposition != "attachment"
            # Must be one of the allowed body types
            and (
                part.type == "text/plain"
                or part.type == "text/html"
                or _is_inline_media_type(part.type)
            )
            # If multipart/related, only the first part can be inline
            # If a text part with a filename, and not the first item
            # in the multipart, assume it is an attachment
            and (
                i == 0
                or (
                    multipart_type != "related"
                    and (_is_inline_media_type(part.type) or not part.name)
                )
            )
        )

        if is_multipart:
            sub_multi_type = part.type.split("/", 1)[1]
            parse_structure(
                part.sub_parts,
                sub_multi_type,
                in_alternative or sub_multi_type == "alternative",
                html_body,
                text_body,
                attachments,
            )
        elif is_inline:
            if multipart_type == "alternative":
                if part.type == "text/plain":
                    if text_body is not None:
                        text_body.append(part)
                elif part.type == "text/html":
                    if html_body is not None:
                        html_body.append(part)
                else:
                    attachments.append(part)
                continue
            elif in_alternative:
                if part.type == "text/plain":
                    html_body = None
                if part.type == "text/html":
                    text_body = None
            if text_body is not None:
                text_body.append(part)
            if html_body is not None:
                html_body.append(part)
            if (text_body is None or html_body is None) and _is_inline_media_type(part.type):
                attachments.append(part)
        else:
            attachments.append(part)

    if multipart_type == "alternative" and text_body is not None and html_body is not None:
        # Found HTML part only
        if text_length == len(text_body) and html_length != len(html_body):
            text_body.extend(html_body[html_length:])
        # Found plaintext part only
        if html_length == len(html_body) and text_length != len(text_body):
            html_body.extend(text_body[text_length:])


def decompose(root: N) -> tuple[list[N], list[N], list[N]]:
    """(textBody, htmlBody, attachments) of a bodyStructure, per the RFC's usage lines."""
    html_body: list[N] = []
    text_body: list[N] = []
    attachments: list[N] = []
    parse_structure([root], "mixed", False, html_body, text_body, attachments)
    return text_body, html_body, attachments


def has_attachment(attachments: Sequence[BodyNode]) -> bool:
    """§4.1.4 SHOULD: an item of ``attachments`` without ``Content-Disposition: inline``."""
    return any(part.disposition != "inline" for part in attachments)


@dataclass(slots=True)
class ParsedBody:
    """A parsed message body and its three part lists."""

    root: Part
    text_body: list[Part]
    html_body: list[Part]
    attachments: list[Part]


def analyse(raw: bytes) -> ParsedBody:
    """Parse ``raw`` into its part tree and decompose it (never raises)."""
    root = parse_message(raw)
    return ParsedBody(root, *decompose(root))


# --- EmailBodyPart -------------------------------------------------------------------------


def _first(part: Part, name: bytes) -> str | None:
    values = part.field_values(name)
    return decode_raw(values[0]) if values else None


def _cid(part: Part) -> str | None:
    value = _first(part, b"content-id")
    if value is None:
        return None
    text = re.sub(r"\([^()]*\)", "", unfold(value)).strip()
    if text.startswith("<"):
        text = text[1:]
    if text.endswith(">"):
        text = text[:-1]
    return text.strip() or None


def _language(part: Part) -> list[str] | None:
    value = _first(part, b"content-language")
    if value is None:
        return None
    text = re.sub(r"\([^()]*\)", "", unfold(value))
    tags = [tag.strip() for tag in text.split(",") if tag.strip()]
    return tags or None


def _location(part: Part) -> str | None:
    value = _first(part, b"content-location")
    if value is None:
        return None
    # RFC 2557 §4.4.1: a folded URI is unfolded by removing the folding white space too.
    text = re.sub(r"\r?\n[ \t]*", "", value)
    return text.strip() or None


def _headers(part: Part) -> list[tuple[str, str]]:
    return [(name.decode("ascii"), decode_raw(value)) for name, value in part.fields]


def _size(part: Part) -> int:
    return len(part.body) if part.is_multipart else len(part.content()[0])


_PART_GETTERS: Final[dict[str, Callable[[Part], Json]]] = {
    "partId": lambda part: part.part_id,
    "size": _size,
    "headers": lambda part: [{"name": n, "value": v} for n, v in _headers(part)],
    "name": lambda part: part.name,
    "type": lambda part: part.type,
    "charset": lambda part: part.charset,
    "disposition": lambda part: part.disposition,
    "cid": _cid,
    "language": _language,
    "location": _location,
}


def part_json(
    part: Part, properties: Sequence[str], blob_prefix: str, *, structure: bool = False
) -> dict[str, Json]:
    """One EmailBodyPart with exactly ``properties`` (validated by the caller).

    ``structure``: the part is (in) ``bodyStructure``, "the full MIME structure" (RFC 8621
    §4.1.4), so a multipart part carries ``subParts`` even when ``properties`` does not list
    it: the default ``bodyProperties`` leave it out, and clients walk the tree anyway.
    """
    own = properties
    if structure and part.is_multipart and "subParts" not in properties:
        own = [*properties, "subParts"]
    out: dict[str, Json] = {}
    for prop in own:
        getter = _PART_GETTERS.get(prop)
        if getter is not None:
            out[prop] = getter(part)
        elif prop == "blobId":
            out[prop] = None if part.is_multipart else f"{blob_prefix}_{part.part_id}"
        elif prop == "subParts":
            out[prop] = (
                [
                    part_json(child, properties, blob_prefix, structure=structure)
                    for child in part.sub_parts
                ]
                if part.is_multipart
                else None
            )
        elif prop.startswith("header:"):
            name, form, all_ = header_property(prop)
            out[prop] = select_header(_headers(part), name, form, all_)
    return out


# --- bodyValues --------------------------------------------------------------------------


def part_text(part: Part) -> tuple[str, bool]:
    """The part's content as text with CRLF → LF, and whether decoding had a problem."""
    octets, transfer_problem = part.content()
    text, charset_problem = decode_text(octets, part.charset)
    return text.replace("\r\n", "\n"), transfer_problem or charset_problem


def truncate(text: str, limit: int, *, is_html: bool = False) -> tuple[str, bool]:
    """Cut ``text`` to at most ``limit`` UTF-8 octets (0: no limit) on a character boundary.

    For HTML the cut is moved back before an unfinished tag (§4.2 SHOULD).

    Returns:
        The text and whether it was cut.
    """
    if limit <= 0 or len(text) * 4 <= limit:
        return text, False
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text, False
    cut = encoded[:limit].decode("utf-8", "ignore")  # drops only a split last character
    if is_html:
        open_tag = cut.rfind("<")
        if open_tag > cut.rfind(">"):
            cut = cut[:open_tag]
    return cut, True


def body_values(
    body: ParsedBody,
    *,
    fetch_text: bool,
    fetch_html: bool,
    fetch_all: bool,
    max_bytes: int,
) -> dict[str, Json]:
    """The ``bodyValues`` map (§4.1.4, §4.2): partId → EmailBodyValue for the text/* parts
    selected by the fetch flags, in bodyStructure order."""
    wanted: set[int] = set()
    if fetch_all:
        wanted.update(id(p) for p in body.root.walk() if not p.is_multipart)
    if fetch_text:
        wanted.update(id(p) for p in body.text_body)
    if fetch_html:
        wanted.update(id(p) for p in body.html_body)
    values: dict[str, Json] = {}
    for part in body.root.walk():
        if id(part) not in wanted or not part.type.startswith("text/") or part.part_id is None:
            continue
        text, problem = part_text(part)
        value, truncated = truncate(text, max_bytes, is_html=part.type == "text/html")
        values[part.part_id] = {
            "value": value,
            "isEncodingProblem": problem,
            "isTruncated": truncated,
        }
    return values


# --- preview ----------------------------------------------------------------------------------

_TAG: Final = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)")
_SKIPPED: Final = frozenset({"head", "script", "style", "title", "template"})
_BREAKING: Final = frozenset(
    (
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt"),
        *("footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li"),
        *("main", "nav", "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot"),
        *("th", "thead", "tr", "ul"),
    )
)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document, for the preview: tags and comments removed,
    ``<head>``/``<script>``/``<style>`` skipped, block tags become spaces, entities decoded.
    A linear scan (no backtracking regex), so hostile markup cannot make it slow."""
    lower = markup.lower()
    out: list[str] = []
    closing: dict[str, int] = {}  # name → where its next "</name" is (-1: none left)
    pos = 0
    while pos < len(markup):
        start = markup.find("<", pos)
        if start < 0:
            out.append(markup[pos:])
            break
        out.append(markup[pos:start])
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            pos = len(markup) if end < 0 else end + 3
            continue
        tag = _TAG.match(markup, start)
        if tag is None and not markup.startswith(("<!", "<?"), start):
            out.append("<")  # a literal "<" in text
            pos = start + 1
            continue
        end = markup.find(">", start)
        if end < 0:
            break
        pos = end + 1
        name = tag.group(2).lower() if tag is not None else ""
        if tag is not None and not tag.group(1) and name in _SKIPPED:
            close = closing.get(name)
            if close is None or 0 <= close < pos:
                close = closing[name] = lower.find("</" + name, pos)
            close_end = lower.find(">", close) if close >= 0 else -1
            if close_end >= 0:
                pos = close_end + 1
        out.append(" " if name in _BREAKING or name in _SKIPPED else "")
    return html.unescape("".join(out))


def preview(text_body: Sequence[Part]) -> str:
    """A plain-text fragment of the body, at most 256 characters (§4.1.4 MUST)."""
    pieces: list[str] = []
    length = 0
    for part in text_body[:PREVIEW_PARTS]:
        if part.type not in ("text/plain", "text/html"):
            continue
        text, _problem = part_text(part)
        if part.type == "text/html":
            text = html_to_text(text[:262_144])
        collapsed = " ".join(text[:65_536].split())
        if collapsed:
            pieces.append(collapsed)
            length += len(collapsed) + 1
        if length > PREVIEW_LENGTH:
            break
    return " ".join(pieces)[:PREVIEW_LENGTH].rstrip()


# --- blobs -----------------------------------------------------------------------------------


def part_content(raw: bytes, part_id: str) -> tuple[bytes, str, str | None]:
    """The decoded content of one part, for blob download.

    Returns:
        (octets after Content-Transfer-Encoding decoding, type, name).

    Raises:
        KeyError: the message has no leaf part with that partId.
    """
    part = find_part(parse_message(raw), part_id)
    if part is None:
        raise KeyError(part_id)
    return part.content()[0], part.type, part.name
