"""Pure conversions from IMAP FETCH records to cache rows: ids and list properties.

Email ids (docs/design.md, "Ids"), first source that the upstream offers:
1. RFC 8474 ``EMAILID`` as is (Cyrus's own JMAP uses the same strings);
2. Gmail's ``X-GM-MSGID`` (a 64-bit number) as ``"M" + decimal``;
3. Dovecot's ``X-GUID`` (kept across COPY and MOVE): as is behind ``"E"`` when it is already
   made of Id characters, else a full SHA-256 of it in hex — never truncated;
4. otherwise a full SHA-256 of what identifies the message across copies (Message-ID,
   INTERNALDATE, size, Date, From, Subject).  A COPY keeps all of them, so a copy is the
   same Email; two different messages would have to agree on all six to collide.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.imap.models import Address, BodyStructure, Envelope, FetchRecord
from imapjmap.mime import envelope as env
from imapjmap.mime import headers, tree
from imapjmap.store.emails import EmailRow, keywords_from_flags

_ID_CHARS: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")
# ENVELOPE cannot say whether Sender / Reply-To exist (RFC 3501 §7.4.2: the server copies
# From into them when absent), and has no References: those three come as raw headers.
HEADER_FIELDS: Final = "REFERENCES SENDER REPLY-TO"
HEADERS_SECTION: Final = f"BODY[HEADER.FIELDS ({HEADER_FIELDS})]"


def _digest(text: str) -> str:
    # full SHA-256 in hex: never truncated, lower case only (ids differing only in case are
    # to be avoided, RFC 8620 §1.2), and hexdigest is fast where base32 is not
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def email_id_for(record: FetchRecord) -> str:
    """The stable JMAP Email id for a FETCH record (see the module docstring)."""
    if record.emailid:
        return record.emailid
    if record.x_gm_msgid is not None:
        return f"M{record.x_gm_msgid}"
    if record.x_guid:
        guid = record.x_guid
        return "E" + (guid if _ID_CHARS.fullmatch(guid) else _digest(guid))
    e = record.envelope
    parts = [
        e.message_id or "" if e else "",
        record.internaldate.isoformat() if record.internaldate else "",
        str(record.size or 0),
        e.date or "" if e else "",
        ",".join(a.email or "" for a in e.from_) if e else "",
        e.subject or "" if e else "",
    ]
    return "E" + _digest("\0".join(parts))


def new_thread_id(email_id: str) -> str:
    """A thread minted locally takes its id from its first email (deterministic)."""
    return "T" + _digest("thread\0" + email_id)


def _first(addresses: list[dict[str, Any]] | None) -> str:
    if not addresses:
        return ""
    first = addresses[0]
    return str(first.get("name") or first.get("email") or "").casefold()


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the sync engine needs from one new message."""

    email_id: str
    row: EmailRow  # thread_id is a placeholder until threading decides
    own_message_id: str | None
    refs: tuple[str, ...]  # In-Reply-To then References, no duplicates
    base_subject: str
    upstream_thread: str | None  # THREADID / X-GM-THRID when the server has them


def extra_headers(record: FetchRecord) -> dict[str, str]:
    """Upper-cased name → raw value of the last References / Sender / Reply-To field."""
    raw = record.sections.get(HEADERS_SECTION)
    if not raw or raw == b"\r\n":  # none of the fields: the blank line alone (most mail)
        return {}
    return {name.upper(): value for name, value in headers.raw_headers(raw)}


def references_of(fields: dict[str, str]) -> list[str]:
    value = fields.get("REFERENCES")
    return env.message_ids(value.strip()) or [] if value else []


def _addresses_of(fields: dict[str, str], name: str) -> list[dict[str, Any]] | None:
    value = fields.get(name)
    if value is None:
        return None
    parsed = headers.parse_form("asAddresses", value)
    return parsed if isinstance(parsed, list) and parsed else None


# Memos of pure conversions that repeat from message to message (correspondents, the
# subjects of a conversation); bounded, shared by every account (no account data in them).
_MEMO: Final = 4096


@functools.lru_cache(maxsize=_MEMO)
def _address(address: Address) -> dict[str, Any]:
    """One ENVELOPE address (not a group marker) in JMAP form; callers copy it."""
    [converted] = env.addresses_from_envelope((address,)) or [{}]
    return converted


def _addresses(field: Sequence[Address] | None) -> list[dict[str, Any]] | None:
    """``env.addresses_from_envelope``, each address converted once per memo lifetime."""
    if not field:
        return None
    if any(a.host is None for a in field):  # group syntax: the full conversion
        return env.addresses_from_envelope(tuple(field))
    return [dict(_address(a)) for a in field]


@functools.lru_cache(maxsize=_MEMO)
def _subject(raw: str) -> tuple[str, str]:
    """(``subject`` as text, its base subject case-folded) of an ENVELOPE subject."""
    subject = env.subject_from_envelope(Envelope(None, raw, (), (), (), (), (), (), None, None))
    assert subject is not None  # a Subject was there
    return subject, env.base_subject(subject).casefold()


_ATTACHMENT: dict[tuple[Any, ...], bool] = {}  # _shape(bodystructure) → hasAttachment


def _named(bs: BodyStructure) -> bool:
    """Whether the part has an EmailBodyPart ``name``.  Only a ``filename`` or ``name``
    parameter (RFC 2231 pieces included) can give one, so most parts are answered without
    assembling and decoding their parameters."""
    for key in bs.params:
        if key[:4] == "name":
            break
    else:
        for key in bs.disposition_params:
            if key[:8] == "filename":
                break
        else:
            return False
    return (
        tree.filename_from_params(list(bs.disposition_params.items()), list(bs.params.items()))
        is not None
    )


def _shape(bs: BodyStructure) -> tuple[Any, ...]:
    """What RFC 8621 §4.1.4 reads of a BODYSTRUCTURE to decide ``hasAttachment``: each
    part's type, disposition, whether it has a name, and a multipart's parts (an attached
    message's own parts are not descended); a mailbox holds few such shapes."""
    if bs.type == "multipart":
        return (bs.type, bs.subtype, bs.disposition, _named(bs), *map(_shape, bs.parts))
    return (bs.type, bs.subtype, bs.disposition, _named(bs))


def _has_attachment(bs: BodyStructure) -> bool:
    """``env.has_attachment_from_bodystructure``, computed once per shape."""
    key = _shape(bs)
    found = _ATTACHMENT.get(key)
    if found is None:
        found = env.has_attachment_from_bodystructure(bs)
        if len(_ATTACHMENT) >= _MEMO:
            _ATTACHMENT.clear()
        _ATTACHMENT[key] = found
    return found


# The usual Date of an ENVELOPE, "Tue, 1 Jul 2003 10:52:37 +0200", with values that every
# month and zone allow (the day at most 28): its sentAt is a rearrangement of the digits.
# Anything else takes the general asDate path.
_PLAIN_DATE: Final = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(0?[1-9]|1[0-9]|2[0-8]) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]) ([+-](?:[01][0-9]|2[0-3]))([0-5][0-9])",
    re.ASCII,
)
_MONTH_NUMBERS: Final = {
    name: f"{index:02d}"
    for index, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _sent_at(envelope: Envelope) -> str | None:
    """``env.sent_at``, without its general parser for the usual form of the date."""
    date = envelope.date
    plain = _PLAIN_DATE.fullmatch(date) if date is not None else None
    if plain is None:
        return env.sent_at(envelope)
    day, month, year, hour, minute, second, zone_hours, zone_minutes = plain.groups()
    return (
        f"{year}-{_MONTH_NUMBERS[month]}-{day.zfill(2)}T{hour}:{minute}:{second}"
        f"{zone_hours}:{zone_minutes}"
    )


# One msg-id alone, with nothing that asMessageIds would strip or skip (white space,
# comments, more brackets, 8-bit or control octets): its id is what the brackets hold.
_ONE_MESSAGE_ID: Final = re.compile(r"<([\x21-\x27\x29-\x3b\x3d\x3f-\x7e]+)>", re.ASCII)


def _message_ids(value: str | None) -> list[str] | None:
    """``env.message_ids``, without its general parser for a single plain msg-id."""
    if not value:
        return None  # as parse_record always treated an empty ENVELOPE string
    one = _ONE_MESSAGE_ID.fullmatch(value)
    return [one.group(1)] if one is not None else env.message_ids(value)


def parse_record(record: FetchRecord, account_id: str) -> Parsed:
    """Build the Email row (list properties only) for a new message; its thread id (see
    :class:`Parsed`), mailboxIds and sequence numbers are the writer's to set."""
    e = record.envelope
    email_id = email_id_for(record)
    subject, base = _subject(e.subject) if e and e.subject is not None else (None, "")
    from_ = _addresses(e.from_ if e else None)
    to = _addresses(e.to if e else None)
    message_id = _message_ids(e.message_id) if e else None
    in_reply_to = _message_ids(e.in_reply_to) if e else None
    fields = extra_headers(record)
    references = references_of(fields) or None
    headers: dict[str, Any] = {
        "messageId": message_id,
        "inReplyTo": in_reply_to,
        "references": references,
        "sender": _addresses_of(fields, "SENDER"),
        "from": from_,
        "to": to,
        "cc": _addresses(e.cc if e else None),
        "bcc": _addresses(e.bcc if e else None),
        "replyTo": _addresses_of(fields, "REPLY-TO"),
        "subject": subject,
        "sentAt": _sent_at(e) if e else None,
    }
    received = int(record.internaldate.timestamp()) if record.internaldate else 0
    refs = tuple(dict.fromkeys([*(in_reply_to or []), *(references or [])]))
    upstream_thread = record.threadid or (
        f"T{record.x_gm_thrid}" if record.x_gm_thrid is not None else None
    )
    row = EmailRow(
        account_id=account_id,
        id=email_id,
        thread_id=upstream_thread or "",
        size=record.size or 0,
        received_at=received,
        sent_at=headers["sentAt"],
        subject=subject,
        sort_subject=base,
        sort_from=_first(from_),
        sort_to=_first(to),
        headers=headers,
        message_ids=list(message_id or []),
        has_attachment=_has_attachment(record.bodystructure) if record.bodystructure else False,
        preview=record.preview,
        keywords=keywords_from_flags(record.flags or ()),
    )
    own = message_id[0] if message_id else None
    return Parsed(email_id, row, own, refs, base, upstream_thread)
