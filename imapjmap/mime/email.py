"""The message-derived Email properties, as used by Email/get and Email/parse (RFC 8621 §4).

:func:`email_properties` returns exactly the requested properties among those derived from
the message octets: the convenience header properties, ``headers``, ``header:*`` and the body
properties.  Metadata (``id``, ``blobId``, ``threadId``, ``mailboxIds``, ``keywords``,
``size``, ``receivedAt``) belongs to the store and is skipped here; the caller merges it.

Work is lazy: a request for header properties only splits the header block; the MIME tree
is built only for body properties (and then its root's header fields serve the headers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from imapjmap.jmap.wire import Json
from imapjmap.mime.body import (
    ParsedBody,
    analyse,
    body_values,
    has_attachment,
    part_json,
    preview,
)
from imapjmap.mime.headers import decode_raw, header_property, raw_headers, select_header

__all__ = [
    "BODY_PART_PROPERTIES",
    "CONVENIENCE_HEADER_PROPERTIES",
    "DEFAULT_BODY_PROPERTIES",
    "DEFAULT_EMAIL_PROPERTIES",
    "DEFAULT_PARSE_PROPERTIES",
    "EMAIL_PROPERTIES",
    "METADATA_PROPERTIES",
    "check_body_properties",
    "check_properties",
    "email_properties",
]

METADATA_PROPERTIES: Final = (
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
)
"""Properties of the stored Email, not of the message octets (§4.1.1): not computed here."""

CONVENIENCE_HEADER_PROPERTIES: Final[dict[str, tuple[str, str, bool]]] = {
    "messageId": ("Message-ID", "asMessageIds", False),
    "inReplyTo": ("In-Reply-To", "asMessageIds", False),
    "references": ("References", "asMessageIds", False),
    "sender": ("Sender", "asAddresses", False),
    "from": ("From", "asAddresses", False),
    "to": ("To", "asAddresses", False),
    "cc": ("Cc", "asAddresses", False),
    "bcc": ("Bcc", "asAddresses", False),
    "replyTo": ("Reply-To", "asAddresses", False),
    "subject": ("Subject", "asText", False),
    "sentAt": ("Date", "asDate", False),
}
"""Convenience property → the (header, form, all) it is identical to (§4.1.3)."""

BODY_EMAIL_PROPERTIES: Final = (
    "bodyStructure",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
    "hasAttachment",
    "preview",
)

EMAIL_PROPERTIES: Final = (
    *METADATA_PROPERTIES,
    *CONVENIENCE_HEADER_PROPERTIES,
    "headers",
    *BODY_EMAIL_PROPERTIES,
)
"""Every named Email property; ``header:*`` properties come on top."""

DEFAULT_EMAIL_PROPERTIES: Final = (
    *METADATA_PROPERTIES,
    *CONVENIENCE_HEADER_PROPERTIES,
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
)
"""Email/get with ``properties`` null (§4.2, EML-GET-01), in the RFC's order."""

DEFAULT_PARSE_PROPERTIES: Final = DEFAULT_EMAIL_PROPERTIES[len(METADATA_PROPERTIES) :]
"""Email/parse with ``properties`` null (§4.9): the Email/get default without metadata."""

DEFAULT_BODY_PROPERTIES: Final = (
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
)
"""``bodyProperties`` when omitted (§4.2)."""

BODY_PART_PROPERTIES: Final = (
    "partId",
    "blobId",
    "size",
    "headers",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
)
"""Every named EmailBodyPart property; ``header:*`` properties come on top."""


def _check(props: Sequence[str], known: Sequence[str], what: str) -> None:
    for prop in props:
        if not isinstance(prop, str):
            raise ValueError(f"{what} must be strings, got {prop!r}")
        if prop.startswith("header:"):
            header_property(prop)  # raises ValueError naming the property
        elif prop not in known:
            raise ValueError(f"unknown {what[:-1]} {prop!r}")


def check_properties(props: Sequence[str]) -> None:
    """Validate an Email/get or Email/parse ``properties`` list.

    Raises:
        ValueError: naming the first unknown or malformed property, or a ``header:*`` form
            not allowed for its header (``invalidArguments``).
    """
    _check(props, EMAIL_PROPERTIES, "properties")


def check_body_properties(props: Sequence[str]) -> None:
    """Validate a ``bodyProperties`` list (same rules, EmailBodyPart properties)."""
    _check(props, BODY_PART_PROPERTIES, "bodyProperties")


def email_properties(
    raw: bytes,
    *,
    properties: Sequence[str],
    body_properties: Sequence[str],
    fetch_text: bool,
    fetch_html: bool,
    fetch_all: bool,
    max_body_value_bytes: int,
    blob_prefix: str,
) -> dict[str, Json]:
    """The requested message-derived properties of the message ``raw``.

    Args:
        raw: the whole RFC 5322 message.
        properties: validated with :func:`check_properties`; metadata names are skipped.
        body_properties: validated with :func:`check_body_properties`.
        fetch_text, fetch_html, fetch_all, max_body_value_bytes: the Email/get arguments
            that shape ``bodyValues`` (§4.2).
        blob_prefix: part blobIds are ``f"{blob_prefix}_{partId}"``.

    Never raises on malformed messages (only on unvalidated property names).
    """
    body: ParsedBody | None = None
    if any(prop in BODY_EMAIL_PROPERTIES for prop in properties):
        body = analyse(raw)
    headers: list[tuple[str, str]] | None = None

    def get_headers() -> list[tuple[str, str]]:
        nonlocal headers
        if headers is None:  # the root part already split the same block: reuse it
            fields = body.root.fields if body is not None else None
            headers = (
                raw_headers(raw)
                if fields is None
                else [(n.decode("ascii"), decode_raw(v)) for n, v in fields]
            )
        return headers

    def values(parsed: ParsedBody) -> dict[str, Json]:
        return body_values(
            parsed,
            fetch_text=fetch_text,
            fetch_html=fetch_html,
            fetch_all=fetch_all,
            max_bytes=max_body_value_bytes,
        )

    out: dict[str, Json] = {}
    for prop in properties:
        if prop in CONVENIENCE_HEADER_PROPERTIES:
            out[prop] = select_header(get_headers(), *CONVENIENCE_HEADER_PROPERTIES[prop])
        elif prop == "headers":
            out[prop] = [{"name": n, "value": v} for n, v in get_headers()]
        elif prop.startswith("header:"):
            out[prop] = select_header(get_headers(), *header_property(prop))
        elif body is not None and prop in BODY_EMAIL_PROPERTIES:
            out[prop] = _body_property(prop, body, body_properties, blob_prefix, values)
    return out


def _body_property(
    prop: str,
    body: ParsedBody,
    body_properties: Sequence[str],
    blob_prefix: str,
    values: Callable[[ParsedBody], dict[str, Json]],
) -> Json:
    if prop == "bodyStructure":
        return part_json(body.root, body_properties, blob_prefix, structure=True)
    if prop == "hasAttachment":
        return has_attachment(body.attachments)
    if prop == "preview":
        return preview(body.text_body)
    if prop == "bodyValues":
        return values(body)
    chosen = {
        "textBody": body.text_body,
        "htmlBody": body.html_body,
        "attachments": body.attachments,
    }[prop]
    return [part_json(p, body_properties, blob_prefix) for p in chosen]
