"""Message Disposition Notifications (RFC 8098) built and read, for JMAP MDN (RFC 9007).

An MDN is a ``multipart/report; report-type=disposition-notification`` of two or three
parts: a human-readable text, the ``message/disposition-notification`` fields, and
optionally the original message.  Pure: bytes in, bytes or a :class:`Report` out.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate
from typing import Final

from imapjmap.mime.headers import split_header_block, unfold
from imapjmap.mime.submission import header_addresses, is_address

ACTION_MODES: Final = ("manual-action", "automatic-action")
SENDING_MODES: Final = ("mdn-sent-manually", "mdn-sent-automatically")
TYPES: Final = ("deleted", "dispatched", "displayed", "processed")
# the fields RFC 8098 §3.2 defines; any other in a report is an extension field
KNOWN_FIELDS: Final = frozenset(
    {
        "reporting-ua",
        "mdn-gateway",
        "original-recipient",
        "final-recipient",
        "original-message-id",
        "disposition",
        "error",
    }
)
_DISPOSITION_RE: Final = re.compile(
    r"\s*([A-Za-z-]+)\s*/\s*([A-Za-z-]+)\s*;\s*([A-Za-z-]+)", re.ASCII
)
_FIELD_NAME_RE: Final = re.compile(r"[!-9;-~]+", re.ASCII)  # RFC 5322 ftext


@dataclass(frozen=True, slots=True)
class Disposition:
    action_mode: str
    sending_mode: str
    type: str


@dataclass(frozen=True, slots=True)
class Report:
    """What one MDN says (the properties of RFC 9007's MDN object, in Python)."""

    disposition: Disposition
    subject: str | None = None
    text_body: str | None = None
    reporting_ua: str | None = None
    mdn_gateway: str | None = None
    original_recipient: str | None = None
    final_recipient: str | None = None
    original_message_id: str | None = None
    error: tuple[str, ...] = ()
    extension_fields: Mapping[str, str] = field(default_factory=dict)
    include_original_message: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """What an original message asks of an MDN (RFC 8098 §2)."""

    notify: tuple[str, ...]  # the Disposition-Notification-To addresses
    message_id: str | None  # the Message-ID field, with its angle brackets
    original_recipient: str | None  # the Original-Recipient field
    subject: str


def requested(raw: bytes) -> Request:
    """The MDN request of an original message (its notify list is empty when it asks none)."""
    fields, _ = split_header_block(raw, top=True)

    def first(name: str) -> str | None:
        wanted = name.lower().encode("ascii")
        for found, value in fields:
            if found.lower() == wanted:
                return unfold(value.decode("utf-8", "replace")).strip()
        return None

    # only addresses an SMTP server takes without SMTPUTF8, and that are addresses at all
    notify = [
        a
        for found in header_addresses(raw, "Disposition-Notification-To")
        for a in found
        if a.isascii() and is_address(a)
    ]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    subject = str(parsed.get("Subject", "") or "")
    return Request(
        tuple(dict.fromkeys(notify)), first("Message-ID"), first("Original-Recipient"), subject
    )


def _fields(report: Report) -> str:
    lines: list[str] = []
    if report.reporting_ua:
        lines.append(f"Reporting-UA: {report.reporting_ua}")
    if report.mdn_gateway:
        lines.append(f"MDN-Gateway: {report.mdn_gateway}")
    if report.original_recipient:
        lines.append(f"Original-Recipient: {report.original_recipient}")
    if report.final_recipient:
        lines.append(f"Final-Recipient: {report.final_recipient}")
    if report.original_message_id:
        lines.append(f"Original-Message-ID: {report.original_message_id}")
    d = report.disposition
    # RFC 8098 §3.2.6 spells the sending modes with "MDN" in capitals
    sending = d.sending_mode.replace("mdn-", "MDN-", 1)
    lines.append(f"Disposition: {d.action_mode}/{sending}; {d.type}")
    lines.extend(f"Error: {e}" for e in report.error)
    lines.extend(f"{name}: {value}" for name, value in report.extension_fields.items())
    return "".join(line + "\r\n" for line in lines)


def is_field_name(name: str) -> bool:
    """An extension field's name is an RFC 5322 field name."""
    return _FIELD_NAME_RE.fullmatch(name) is not None


def build(
    report: Report,
    *,
    sender: tuple[str, str],
    to: Sequence[str],
    original: bytes | None,
    message_id: str,
    now: float | None = None,
) -> bytes:
    """The MDN message (RFC 8098 §3), from ``sender`` (name, address) to ``to``, carrying
    ``original`` whole as its third part when the report says so.  ``report.subject`` and
    ``report.text_body`` must be set (the caller fills in defaults)."""
    smtp = email.policy.SMTP
    outer = MIMEMultipart("report", policy=smtp, report_type="disposition-notification")
    outer["From"] = formataddr(sender)
    outer["To"] = ", ".join(to)
    outer["Subject"] = report.subject or ""
    outer["Date"] = formatdate(time.time() if now is None else now)
    outer["Message-ID"] = message_id
    outer["Auto-Submitted"] = "auto-replied"  # RFC 3834: no automatic answer to it
    outer.attach(MIMEText(report.text_body or "", "plain", "utf-8", policy=smtp))
    notification = MIMEBase("message", "disposition-notification", policy=smtp)
    notification.set_payload(_fields(report))
    outer.attach(notification)
    if original is not None:
        # compat32 keeps the original's octets (8-bit ones too) as they were
        outer.attach(MIMEMessage(email.message_from_bytes(original, policy=email.policy.compat32)))
    return outer.as_bytes()


def _disposition(value: str) -> Disposition | None:
    found = _DISPOSITION_RE.match(value)
    if found is None:
        return None
    action, sending, type_ = (g.lower() for g in found.groups())
    if action not in ACTION_MODES or sending not in SENDING_MODES or type_ not in TYPES:
        return None
    return Disposition(action, sending, type_)


def _notification_fields(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        block = payload[0]  # the email package reads message/* bodies as a message
        return [(k, unfold(str(v)).strip()) for k, v in block.items()]
    text = payload if isinstance(payload, str) else ""
    block = email.message_from_string(text.lstrip("\r\n"), policy=email.policy.compat32)
    return [(k, unfold(str(v)).strip()) for k, v in block.items()]


def parse(raw: bytes) -> Report | None:
    """The report of an MDN message, or None when ``raw`` is not one (RFC 9007 §2.2)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "")).lower() != "disposition-notification":
        return None
    payload = message.get_payload()
    if not isinstance(payload, list):
        return None
    parts = [p for p in payload if isinstance(p, Message)]
    notification = next(
        (p for p in parts if p.get_content_type() == "message/disposition-notification"), None
    )
    if notification is None:
        return None
    values: dict[str, list[str]] = {}
    extension: dict[str, str] = {}
    for name, value in _notification_fields(notification):
        if name.lower() in KNOWN_FIELDS:
            values.setdefault(name.lower(), []).append(value)
        else:
            extension[name] = value
    disposition = _disposition(values.get("disposition", [""])[0])
    if disposition is None:
        return None
    text = next(
        (p for p in parts if p.get_content_type() == "text/plain" and p is not notification),
        None,
    )
    text_body = text.get_content() if isinstance(text, EmailMessage) else None

    def one(name: str) -> str | None:
        found = values.get(name)
        return found[0] if found else None

    return Report(
        disposition=disposition,
        subject=str(message["Subject"]) if message["Subject"] is not None else None,
        text_body=text_body,
        reporting_ua=one("reporting-ua"),
        mdn_gateway=one("mdn-gateway"),
        original_recipient=one("original-recipient"),
        final_recipient=one("final-recipient"),
        original_message_id=one("original-message-id"),
        error=tuple(values.get("error", ())),
        extension_fields=extension,
        include_original_message=any(
            p.get_content_type() in ("message/rfc822", "message/global") for p in parts
        ),
    )
