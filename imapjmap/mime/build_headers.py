"""Header properties of an Email/set create → header fields (RFC 8621 §4.1.2-§4.1.3, §4.6).

A header property names one header field and the form its value is in
(``header:{name}[:as{Form}][:all]``, or a convenience property such as ``from``).  This
module checks a value against its form and writes the field, so that reading it back in the
same form gives the value again (up to the normalisations each form's reader does: NFC and
trimming for text, ``+00:00`` for ``Z`` in dates, ``null`` for empty lists).

Every check failure is ``invalidProperties`` naming the property (:class:`BadProperty`,
turned into a SetError by :mod:`imapjmap.mime.build`).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from imapjmap.jmap.wire import Json
from imapjmap.mime.email import CONVENIENCE_HEADER_PROPERTIES
from imapjmap.mime.encode import (
    HeaderTooLong,
    fold,
    phrase_chunks,
    rfc5322_date,
    unstructured_chunks,
)
from imapjmap.mime.headers import header_property

__all__ = [
    "BadProperty",
    "Field",
    "HeaderSpec",
    "header_spec",
    "parse_date",
    "render",
    "text_value",
]


class BadProperty(ValueError):
    """A create property breaks a rule; ``paths`` are the property paths to report."""

    def __init__(self, description: str, *paths: str) -> None:
        super().__init__(description)
        self.description = description
        self.paths = list(paths)


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """What a header property names: the header field and the form of its value."""

    prop: str  # the property as the client wrote it
    name: str  # the header field name to write
    form: str
    all: bool

    @property
    def key(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Field:
    """One header field, ready to write (``octets`` ends in CRLF)."""

    name: str
    octets: bytes

    @property
    def key(self) -> str:
        return self.name.lower()


def header_spec(prop: str) -> HeaderSpec | None:
    """The header a property names, None when it names none (``textBody`` ...).

    Raises:
        BadProperty: a malformed ``header:`` property, or a form not allowed for that
            header (§4.6: "Header fields MUST NOT be specified in parsed forms that are
            forbidden for that particular field").
    """
    if prop in CONVENIENCE_HEADER_PROPERTIES:
        name, form, all_ = CONVENIENCE_HEADER_PROPERTIES[prop]
        return HeaderSpec(prop, name, form, all_)
    if not prop.startswith("header:"):
        return None
    try:
        name, form, all_ = header_property(prop)
    except ValueError as exc:
        raise BadProperty(str(exc), prop) from None
    return HeaderSpec(prop, name, form, all_)


# --- values of each form --------------------------------------------------------------------

_CONTROLS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def text_value(value: str, *, phrase: bool = False) -> str:
    """A text value as it will read back: control characters (line breaks and HTAB
    included) become spaces, since the readers drop those that arrive encoded; lone
    surrogates become U+FFFD; NFC; trimmed of spaces (``phrase``: of all white space, as
    display names are).  Only runs of plain spaces survive folding and encoding."""
    text = value.encode("utf-8", "replace").decode("utf-8") if not value.isascii() else value
    text = unicodedata.normalize("NFC", _CONTROLS.sub(" ", text.replace("\r\n", " ")))
    return text.strip() if phrase else text.strip(" ")


def _text(spec: HeaderSpec, value: Json) -> list[str]:
    if not isinstance(value, str):
        raise BadProperty("a text header value must be a string", spec.prop)
    return unstructured_chunks(text_value(value))


_FOLD: Final = re.compile(r"\r?\n(?=[ \t])")


_BAD_BREAK: Final = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n")


def _raw(spec: HeaderSpec, value: Json) -> list[str]:
    if not isinstance(value, str):
        raise BadProperty("a raw header value must be a string", spec.prop)
    folded = _FOLD.sub("\r\n", value)
    if "\0" in folded or _BAD_BREAK.search(folded):
        raise BadProperty("a raw header value may hold line breaks only to fold", spec.prop)
    if not folded.isascii():
        folded = folded.encode("utf-8", "replace").decode("utf-8")
    return [folded]


_ADDRESS_BAD: Final = re.compile(r"[<>\x00-\x1f\x7f]|[ \t(),;]")
_SIMPLE_ADDRESS: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def _address_ok(email: str) -> bool:
    """An ``email`` that can be written inside ``<>`` and read back unchanged: characters
    that end or restructure the address (``<>``, controls, white space, comments, list
    separators) only inside a quoted local part."""
    outside = re.sub(r'"(?:[^"\\\r\n]|\\.)*"', '""', email)
    return not _ADDRESS_BAD.search(outside) and '"' not in outside.replace('""', "")


def _mailbox_chunks(spec: HeaderSpec, item: Json) -> list[str]:
    if not isinstance(item, dict) or set(item) - {"name", "email"}:
        raise BadProperty("an EmailAddress is {name, email}", spec.prop)
    name, email = item.get("name"), item.get("email")
    if not isinstance(email, str) or not (name is None or isinstance(name, str)):
        raise BadProperty("EmailAddress name is a String|null, email a String", spec.prop)
    if not _address_ok(email):
        raise BadProperty("an email address holds characters it cannot carry", spec.prop)
    name = text_value(name, phrase=True) if name else ""
    if not name:
        return [" " + email] if _SIMPLE_ADDRESS.fullmatch(email) else [f" <{email}>"]
    return [*phrase_chunks(name), f" <{email}>"]


def _address_list(spec: HeaderSpec, items: Json) -> list[list[str]]:
    if not isinstance(items, list):
        raise BadProperty("an address list is an array", spec.prop)
    return [_mailbox_chunks(spec, item) for item in items]


def _join(groups: Sequence[list[str]], separator: str) -> list[str]:
    chunks: list[str] = []
    for index, group in enumerate(groups):
        if index:
            chunks[-1] += separator
        chunks.extend(group)
    return chunks


def _addresses(spec: HeaderSpec, value: Json) -> list[str]:
    return _join(_address_list(spec, value), ",")


def _grouped(spec: HeaderSpec, value: Json) -> list[str]:
    if not isinstance(value, list):
        raise BadProperty("grouped addresses are an array", spec.prop)
    pieces: list[list[str]] = []
    for group in value:
        if not isinstance(group, dict) or set(group) - {"name", "addresses"}:
            raise BadProperty("an EmailAddressGroup is {name, addresses}", spec.prop)
        name = group.get("name")
        if not (name is None or isinstance(name, str)):
            raise BadProperty("a group name is a String or null", spec.prop)
        members = _address_list(spec, group.get("addresses"))
        name = text_value(name, phrase=True) if name else ""
        if not name:  # reads back as null: its members join the ungrouped ones
            pieces.extend(members)
            continue
        head = phrase_chunks(name)
        head[-1] += ":"
        body = _join(members, ",")
        pieces.append([*head, *body] if body else head)
        pieces[-1][-1] += ";"
    return _join(pieces, ",")


_MSG_ID: Final = re.compile(r"[!-'*-;=?-~]+")  # printable ASCII but ( ) < > and space


def _message_ids(spec: HeaderSpec, value: Json) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadProperty("message ids are an array of strings", spec.prop)
    if not all(_MSG_ID.fullmatch(v) for v in value):
        raise BadProperty("a message id is printable ASCII without <>, () or spaces", spec.prop)
    return [f" <{v}>" for v in value]


_URL: Final = re.compile(r"[^\s<>()\x00-\x1f\x7f]+")


def _urls(spec: HeaderSpec, value: Json) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadProperty("URLs are an array of strings", spec.prop)
    if not all(_URL.fullmatch(v) for v in value):
        raise BadProperty("a URL must not hold white space, <>, () or controls", spec.prop)
    return _join([[f" <{v}>"] for v in value], ",")


_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_date(value: Json) -> tuple[dt.datetime, bool] | None:
    """An RFC 3339 ``Date`` (RFC 8620 §1.4): the moment, and whether its zone is the
    "unknown" ``-00:00``.  None when it is not one.  A leap second becomes :59."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    sign, zone_hours, zone_minutes = match.group(8, 9, 10)
    offset = dt.timedelta(0)
    if sign:
        offset = dt.timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        offset = -offset if sign == "-" else offset
    try:
        moment = dt.datetime(
            year, month, day, hour, minute, min(second, 59), tzinfo=dt.timezone(offset)
        )
    except ValueError:
        return None
    return moment, sign == "-" and offset == dt.timedelta(0)


def _date(spec: HeaderSpec, value: Json) -> list[str]:
    parsed = parse_date(value)
    if parsed is None:
        raise BadProperty("a date must be an RFC 3339 date-time", spec.prop)
    moment, unknown = parsed
    return [" " + rfc5322_date(moment, unknown_zone=unknown)]


_FORMS: Final[dict[str, Callable[[HeaderSpec, Json], list[str]]]] = {
    "asRaw": _raw,
    "asText": _text,
    "asAddresses": _addresses,
    "asGroupedAddresses": _grouped,
    "asMessageIds": _message_ids,
    "asDate": _date,
    "asURLs": _urls,
}


def _is_empty(value: Json) -> bool:
    return value is None or value == []


def render(spec: HeaderSpec, value: Json) -> list[Field]:
    """The header fields a property's value stands for: none for null (and for an empty
    list, which reads back as null), one per item with ``:all``.

    Raises:
        BadProperty: the value is not of the form's type, or cannot be written.
    """
    if spec.all:
        if not isinstance(value, list):
            raise BadProperty("a header:...:all value is an array", spec.prop)
        values = [v for v in value if not _is_empty(v)]
    else:
        values = [] if _is_empty(value) else [value]
    fields = []
    for item in values:
        chunks = _FORMS[spec.form](spec, item)
        try:
            fields.append(Field(spec.name, fold(spec.name, chunks)))
        except HeaderTooLong as exc:
            raise BadProperty(str(exc), spec.prop) from None
    return fields
