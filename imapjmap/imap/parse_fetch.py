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

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from imapjmap.imap.lexer import Value, items, nnumber, nstring, number, render, string
from imapjmap.imap.models import Address, BodyStructure, Envelope, FetchRecord
from imapjmap.imap.utf7 import decode_mailbox_name

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


# -- ENVELOPE ------------------------------------------------------------------------------


# Addresses repeat: From, Sender and Reply-To are usually one person, and a mailbox holds
# few correspondents.  Address is frozen, so equal ones can be shared; the cache is small
# and is simply emptied when full.
_ADDRESS_CACHE: dict[tuple[Value, ...], Address] = {}
_ADDRESS_CACHE_SIZE = 4096


def _address(value: Value) -> Address:
    fields = items(value)
    if len(fields) != 4:
        raise ValueError(f"address has {len(fields)} fields, expected 4")
    key = tuple(fields)
    try:
        return _ADDRESS_CACHE[key]
    except KeyError:
        pass
    except TypeError:  # a list inside: unhashable, and wrong anyway (nstring says why)
        key = ()
    address = Address(
        nstring(fields[0]), nstring(fields[1]), nstring(fields[2]), nstring(fields[3])
    )
    if key:
        if len(_ADDRESS_CACHE) >= _ADDRESS_CACHE_SIZE:
            _ADDRESS_CACHE.clear()
        _ADDRESS_CACHE[key] = address
    return address


def _addresses(value: Value) -> tuple[Address, ...]:
    if value is None:
        return ()
    return tuple([_address(a) for a in items(value)])


def envelope(value: Value) -> Envelope:
    """Build an :class:`Envelope` from the lexed ENVELOPE list.

    Raises:
        ValueError: fewer than ten fields, or a field of the wrong kind.
    """
    fields = items(value)
    if len(fields) < 10:
        raise ValueError(f"ENVELOPE has {len(fields)} fields, expected 10")
    from_ = _addresses(fields[2])
    # Servers fill Sender and Reply-To from From when absent (RFC 3501 §7.4.2): reuse it.
    sender = from_ if fields[3] == fields[2] else _addresses(fields[3])
    reply_to = from_ if fields[4] == fields[2] else _addresses(fields[4])
    return Envelope(
        date=nstring(fields[0]),
        subject=nstring(fields[1]),
        from_=from_,
        sender=sender,
        reply_to=reply_to,
        to=_addresses(fields[5]),
        cc=_addresses(fields[6]),
        bcc=_addresses(fields[7]),
        in_reply_to=nstring(fields[8]),
        message_id=nstring(fields[9]),
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
    rest = fields[count:] + [None] * 5
    disposition, disposition_params = _disposition(rest[2])
    return BodyStructure(
        type="multipart",
        subtype=_lower(rest[0]) or "mixed",
        params=_params(rest[1]),
        disposition=disposition,
        disposition_params=disposition_params,
        language=_language(rest[3]),
        location=_loose(rest[4]),
        parts=parts,
    )


def _single(fields: list[Value]) -> BodyStructure:
    if len(fields) < 7:
        raise ValueError(f"body part has {len(fields)} fields, expected at least 7")
    # A NIL type says nothing; treat the part as opaque data (an attachment).
    type_ = _lower(fields[0]) or "application"
    subtype = _lower(fields[1]) or "octet-stream"
    lines: int | None = None
    envelope_: Envelope | None = None
    parts: tuple[BodyStructure, ...] = ()
    at = 7
    if type_ == "text":
        if len(fields) > 7:
            lines = nnumber(fields[7])
        at = 8
    elif (
        type_ == "message"
        and subtype in ("rfc822", "global")
        and len(fields) > 9
        and type(fields[7]) is list
        and type(fields[8]) is list
    ):
        envelope_ = envelope(fields[7])
        parts = (bodystructure(fields[8]),)
        lines = nnumber(fields[9])
        at = 10
    # body-ext-1part: md5, disposition, language, location, extensions (ignored)
    ext = fields[at : at + 4] + [None] * (4 - len(fields[at : at + 4]))
    disposition, disposition_params = _disposition(ext[1])
    return BodyStructure(
        type=type_,
        subtype=subtype,
        params=_params(fields[2]),
        id=_loose(fields[3]),
        description=_loose(fields[4]),
        encoding=_lower(fields[5]),
        size=nnumber(fields[6]),
        lines=lines,
        md5=_loose(ext[0]),
        disposition=disposition,
        disposition_params=disposition_params,
        language=_language(ext[2]),
        location=_loose(ext[3]),
        parts=parts,
        envelope=envelope_,
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


_ITEMS: dict[str, tuple[str, Callable[[Value], Any]]] = {
    "UID": ("uid", number),
    "FLAGS": ("flags", _flags),
    "MODSEQ": ("modseq", _single_number),
    "INTERNALDATE": ("internaldate", lambda v: internaldate(string(v))),
    "RFC822.SIZE": ("size", number),
    "ENVELOPE": ("envelope", envelope),
    "BODYSTRUCTURE": ("bodystructure", bodystructure),
    "BODY": ("bodystructure", bodystructure),
    "EMAILID": ("emailid", _object_id),
    "THREADID": ("threadid", _object_id),
    "X-GUID": ("x_guid", nstring),
    "X-GM-MSGID": ("x_gm_msgid", number),
    "X-GM-THRID": ("x_gm_thrid", number),
    "X-GM-LABELS": ("x_gm_labels", _labels),
    "PREVIEW": ("preview", _preview),
    "SAVEDATE": ("savedate", _date_or_nil),
}
# Whole-message items that carry bytes, kept in ``sections`` under their own name.
_RFC822_SECTIONS = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT"})


def _section_bytes(value: Value) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")  # the exact bytes the server sent
    raise ValueError(f"section content is a list: {render(value)[:40]}")


def fetch(seq: int, attributes: Value) -> FetchRecord:
    """Build a :class:`FetchRecord` from the lexed ``( ... )`` of ``* seq FETCH``.

    Raises:
        ValueError: an odd number of name/value elements, a name that is not an atom, or a
            value of the wrong kind for its item.
    """
    pairs = items(attributes)
    if len(pairs) % 2:
        raise ValueError("FETCH item without a value")
    fields: dict[str, Any] = {}
    sections: dict[str, bytes | None] = {}
    extra: dict[str, str] = {}
    for index in range(0, len(pairs), 2):
        name = pairs[index]
        if type(name) is not str:
            raise ValueError(f"FETCH item name is not an atom: {render(name)[:40]}")
        value = pairs[index + 1]
        key = name if name.isupper() else name.upper()
        known = _ITEMS.get(key)
        if known is not None and not (key == "BODY" and type(value) is not list):
            fields[known[0]] = known[1](value)
        elif key.startswith(("BODY[", "BINARY[")) or key in _RFC822_SECTIONS:
            # "BODY[1]<0>" is filed as "BODY[1]": the origin only echoes the request.
            if key[-1] == ">":
                key = key[: key.rindex("<")]
            sections[key] = _section_bytes(value)
        else:
            extra[key] = render(value) if type(value) is not str else value
    return FetchRecord(seq=seq, sections=sections, extra=extra, **fields)
