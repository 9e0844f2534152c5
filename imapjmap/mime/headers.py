"""Header fields: the raw block and the parsed forms of RFC 8621 §4.1.2-§4.1.3.

The header block is split here, on bytes, rather than by :mod:`email`: both stdlib policies
strip the white space after the colon and may re-fold, but ``asRaw`` is "the raw octets of
the header field value from the first octet following the ... colon, up to but excluding the
header field terminating CRLF" (§4.1.2.1), folding CRLFs included.

Splitting rules (best effort, never raising):

1. The block ends at the first empty line (CRLF or bare LF).  With no empty line the whole
   input is header (as IMAP's ``BODY[HEADER]``).
2. A field is ``name ":" value``; the name is printable ASCII without space (obsolete
   white space before the colon is tolerated, RFC 5322 §4.5).  Lines starting with SP or
   HTAB continue the previous field.
3. If the very first line is not a field the entity has no header at all and its body
   starts there (a MIME part without headers); a first line ``From `` (mbox) is skipped.
   Later lines that are neither fields nor continuations are ignored.

``asRaw`` decodes octets as UTF-8 (RFC 6532), each run that is not UTF-8 becomes U+FFFD,
and NUL octets are dropped (§4.1.2.1 SHOULD/MUST).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Final

from imapjmap.jmap.wire import Json
from imapjmap.mime.addresses import addresses, grouped_addresses
from imapjmap.mime.codec import decode_encoded_words

__all__ = [
    "FORMS",
    "as_date",
    "as_message_ids",
    "as_text",
    "as_urls",
    "decode_raw",
    "form_allowed",
    "header_property",
    "parse_form",
    "raw_headers",
    "select_header",
    "split_header_block",
    "unfold",
]

RawField = tuple[bytes, bytes]
"""One header field: (name octets, raw value octets after the colon, no final CRLF)."""

_NAME: Final = re.compile(rb"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ":"


def _lines(data: bytes, pos: int) -> Iterator[tuple[int, int, int]]:
    """(start, end before the line break, start of the next line) of each line from ``pos``."""
    size = len(data)
    while pos < size:
        newline = data.find(b"\n", pos)
        after = size if newline < 0 else newline + 1
        stop = size if newline < 0 else newline
        if stop > pos and data[stop - 1] == 0x0D:
            stop -= 1
        yield pos, stop, after
        pos = after


def split_header_block(data: bytes, *, top: bool = False) -> tuple[list[RawField], int]:
    """Split an entity into its header fields and the offset where its body starts.

    Args:
        data: a whole message (``top=True``) or one MIME part.
        top: skip a leading mbox ``From `` line.

    Returns:
        The fields in order, and the body offset (``len(data)`` when there is no body).
    """
    fields: list[RawField] = []
    pos = 0
    if top and data.startswith(b"From "):
        newline = data.find(b"\n")
        pos = len(data) if newline < 0 else newline + 1
    first = True
    name = b""
    start = end = -1  # value span of the open field, or -1
    body = len(data)
    for line, stop, after in _lines(data, pos):
        if stop == line:  # the empty line
            body = after
            break
        if data[line] in b" \t":
            if first:
                body = line
                break
            end = stop if start >= 0 else end
        else:
            colon = data.find(b":", line, stop)
            candidate = data[line:colon].rstrip(b" \t") if colon >= 0 else b""
            if start >= 0:
                fields.append((name, data[start:end]))
                start = end = -1
            if _NAME.fullmatch(candidate):
                name, start, end = candidate, colon + 1, stop
            elif first:
                body = line
                break
        first = False
    if start >= 0:
        fields.append((name, data[start:end]))
    return fields, body


def decode_raw(value: bytes) -> str:
    """The ``asRaw`` form of raw value octets: UTF-8, U+FFFD for bad runs, NULs dropped."""
    if b"\0" in value:
        value = value.replace(b"\0", b"")
    if value.isascii():
        return value.decode("ascii")
    return value.decode("utf-8", "replace")


def raw_headers(raw: bytes) -> list[tuple[str, str]]:
    """The message's header fields as (name, asRaw value), in message order.

    The value keeps its leading space and internal folding (no unfolding), without the final
    CRLF.  ``raw`` may be a whole message or only its header block.
    """
    fields, _ = split_header_block(raw, top=True)
    return [(name.decode("ascii"), decode_raw(value)) for name, value in fields]


# --- parsed forms ------------------------------------------------------------------------------

_FOLD: Final = re.compile(r"\r?\n|\r")


def unfold(value: str) -> str:
    """RFC 5322 §2.2.3 unfolding: drop the CRLFs (stray bare CR/LF too), keep the WSP."""
    return _FOLD.sub("", value) if ("\n" in value or "\r" in value) else value


def as_text(raw_value: str) -> str:
    """The ``asText`` form (§4.1.2.2).

    Unfold, trim white space at both ends (the RFC names leading SP; trailing white space is
    never significant in an unstructured field), decode RFC 2047 words that are placed
    legally (see :func:`~imapjmap.mime.codec.decode_encoded_words`), then NFC.
    """
    text = decode_encoded_words(unfold(raw_value).strip(" \t"))
    return unicodedata.normalize("NFC", text).strip(" \t")


def _strip_comments(value: str) -> str:
    """Remove RFC 5322 comments (nested, with quoted-pairs) outside quoted strings."""
    if "(" not in value:
        return value
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
            if not depth:
                out.append(char)
        elif char == "\\" and (quoted or depth):
            escaped = True
            if not depth:
                out.append(char)
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if not depth:
                out.append(" ")
        elif char == '"':
            quoted = not quoted
            out.append(char)
        elif char == "(" and not quoted:
            depth = 1
        else:
            out.append(char)
    return "".join(out)


_ANGLE: Final = re.compile(r"<([^<>]*)>")
_WSP: Final = re.compile(r"\s+")


def as_message_ids(raw_value: str) -> list[str] | None:
    """The ``asMessageIds`` form (§4.1.2.5): each ``<msg-id>`` without CFWS and ``<>``.

    Text outside angle brackets is skipped (RFC 5322 §4.5.4 obsolete In-Reply-To/References
    may hold phrases).  ``null`` when no msg-id is found.
    """
    text = _strip_comments(unfold(raw_value))
    ids = [_WSP.sub("", m.group(1)) for m in _ANGLE.finditer(text)]
    ids = [i for i in ids if i]
    return ids or None


def as_urls(raw_value: str) -> list[str] | None:
    """The ``asURLs`` form (§4.1.2.7, RFC 2369 §2): the ``<url>``s, comments and folding
    white space removed.  ``null`` when there is none (e.g. ``List-Post: NO``)."""
    text = _strip_comments(unfold(raw_value))
    urls = [_WSP.sub("", m.group(1)) for m in _ANGLE.finditer(text)]
    urls = [u for u in urls if u]
    return urls or None


_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_ZONES: Final = {
    "ut": "+00:00",
    "gmt": "+00:00",
    "z": "+00:00",
    "edt": "-04:00",
    "est": "-05:00",
    "cdt": "-05:00",
    "cst": "-06:00",
    "mdt": "-06:00",
    "mst": "-07:00",
    "pdt": "-07:00",
    "pst": "-08:00",
}
_DATE: Final = re.compile(
    r"(?:[a-z]+\s*,?\s*)?(\d{1,2})\s*-?\s*([a-z]+)\.?\s*-?\s*(\d{2,4})\s+"
    r"(\d{1,2})\s*:\s*(\d{1,2})(?:\s*:\s*(\d{1,2}))?(?:\.\d+)?"
    r"\s*(?:([+-])(\d{2})(\d{2})|([a-z]+))?(?:\s.*)?",
    re.IGNORECASE | re.DOTALL,
)
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _zone(match: re.Match[str]) -> str | None:
    sign, hours, minutes, name = match.group(7, 8, 9, 10)
    if sign:
        if int(hours) > 23 or int(minutes) > 59:
            return None
        return f"{sign}{hours}:{minutes}"
    if name is None:
        return "-00:00"
    # RFC 5322 §4.3: military and unknown alphabetic zones mean "-0000" (unknown offset)
    return _ZONES.get(name.lower(), "-00:00")


def as_date(raw_value: str) -> str | None:
    """The ``asDate`` form (§4.1.2.6): an RFC 5322 date-time as an RFC 3339 ``Date``.

    The zone offset is kept (``Date`` is RFC 8620 §1.4 date-time, not a UTCDate), so
    ``Tue, 1 Jul 2003 10:52:37 +0200`` is ``2003-07-01T10:52:37+02:00``.  RFC 5322
    ``-0000`` ("no information about the local zone") is RFC 3339's ``-00:00``, which says
    the same (RFC 3339 §4.3); obsolete military/unknown zones and a missing zone too.
    Obsolete syntax is accepted: two/three-digit years (RFC 5322 §4.3), comments, a missing
    seconds field.  A leap second is clamped to :59.  The day of the week is not checked.
    ``null`` when the value is not a date or names an impossible one.
    """
    text = " ".join(_strip_comments(unfold(raw_value)).split())  # no long runs to backtrack
    match = _DATE.fullmatch(text) if len(text) < 256 else None
    if match is None:
        return None
    day, month_name, year_text, hour, minute, second = match.group(1, 2, 3, 4, 5, 6)
    month = _MONTHS.get(month_name[:3].lower())
    year = int(year_text)
    if len(year_text) == 2:
        year += 2000 if year < 50 else 1900
    elif len(year_text) == 3:
        year += 1900
    zone = _zone(match)
    if month is None or zone is None or not 1 <= int(day) <= _DAYS_IN_MONTH[month - 1]:
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    seconds = min(int(second or 0), 59)
    if (month == 2 and int(day) == 29 and not leap) or int(hour) > 23 or int(minute) > 59:
        return None
    if int(second or 0) > 60:
        return None
    return (
        f"{year:04d}-{month:02d}-{int(day):02d}T{int(hour):02d}:{int(minute):02d}:"
        f"{seconds:02d}{zone}"
    )


FORMS: Final = (
    "asRaw",
    "asText",
    "asAddresses",
    "asGroupedAddresses",
    "asMessageIds",
    "asDate",
    "asURLs",
)


def parse_form(form: str, raw_value: str) -> Json:
    """The value of one header field (its ``asRaw`` string) in the parsed form ``form``.

    Raises:
        ValueError: ``form`` is not one of :data:`FORMS`.
    """
    if form == "asRaw":
        return raw_value
    if form == "asText":
        return as_text(raw_value)
    if form == "asAddresses":
        return addresses(unfold(raw_value))
    if form == "asGroupedAddresses":
        return grouped_addresses(unfold(raw_value))
    if form == "asMessageIds":
        return as_message_ids(raw_value)
    if form == "asDate":
        return as_date(raw_value)
    if form == "asURLs":
        return as_urls(raw_value)
    raise ValueError(f"unknown header form {form!r}")


def select_header(headers: Sequence[tuple[str, str]], name: str, form: str, all_: bool) -> Json:
    """The value of a ``header:{name}:{form}[:all]`` property over (name, asRaw) pairs.

    Names match case-insensitively.  Without ``all`` the **last** instance counts, null if
    none; with ``all`` a list (empty if none), in message order (§4.1.3).
    """
    wanted = name.lower()
    values = [value for key, value in headers if key.lower() == wanted]
    if all_:
        return [parse_form(form, value) for value in values]
    return parse_form(form, values[-1]) if values else None


# --- which forms a header may use (§4.1.2) -------------------------------------------------

_ADDRESS_FIELDS: Final = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc"}
    | {f"resent-{n}" for n in ("from", "sender", "reply-to", "to", "cc", "bcc")}
)
_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "asText": frozenset({"subject", "comments", "keywords", "list-id"}),
    "asAddresses": _ADDRESS_FIELDS,
    "asGroupedAddresses": _ADDRESS_FIELDS,
    "asMessageIds": frozenset({"message-id", "in-reply-to", "references", "resent-message-id"}),
    "asDate": frozenset({"date", "resent-date"}),
    "asURLs": frozenset(
        {f"list-{n}" for n in ("help", "unsubscribe", "subscribe", "post", "owner", "archive")}
    ),
}
_STANDARD: Final = frozenset(
    # RFC 5322 §3.6 (with the obsolete Resent-Reply-To of §4.5.6) and RFC 2369.  List-Id
    # is RFC 2919, so it is "not defined in RFC 5322 or RFC 2369" and may use any form.
    {"return-path", "received"}
    | {name for form, names in _ALLOWED.items() if form != "asText" for name in names}
    | {"subject", "comments", "keywords"}
)


def form_allowed(header_name: str, form: str) -> bool:
    """True when ``form`` may be fetched (or set) for ``header_name`` (case-insensitive).

    ``asRaw`` is allowed everywhere; a header not defined in RFC 5322 or RFC 2369 allows
    every form; a standard header allows only the forms RFC 8621 §4.1.2 lists for it.
    """
    if form not in FORMS:
        return False
    name = header_name.lower()
    if form == "asRaw" or name not in _STANDARD:
        return True
    return name in _ALLOWED[form]


_PROPERTY: Final = re.compile(r"header:([!-9;-~]+)(?::(as[A-Za-z]+))?(:all)?")


def header_property(name_spec: str) -> tuple[str, str, bool]:
    """Parse ``header:{name}[:as{Form}][:all]`` (RFC 8621 §4.1.3).

    Returns:
        (header name as the client spelled it, form, all).  The form defaults to asRaw.

    Raises:
        ValueError: not of that shape, an unknown form, suffixes out of order, or a form
            not allowed for that header (``header:From:asDate``): ``invalidArguments``.
    """
    match = _PROPERTY.fullmatch(name_spec)
    if match is None:
        raise ValueError(f"malformed header property {name_spec!r}")
    name, form, all_ = match.group(1), match.group(2) or "asRaw", match.group(3) is not None
    if form not in FORMS:
        raise ValueError(f"unknown header form {form!r} in {name_spec!r}")
    if not form_allowed(name, form):
        raise ValueError(f"{form} is not allowed for the {name} header in {name_spec!r}")
    return name, form, all_
