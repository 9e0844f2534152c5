"""Modified UTF-7 for IMAP mailbox names (RFC 3501 §5.1.3).

IMAP4rev1 mailbox names are 7-bit: printable US-ASCII stands for itself, except ``&`` which
is written ``&-``; every other run of characters is UTF-16BE, base64-encoded with ``,``
instead of ``/``, without padding, between ``&`` and ``-``.  ``Entwürfe`` travels as
``Entw&APw-rfe``.

Servers that offer UTF8=ACCEPT (RFC 6855) may send raw UTF-8 names instead.  A name that
contains any 8-bit byte cannot be modified UTF-7, so :func:`decode_mailbox_name` reads it
as UTF-8 as it is; that is harmless and saves a round trip through ENABLE.
"""

from __future__ import annotations

import base64
import binascii
import re

from imapjmap.errors import ImapProtocolViolation

# Characters that represent themselves: printable US-ASCII (0x20-0x7e).  "&" is printable
# too but is the shift character, so it is handled apart.
_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")
# One shifted run: "&", modified base64, "-".  "&-" (empty run) is the escaped "&".
_SHIFTED = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode_mailbox_name(name: str) -> str:
    """Encode a mailbox name in modified UTF-7.

    Args:
        name: the name as the user sees it, e.g. ``"Entwürfe"``.

    Returns:
        The 7-bit form to put on the wire (still to be quoted as an astring).

    Raises:
        ValueError: the name holds a lone surrogate, which has no UTF-16 form.
    """
    out: list[str] = []
    pos = 0
    while pos < len(name):
        direct = _DIRECT.match(name, pos)
        if direct:
            out.append(direct.group())
            pos = direct.end()
        elif name[pos] == "&":
            out.append("&-")
            pos += 1
        else:
            end = pos
            while end < len(name) and not ("\x20" <= name[end] <= "\x7e"):
                end += 1
            out.append(_encode_run(name[pos:end]))
            pos = end
    return "".join(out)


def _encode_run(run: str) -> str:
    try:
        utf16 = run.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise ValueError(f"mailbox name holds a lone surrogate: {run!r}") from exc
    b64 = base64.b64encode(utf16).decode("ascii").rstrip("=").replace("/", ",")
    return f"&{b64}-"


def decode_mailbox_name(raw: str | bytes) -> str:
    """Decode a mailbox name received from the server.

    Args:
        raw: the name as it came off the wire (after astring unquoting).  ``bytes`` with
            8-bit content and ``str`` with non-ASCII characters are taken as UTF-8 names
            from a UTF8=ACCEPT server and returned unchanged.

    Returns:
        The name as the user sees it.

    Raises:
        ImapProtocolViolation: an unterminated or malformed ``&...-`` run, UTF-16 that does
            not decode, or bytes / surrogate-escaped text that is not valid UTF-8.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImapProtocolViolation(f"mailbox name is not UTF-8: {raw[:60]!r}") from exc
    else:
        text = raw
    if not text.isascii():
        # Raw UTF-8 (UTF8=ACCEPT).  Text that came through surrogateescape still carries
        # the invalid bytes as lone surrogates; those cannot be a name.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ImapProtocolViolation(f"mailbox name is not UTF-8: {text[:60]!r}") from exc
        return text
    if "&" not in text:
        return text
    return _decode_shifted(text)


def _decode_shifted(text: str) -> str:
    out: list[str] = []
    pos = 0
    while True:
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:amp])
        run = _SHIFTED.match(text, amp)
        if run is None:
            raise ImapProtocolViolation(f"bad modified UTF-7 in mailbox name: {text[:60]!r}")
        out.append(_decode_run(run.group(1), text))
        pos = run.end()


def _decode_run(b64: str, text: str) -> str:
    if not b64:
        return "&"
    # Leftover bits that are not zero, or printable ASCII that should have been direct,
    # are tolerated: decoding them is unambiguous and rejecting them helps no one.
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    try:
        utf16 = base64.b64decode(padded, validate=True)
        if len(utf16) % 2:
            raise ValueError("odd number of UTF-16 bytes")
        return utf16.decode("utf-16-be")
    except (binascii.Error, ValueError) as exc:
        raise ImapProtocolViolation(
            f"bad modified UTF-7 in mailbox name ({exc}): {text[:60]!r}"
        ) from exc
