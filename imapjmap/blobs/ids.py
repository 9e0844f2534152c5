"""Blob ids of Emails and of their body parts (RFC 8620 §6, RFC 8621 §4.1.1, CORE-BIN-05).

Blobs here are never stored: a blob id names where its octets are, and the download view
(or Email/parse, Email/import ...) fetches the message again to serve it
(:mod:`imapjmap.blobs.content` reads every kind of blob).  Pure: no I/O.

The scheme (every blob id is a valid JMAP Id, CORE-TYPE-01):

- the whole message of email ``E``: ``"G" + E``;
- the decoded content of body part ``p`` of email ``E``: ``"P" + E + "_" + p'`` where
  ``p'`` is the partId with each ``.`` written as ``-`` (partIds are section numbers such as
  ``1`` or ``2.1.3``: digits and dots only).

Why it cannot be misread: the first letter says which kind the id is, so a message blob is
never taken for a part blob whatever its email id holds.  Inside a part blob the email id
may itself contain ``_`` and ``-`` (RFC 8474 EMAILIDs may), but ``p'`` contains neither
``_`` nor anything but digits and ``-``, so the LAST ``_`` is always the separator.
A blob id longer than 255 octets cannot be formed (an email id near the Id size limit):
:func:`part_blob_id` raises ``ValueError`` and the caller leaves that part without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from imapjmap.jmap.wire import is_id

MESSAGE_PREFIX: Final = "G"
PART_PREFIX: Final = "P"

_PART_ID: Final = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_PART_TOKEN: Final = re.compile(r"[0-9]+(?:-[0-9]+)*")


@dataclass(frozen=True, slots=True)
class BlobRef:
    """What a blob id names: a whole message (``part_id`` None) or one of its parts."""

    email_id: str
    part_id: str | None = None


def message_blob_id(email_id: str) -> str:
    """The blob id of an email's raw RFC 5322 octets."""
    return MESSAGE_PREFIX + email_id


def part_blob_id(email_id: str, part_id: str) -> str:
    """The blob id of one body part's decoded content.

    Raises:
        ValueError: ``part_id`` is not a section number, or the result would not be an Id.
    """
    if not _PART_ID.fullmatch(part_id):
        raise ValueError(f"not a section-number partId: {part_id[:40]!r}")
    blob_id = PART_PREFIX + email_id + "_" + part_id.replace(".", "-")
    if not is_id(blob_id):
        raise ValueError("the part blob id would not be a valid Id")
    return blob_id


def parse_blob_id(blob_id: str) -> BlobRef | None:
    """The email (and part) a blob id names, or None when it is not one of ours."""
    if not is_id(blob_id) or len(blob_id) < 2:
        return None
    kind, rest = blob_id[0], blob_id[1:]
    if kind == MESSAGE_PREFIX:
        return BlobRef(rest)
    if kind == PART_PREFIX:
        email_id, sep, token = rest.rpartition("_")
        if sep and email_id and _PART_TOKEN.fullmatch(token):
            return BlobRef(email_id, token.replace("-", "."))
    return None
