"""FETCH responses: message attributes, ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2).

Called by :mod:`imapjmap.imap.parse` with the lexed ``( ... )`` list of one ``* n FETCH``
response.  Every helper raises ``ValueError`` (or lets IndexError/TypeError out) on input it
cannot read; :func:`imapjmap.imap.parse.parse_reply` turns those into
:class:`~imapjmap.errors.ImapProtocolViolation` with an excerpt, in one place.

Real servers bend the grammar; what is tolerated and why:

* NIL where a string, number or list is due (Dovecot sends ``("inline" NIL)``, others send
  NIL sizes or NIL types); ``()`` where NIL is due (empty parameter lists).
* any case for body types, subtypes, encodings and disposition types (they are lower-cased).
* extension data after body-fld-loc (RFC 3501 allows it; it is skipped).
* body-fld-lang as one string or a list; a disposition written as a bare string.
* non-extensible ``BODY`` (no extension data at all) parses into the same record.
* ``message/rfc822`` without the envelope/body/lines triple (seen on old Exchange).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from typing import Any, TypeVar

from imapjmap.imap.lexer import Value, items, nnumber, nstring, number, render, string
from imapjmap.imap.models import Address, BodyStructure, Envelope, FetchRecord
from imapjmap.imap.utf7 import decode_mailbox_name

_T = TypeVar("_T")

# -- dates ---------------------------------------------------------------------------------

# date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-][0-9]{4})\Z",
    re.ASCII,
)
_MONTHS = {
    name: index
    for index, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
# A mailbox has few distinct zones; building a timezone object per message would dominate.
_ZONES: dict[str, dt.timezone] = {}


def internaldate(text: str) -> dt.datetime:
    """Parse ``"17-Jul-1996 02:44:25 -0700"`` (quotes already removed) into an aware datetime.

    strptime is avoided on purpose: it is ~10x slower and locale-dependent for month names.

    Raises:
        ValueError: the text is not an IMAP date-time, or names an impossible date.
    """
    match = _DATE.match(text)
    if match is None:
        raise ValueError(f"bad date-time {text[:40]!r}")
    day, month, year, hour, minute, second, zone = match.groups()
    tz = _ZONES.get(zone)
    if tz is None:
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        if minutes >= 24 * 60:
            raise ValueError(f"bad zone in date-time {text[:40]!r}")
        offset = dt.timedelta(minutes=-minutes if zone[0] == "-" else minutes)
        tz = _ZONES.setdefault(zone, dt.timezone(offset))
    return dt.datetime(
        int(year),
        _MONTHS[month.upper()],
        int(day),
        int(hour),
        int(minute),
        int(second),
        tzinfo=tz,
    )


# -- building the records ----------------------------------------------------------------
#
# A frozen dataclass's __init__ stores each field with object.__setattr__; for the four or
# so records of every message of a first sync that was a tenth of the parser's time.  The
# constructors below take every field positionally and store them as plain slot
# assignments into an instance of a twin class with the very same slots, then make the
# instance what it is meant to be by assigning its __class__ (CPython allows that exactly
# when the two layouts are the same, and says so at import time below).  No model has a
# __post_init__ or a validating __init__, so the record is the one __init__ would build.


def fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A function building ``cls`` from all its fields, in declaration order (or by name).

    Fields with a default factory get no default here: the caller passes a fresh value.
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    slots = cls.__slots__  # type: ignore[attr-defined]
    if sorted(names) != sorted(slots):
        raise TypeError(f"{cls.__name__}: the fast constructor needs every field in a slot")
    namespace: dict[str, Any] = {"_cls": cls}
    body = [
        "class Builder:",
        f"    __slots__ = {tuple(slots)!r}",
        f"    def __init__(self, {', '.join(names)}):",
        *[f"        self.{name} = {name}" for name in names],
        "        self.__class__ = _cls",
    ]
    exec("\n".join(body), namespace)  # as dataclasses itself makes __init__
    build: Callable[..., _T] = namespace["Builder"]
    build(*[None] * len(names))  # a TypeError now if the layouts ever differ
    return build


_new_envelope = fast_constructor(Envelope)
_new_body = fast_constructor(BodyStructure)
_new_fetch = fast_constructor(FetchRecord)


# -- ENVELOPE ------------------------------------------------------------------------------


# Addresses repeat: From, Sender and Reply-To are usually one person, and a mailbox holds
# few correspondents.  Address is frozen, so equal ones can be shared, and so can the
# one-address tuples that most fields are; the cache is small and simply emptied when full.
_ADDRESS_CACHE: dict[tuple[Value, ...], tuple[Address]] = {}
_ADDRESS_CACHE_SIZE = 4096


def _address(value: Value) -> tuple[Address]:
    """``(address,)`` for the lexed fields of one address."""
    if type(value) is list:
        try:
            return _ADDRESS_CACHE[tuple(value)]
        except (KeyError, TypeError):  # TypeError: a list inside (nstring below says why)
            pass
    fields = items(value)
    if len(fields) != 4:
        raise ValueError(f"address has {len(fields)} fields, expected 4")
    address = (
        Address(nstring(fields[0]), nstring(fields[1]), nstring(fields[2]), nstring(fields[3])),
    )
    if len(_ADDRESS_CACHE) >= _ADDRESS_CACHE_SIZE:
        _ADDRESS_CACHE.clear()
    _ADDRESS_CACHE[tuple(fields)] = address
    return address


def _addresses(value: Value) -> tuple[Address, ...]:
    if value is None:
        return ()
    if type(value) is list and len(value) == 1:  # the usual single address
        return _address(value[0])
    return tuple([_address(a)[0] for a in items(value)])


def envelope(value: Value) -> Envelope:
    """Build an :class:`Envelope` from the lexed ENVELOPE list.

    Raises:
        ValueError: fewer than ten fields, or a field of the wrong kind.
    """
    fields = items(value)
    if len(fields) < 10:
        raise ValueError(f"ENVELOPE has {len(fields)} fields, expected 10")
    date, subject, from_value, sender_value, reply_to_value = fields[:5]
    from_ = _addresses(from_value)
    # Servers fill Sender and Reply-To from From when absent (RFC 3501 §7.4.2): reuse it.
    sender = from_ if sender_value == from_value else _addresses(sender_value)
    reply_to = from_ if reply_to_value == from_value else _addresses(reply_to_value)
    return _new_envelope(
        date if date is None or type(date) is str else nstring(date),
        subject if subject is None or type(subject) is str else nstring(subject),
        from_,
        sender,
        reply_to,
        _addresses(fields[5]),
        _addresses(fields[6]),
        _addresses(fields[7]),
        nstring(fields[8]),
        nstring(fields[9]),
    )


# -- BODYSTRUCTURE -------------------------------------------------------------------------


def _lower(value: Value) -> str | None:
    if type(value) is str:  # the usual case, tested first: this runs for every body part
        return value.lower()
    text = nstring(value)
    return None if text is None else text.lower()


def _loose(value: Value) -> str | None:
    """A string in a position where some servers put junk: anything else becomes None."""
    if value is None or type(value) is str:
        return value
    return None if type(value) is list else nstring(value)


def _params(value: Value) -> dict[str, str]:
    if type(value) is not list:
        return {}
    if len(value) == 2:  # one parameter, as most parts have (charset, name, boundary)
        key, val = value
        if type(key) is str and type(val) is str:
            return {key.lower(): val}
    params: dict[str, str] = {}
    for index in range(0, len(value) - 1, 2):
        key, val = value[index], value[index + 1]
        if type(key) is list or type(val) is list or key is None or val is None:
            continue  # not a parameter; skip rather than lose the whole structure
        params[string(key).lower()] = string(val)
    return params


def _disposition(value: Value) -> tuple[str | None, dict[str, str]]:
    if value is None:
        return None, {}
    if type(value) is list:
        if not value:
            return None, {}
        return _lower(value[0]), _params(value[1] if len(value) > 1 else None)
    return _lower(value), {}


def _language(value: Value) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is list:
        return tuple(s for s in (_loose(v) for v in value) if s is not None)
    text = _loose(value)
    return () if text is None else (text,)


def bodystructure(value: Value) -> BodyStructure:
    """Build a :class:`BodyStructure` tree from a lexed BODYSTRUCTURE or BODY list.

    Raises:
        ValueError: not a list, or a required field (size, lines) of the wrong kind.
    """
    fields = items(value)
    if fields and type(fields[0]) is list:
        return _multipart(fields)
    return _single(fields)


def _multipart(fields: list[Value]) -> BodyStructure:
    count = 0
    while count < len(fields) and type(fields[count]) is list:
        count += 1
    parts = tuple([bodystructure(part) for part in fields[:count]])
    # body-ext-mpart: params, disposition, language, location, extensions (ignored)
    subtype, params, disposition, language, location = (fields[count:] + [None] * 5)[:5]
    subtype = subtype.lower() if type(subtype) is str else _lower(subtype)
    disposition, disposition_params = _disposition(disposition)
    return _new_body(
        "multipart",
        subtype or "mixed",
        _params(params),
        None,
        None,
        None,
        None,
        None,
        None,
        disposition,
        disposition_params,
        () if language is None else _language(language),
        location if location is None or type(location) is str else _loose(location),
        parts,
        None,
    )


def _single(fields: list[Value]) -> BodyStructure:
    # The common case of each field is tested inline: this runs for every body part.
    count = len(fields)
    if count < 7:
        raise ValueError(f"body part has {count} fields, expected at least 7")
    type_, subtype, params, id_, description, encoding, size = fields[:7]
    # A NIL type says nothing; treat the part as opaque data (an attachment).
    type_ = (type_.lower() if type(type_) is str else _lower(type_)) or "application"
    subtype = (subtype.lower() if type(subtype) is str else _lower(subtype)) or "octet-stream"
    lines: int | None = None
    envelope_: Envelope | None = None
    parts: tuple[BodyStructure, ...] = ()
    at = 7
    if type_ == "text":
        if count > 7:
            lines_value = fields[7]
            if type(lines_value) is str and lines_value.isdigit() and lines_value.isascii():
                lines = int(lines_value)
            else:
                lines = nnumber(lines_value)
        at = 8
    elif (
        type_ == "message"
        and subtype in ("rfc822", "global")
        and count > 9
        and type(fields[7]) is list
        and type(fields[8]) is list
    ):
        envelope_ = envelope(fields[7])
        parts = (bodystructure(fields[8]),)
        lines = nnumber(fields[9])
        at = 10
    # body-ext-1part: md5, disposition, language, location, extensions (ignored)
    md5, disposition, language, location = (fields[at : at + 4] + [None] * 4)[:4]
    if disposition is None:
        disposition_params: dict[str, str] = {}
    else:
        disposition, disposition_params = _disposition(disposition)
    return _new_body(
        type_,
        subtype,
        _params(params),
        id_ if id_ is None or type(id_) is str else _loose(id_),
        description if description is None or type(description) is str else _loose(description),
        encoding.lower() if type(encoding) is str else _lower(encoding),
        int(size) if type(size) is str and size.isdigit() and size.isascii() else nnumber(size),
        lines,
        md5 if md5 is None or type(md5) is str else _loose(md5),
        disposition,
        disposition_params,
        () if language is None else _language(language),
        location if location is None or type(location) is str else _loose(location),
        parts,
        envelope_,
    )


# -- FETCH ---------------------------------------------------------------------------------


def _flags(value: Value) -> tuple[str, ...]:
    return tuple([string(flag) for flag in items(value)])


def _single_number(value: Value) -> int:
    # MODSEQ (n) per RFC 7162; a bare number is accepted too.
    if type(value) is list and len(value) == 1:
        return number(value[0])
    return number(value)


def _object_id(value: Value) -> str | None:
    # EMAILID (M123) / THREADID (T456) / THREADID NIL (RFC 8474)
    if type(value) is list and len(value) == 1:
        return string(value[0])
    if value is None:
        return None
    raise ValueError(f"bad object id {render(value)[:40]}")


def _date_or_nil(value: Value) -> dt.datetime | None:
    text = nstring(value)
    return None if text is None else internaldate(text)


def _preview(value: Value) -> str | None:
    # RFC 8970 says PREVIEW nstring; early drafts (and SNIPPET) wrapped it: (FUZZY "text").
    if type(value) is list and value:
        value = value[-1]
    return nstring(value)


def _labels(value: Value) -> tuple[str, ...]:
    # Gmail: system labels are \\Inbox-style atoms, user labels are modified UTF-7 names.
    labels: list[str] = []
    for label in items(value):
        text = string(label)
        labels.append(text if text.startswith("\\") else decode_mailbox_name(text))
    return tuple(labels)


def _internaldate(value: Value) -> dt.datetime:
    return internaldate(value if type(value) is str else string(value))


# item name -> (position in FetchRecord's fields, converter)
_POSITION = {f.name: i for i, f in enumerate(dataclasses.fields(FetchRecord))}
_ITEMS: dict[str, tuple[int, Callable[[Value], Any]]] = {
    name: (_POSITION[attribute], converter)
    for name, attribute, converter in (
        ("UID", "uid", number),
        ("FLAGS", "flags", _flags),
        ("MODSEQ", "modseq", _single_number),
        ("INTERNALDATE", "internaldate", _internaldate),
        ("RFC822.SIZE", "size", number),
        ("ENVELOPE", "envelope", envelope),
        ("BODYSTRUCTURE", "bodystructure", bodystructure),
        ("BODY", "bodystructure", bodystructure),
        ("EMAILID", "emailid", _object_id),
        ("THREADID", "threadid", _object_id),
        ("X-GUID", "x_guid", nstring),
        ("X-GM-MSGID", "x_gm_msgid", number),
        ("X-GM-THRID", "x_gm_thrid", number),
        ("X-GM-LABELS", "x_gm_labels", _labels),
        ("PREVIEW", "preview", _preview),
        ("SAVEDATE", "savedate", _date_or_nil),
    )
}
_BODY = _ITEMS["BODY"]
_NOTHING: list[Any] = [None] * len(_POSITION)
_SEQ, _SECTIONS, _EXTRA = _POSITION["seq"], _POSITION["sections"], _POSITION["extra"]
# Whole-message items that carry bytes, kept in ``sections`` under their own name.
_RFC822_SECTIONS = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT"})


def _section_bytes(value: Value) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")  # the exact bytes the server sent
    raise ValueError(f"section content is a list: {render(value)[:40]}")


def _other_item(
    key: str, value: Value, sections: dict[str, bytes | None], extra: dict[str, str]
) -> None:
    """File an item that is not a field of FetchRecord: a section, or ``extra``."""
    if key.startswith(("BODY[", "BINARY[")) or key in _RFC822_SECTIONS:
        # "BODY[1]<0>" is filed as "BODY[1]": the origin only echoes the request.
        if key[-1] == ">":
            key = key[: key.rindex("<")]
        sections[key] = _section_bytes(value)
    else:
        extra[key] = render(value) if type(value) is not str else value


def fetch(seq: int, attributes: Value) -> FetchRecord:
    """Build a :class:`FetchRecord` from the lexed ``( ... )`` of ``* seq FETCH``.

    Item names are case-insensitive; sections and ``extra`` are keyed in upper case.

    Raises:
        ValueError: an odd number of name/value elements, a name that is not an atom, or a
            value of the wrong kind for its item.
    """
    pairs = items(attributes)
    if len(pairs) % 2:
        raise ValueError("FETCH item without a value")
    record = _NOTHING.copy()
    sections: dict[str, bytes | None] = {}
    extra: dict[str, str] = {}
    for name, value in zip(pairs[0::2], pairs[1::2], strict=True):
        if type(name) is not str:
            raise ValueError(f"FETCH item name is not an atom: {render(name)[:40]}")
        known = _ITEMS.get(name)  # names come in upper case, as the keys
        if known is None:
            name = name.upper()
            known = _ITEMS.get(name)
        if known is None or (known is _BODY and type(value) is not list):
            _other_item(name, value, sections, extra)
        else:
            record[known[0]] = known[1](value)
    record[_SEQ] = seq
    record[_SECTIONS] = sections
    record[_EXTRA] = extra
    return _new_fetch(*record)
