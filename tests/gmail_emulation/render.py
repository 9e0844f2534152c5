"""FETCH data of the emulation: ENVELOPE, BODYSTRUCTURE and BODY[section] (RFC 3501 §7.4.2),
computed from a message's bytes with the standard library's ``email`` package."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import re

from tests.gmail_emulation.wire import plist, quote

_HEADER_FIELDS = re.compile(r"HEADER\.FIELDS(\.NOT)? \(([^)]*)\)", re.IGNORECASE)


def _parse(raw: bytes) -> email.message.Message:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(header block with its blank line, body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0:
            return raw[: at + len(sep)], raw[at + len(sep) :]
    return raw, b""


def _addresses(value: str | None) -> bytes:
    if not value:
        return b"NIL"
    out: list[bytes] = []
    for name, address in email.utils.getaddresses([value]):
        if not address and not name:
            continue
        mailbox, _, host = address.rpartition("@") if "@" in address else (address, "", "")
        out.append(
            plist([quote(name or None), b"NIL", quote(mailbox or None), quote(host or None)])
        )
    return plist(out) if out else b"NIL"


def envelope(raw: bytes) -> bytes:
    msg = _parse(_split(raw)[0])

    def get(name: str) -> str | None:
        value = msg.get(name)
        return None if value is None else re.sub(r"\r?\n[ \t]", " ", str(value))

    sender = get("Sender") or get("From")
    reply_to = get("Reply-To") or get("From")
    return plist(
        [
            quote(get("Date")),
            quote(get("Subject")),
            _addresses(get("From")),
            _addresses(sender),
            _addresses(reply_to),
            _addresses(get("To")),
            _addresses(get("Cc")),
            _addresses(get("Bcc")),
            quote(get("In-Reply-To")),
            quote(get("Message-ID")),
        ]
    )


def _params(part: email.message.Message) -> bytes:
    params = list((part.get_params(header="content-type") or [])[1:])
    if not params:
        return b"NIL"
    return plist([quote(str(k).upper()) + b" " + quote(str(v)) for k, v in params])


def _disposition(part: email.message.Message) -> bytes:
    value = part.get("Content-Disposition")
    if value is None:
        return b"NIL"
    kind = str(value).split(";")[0].strip()
    params = (part.get_params(header="content-disposition") or [])[1:]
    rendered = plist([quote(str(k).upper()) + b" " + quote(str(v)) for k, v in params])
    return plist([quote(kind.upper()), rendered if params else b"NIL"])


def bodystructure(raw: bytes) -> bytes:
    return _structure(_parse(raw), raw)


def _structure(part: email.message.Message, raw: bytes) -> bytes:
    if part.is_multipart():
        children = _children(part)
        inner = b"".join(_structure(child, child.as_bytes()) for child in children)
        return (
            b"("
            + inner
            + b" "
            + quote(part.get_content_subtype().upper())
            + b" "
            + _params(part)
            + b" NIL NIL NIL)"
        )
    body = _split(raw)[1] if raw else b""
    fields = [
        quote(part.get_content_maintype().upper()),
        quote(part.get_content_subtype().upper()),
        _params(part),
        quote(part.get("Content-ID")),
        quote(part.get("Content-Description")),
        quote(str(part.get("Content-Transfer-Encoding", "7BIT")).upper()),
        str(len(body)).encode(),
    ]
    if part.get_content_maintype() == "text":
        fields.append(str(body.count(b"\n")).encode())
    elif part.get_content_type() == "message/rfc822":
        fields += [envelope(body), bodystructure(body), str(body.count(b"\n")).encode()]
    fields += [b"NIL", _disposition(part), b"NIL", b"NIL"]
    return plist(fields)


def _children(part: email.message.Message) -> list[email.message.Message]:
    payload = part.get_payload()
    assert isinstance(payload, list)
    return [child for child in payload if isinstance(child, email.message.Message)]


def section(raw: bytes, spec: str) -> bytes:
    """The bytes of ``BODY[spec]`` for the sections the proxy and tests use."""
    header, body = _split(raw)
    upper = spec.upper()
    if upper == "":
        return raw
    if upper == "HEADER":
        return header
    if upper == "TEXT":
        return body
    match = _HEADER_FIELDS.fullmatch(spec)
    if match is not None:
        names = {n.lower() for n in match.group(2).split()}
        keep = match.group(1) is None
        lines = re.split(rb"\r?\n(?![ \t])", header.rstrip(b"\r\n"))
        chosen = [
            line
            for line in lines
            if line and (line.split(b":", 1)[0].strip().decode().lower() in names) == keep
        ]
        return b"".join(line + b"\r\n" for line in chosen) + b"\r\n"
    if upper.isdigit() or re.fullmatch(r"[\d.]+", upper):
        return _part(raw, [int(x) for x in upper.split(".")])
    raise ValueError(f"section {spec!r} is not emulated")


def _part(raw: bytes, path: list[int]) -> bytes:
    msg = _parse(raw)
    for number in path:
        if not msg.is_multipart():
            return _split(msg.as_bytes())[1] if number == 1 else b""
        msg = _children(msg)[number - 1]
    return _split(msg.as_bytes())[1]
