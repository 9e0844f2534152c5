"""Email properties from the IMAP records the sync engine caches (no message octets).

Each function gives the same answer as the full-message path in :mod:`imapjmap.mime.email`
for the same message, as far as the IMAP record carries the information:

- ENVELOPE strings are header values as on the wire (RFC 2047 still encoded, 8-bit octets
  surrogate-escaped by :mod:`imapjmap.imap.parse`); they go through the same decoders.
- ENVELOPE address lists mark groups with a start address (``host`` NIL, ``mailbox`` = the
  group name) and an end address (``mailbox`` and ``host`` NIL), RFC 3501 §7.4.2.
- :func:`has_attachment_from_bodystructure` runs the RFC 8621 §4.1.4 decomposition on the
  BODYSTRUCTURE tree, with the part ``name`` computed by the same function as for a parsed
  message.

:func:`base_subject` is RFC 5256 §2.1, for the ``subject`` sort and for threading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from imapjmap.imap.models import Address, BodyStructure, Envelope
from imapjmap.jmap.wire import Json
from imapjmap.mime.addresses import display_name
from imapjmap.mime.body import decompose, has_attachment
from imapjmap.mime.headers import as_date, as_message_ids, as_text, decode_raw
from imapjmap.mime.tree import filename_from_params

__all__ = [
    "addresses_from_envelope",
    "base_subject",
    "grouped_addresses_from_envelope",
    "has_attachment_from_bodystructure",
    "message_ids",
    "sent_at",
    "subject_from_envelope",
]


def _wire(value: str) -> str:
    """An ENVELOPE string as the full-message path would see the header octets."""
    return decode_raw(value.encode("utf-8", "surrogateescape"))


def _mailbox(address: Address) -> dict[str, Json]:
    mailbox = _wire(address.mailbox or "")
    host = _wire(address.host or "")
    return {
        "name": display_name(_wire(address.name)) if address.name else None,
        "email": f"{mailbox}@{host}" if host else mailbox,
    }


def grouped_addresses_from_envelope(addrs: tuple[Address, ...]) -> list[dict[str, Json]] | None:
    """``asGroupedAddresses`` from an ENVELOPE address list; None for NIL (no header)."""
    if not addrs:
        return None
    groups: list[dict[str, Json]] = []
    in_group = False
    for address in addrs:
        if address.host is None and address.mailbox is not None:  # group start
            groups.append({"name": display_name(_wire(address.mailbox)), "addresses": []})
            in_group = True
        elif address.host is None:  # group end
            in_group = False
        else:
            if not in_group and (not groups or groups[-1].get("_open") is not True):
                groups.append({"name": None, "addresses": [], "_open": True})
            groups[-1]["addresses"].append(_mailbox(address))
    for group in groups:
        group.pop("_open", None)
    return groups


def addresses_from_envelope(addrs: tuple[Address, ...]) -> list[dict[str, Json]] | None:
    """``asAddresses`` (``from``, ``to``, ...) from an ENVELOPE address list.

    Group markers are dropped, display names are RFC 2047 decoded, NFC'd and trimmed.
    None when the list is NIL (the header is absent); ``[]`` for only empty groups.
    """
    groups = grouped_addresses_from_envelope(addrs)
    if groups is None:
        return None
    return [a for g in groups for a in g["addresses"]]


def subject_from_envelope(env: Envelope) -> str | None:
    """``subject`` (asText) from the ENVELOPE; None when there is no Subject."""
    return None if env.subject is None else as_text(_wire(env.subject))


def sent_at(env: Envelope) -> str | None:
    """``sentAt`` (asDate, offset kept) from the ENVELOPE date; None if absent or invalid."""
    return None if env.date is None else as_date(_wire(env.date))


def message_ids(value: str | None) -> list[str] | None:
    """``messageId`` / ``inReplyTo`` (asMessageIds) from an ENVELOPE string."""
    return None if value is None else as_message_ids(_wire(value))


@dataclass(frozen=True, slots=True)
class _Node:
    """A BODYSTRUCTURE node as the §4.1.4 algorithm sees a part."""

    type: str
    disposition: str | None
    name: str | None
    sub_parts: tuple[_Node, ...]


def _node(structure: BodyStructure) -> _Node:
    type_ = f"{structure.type}/{structure.subtype}".lower()
    children: tuple[_Node, ...] = ()
    if structure.is_multipart:
        children = tuple(_node(child) for child in structure.parts)
        if not children:  # as the parser reads a multipart without parts
            type_ = "text/plain"
    # message/rfc822 keeps its encapsulated body in ``parts``: not descended (§4.1.4)
    return _Node(
        type=type_,
        disposition=structure.disposition.lower() if structure.disposition else None,
        name=filename_from_params(
            list(structure.disposition_params.items()), list(structure.params.items())
        ),
        sub_parts=children,
    )


def has_attachment_from_bodystructure(bs: BodyStructure) -> bool:
    """``hasAttachment`` from a BODYSTRUCTURE, equal to the full-message answer."""
    _text, _html, attachments = decompose(_node(bs))
    return has_attachment(attachments)


# --- RFC 5256 §2.1 base subject ------------------------------------------------------------

_BLOB: Final = re.compile(r"\[[^\[\]]*\][ \t]*")
_REFWD: Final = re.compile(r"(?:re|fwd?)[ \t]*(?:\[[^\[\]]*\][ \t]*)?:", re.IGNORECASE)
_SPACES: Final = re.compile(r"[ \t\r\n]+")


def _strip_trailers(subject: str) -> str:
    """Step (2): trailing ``(fwd)`` and white space, as often as they occur."""
    end = len(subject)
    while end:
        if subject[end - 1] in " \t":
            end -= 1
        elif subject[max(end - 5, 0) : end].lower() == "(fwd)":
            end -= 5
        else:
            break
    return subject[:end]


def _leader_end(subject: str, pos: int) -> int:
    """Where a subj-leader (``*subj-blob subj-refwd / WSP``) starting at ``pos`` ends, or
    ``pos``.  A refwd can only follow the whole run of blobs (the next one starts with
    ``[``), so the run is scanned once instead of backtracking over every prefix of it."""
    if subject[pos : pos + 1] in (" ", "\t"):
        return pos + 1
    end = pos
    while (blob := _BLOB.match(subject, end)) is not None:
        end = blob.end()
    refwd = _REFWD.match(subject, end)
    return pos if refwd is None else refwd.end()


def _strip_leaders(subject: str) -> str:
    """Steps (3)-(5): subj-leader prefixes, then subj-blobs unless nothing would remain."""
    last = len(subject.rstrip(" \t"))  # a subj-base remains while something is before this
    pos = 0
    while True:
        before = pos
        while (end := _leader_end(subject, pos)) > pos:
            pos = end
        while (blob := _BLOB.match(subject, pos)) is not None and blob.end() < last:
            pos = blob.end()
        if pos == before:
            return subject[pos:]


def base_subject(subject: str | None) -> str:
    """The RFC 5256 §2.1 base subject of a decoded (``asText``) subject.

    (1) white space runs become one space; (2) trailing ``(fwd)`` and white space go;
    (3)-(5) leading ``Re:``, ``Fw:``, ``Fwd:`` (with ``[blob]``s) and white space go, and a
    leading ``[blob]`` unless it is all that is left; (6) a ``[fwd: ...]`` wrapper is
    unwrapped and the steps repeat.  Case is kept: comparison is the collation's job.
    Linear in the length of the subject.
    """
    text = _SPACES.sub(" ", subject or "")
    while True:
        text = _strip_leaders(_strip_trailers(text))
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            continue
        return text
