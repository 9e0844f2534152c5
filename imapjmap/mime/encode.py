"""Wire encoders for building messages: the inverse of :mod:`imapjmap.mime.codec`.

Pure functions from text to RFC 5322/MIME octets.  Every encoding here is chosen so that the
readers of this package (:mod:`.headers`, :mod:`.addresses`, :mod:`.tree`) give the input
back (see ``tests/unit/test_mime_build.py``).

Header values are produced as *chunks*: strings whose first character, when it is a space
or a tab, is a legal folding point (RFC 5322 §2.2.3).  :func:`fold` joins them into lines of
at most 78 characters where it can, and never more than 998 octets (§2.1.1).

Decisions:

1. Encoded words (RFC 2047) are UTF-8, Q or B, whichever is shorter for the whole run, at
   most 75 characters each, never splitting a character.  The Q alphabet is the one RFC
   2047 §5(3) allows inside a phrase, so the same words serve unstructured text and
   display names.
2. Unstructured text encodes only the runs of words that need it (non-ASCII, or that look
   like an encoded word, or too long to fit a line), so ASCII subjects stay readable.
3. Parameters (RFC 2045 §5.1) are tokens, quoted strings, or RFC 2231 ``key*=utf-8''...``
   (split into ``key*0*``, ``key*1*`` ... continuations when long) for non-ASCII values.
4. Bodies: text is 7bit when it can be, else quoted-printable or base64, whichever is
   shorter; other content is base64 (``message/*`` is 7bit/8bit, RFC 2046 §5.2.1).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Sequence
from typing import Final

__all__ = [
    "Encoded",
    "encode_body",
    "encoded_words",
    "fold",
    "param_chunks",
    "phrase_chunks",
    "rfc5322_date",
    "unstructured_chunks",
]

MAX_LINE: Final = 998  # octets, without the CRLF (RFC 5322 §2.1.1)
SOFT_LINE: Final = 78
_PAYLOAD: Final = 75 - len("=?utf-8?q??=")  # room for encoded text in one encoded word
_LONG_WORD: Final = 900  # a word longer than this cannot share a line with a field name

# RFC 2047 §5(3): the characters a Q-encoded word may carry unescaped inside a phrase.
_Q_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


class HeaderTooLong(ValueError):
    """A header line cannot be folded to 998 octets."""


# --- RFC 2047 encoded words -----------------------------------------------------------------


def _q_cost(octet: int) -> int:
    return 1 if octet in _Q_SAFE or octet == 0x20 else 3


def _q(data: bytes) -> str:
    out = []
    for octet in data:
        if octet in _Q_SAFE:
            out.append(chr(octet))
        elif octet == 0x20:
            out.append("_")
        else:
            out.append(f"={octet:02X}")
    return "".join(out)


def _word(data: bytes, use_q: bool) -> str:
    if use_q:
        return f"=?utf-8?q?{_q(data)}?="
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="


def encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 encoded words of at most 75 characters each (decision 1).

    Decoding the words and dropping the white space between them gives ``text`` back.
    """
    data = text.encode("utf-8", "surrogatepass")
    use_q = sum(_q_cost(b) for b in data) <= 4 * -(-len(data) // 3)
    words: list[str] = []
    current = bytearray()
    cost = 0
    for char in text:
        octets = char.encode("utf-8", "surrogatepass")
        add = sum(_q_cost(b) for b in octets) if use_q else 0
        size = cost + add if use_q else 4 * -(-(len(current) + len(octets)) // 3)
        if current and size > _PAYLOAD:
            words.append(_word(bytes(current), use_q))
            current, cost = bytearray(), 0
        current += octets
        cost += add
    if current or not words:
        words.append(_word(bytes(current), use_q))
    return words


# --- header values as chunks ------------------------------------------------------------------

_WSP_RUN: Final = re.compile(r"([ \t]+)")


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word or len(word) > _LONG_WORD


def unstructured_chunks(text: str) -> list[str]:
    """Chunks of an unstructured value (Subject, Comments, asText forms; decision 2).

    ``text`` must already be one line without control characters other than HTAB, and
    without white space at either end: unfolding and RFC 2047 decoding the result gives
    it back.  The first chunk starts with the space that follows the colon.
    """
    pieces = _WSP_RUN.split(text)
    words, spaces = pieces[0::2], pieces[1::2]
    chunks: list[str] = []
    index = 0
    while index < len(words):
        lead = spaces[index - 1] if index else " "
        if not _needs_encoding(words[index]):
            chunks.append(lead + words[index])
            index += 1
            continue
        end = index
        while end + 1 < len(words) and _needs_encoding(words[end + 1]):
            end += 1
        run = words[index] + "".join(spaces[k] + words[k + 1] for k in range(index, end))
        encoded = encoded_words(run)
        chunks.append(lead + encoded[0])
        chunks.extend(" " + word for word in encoded[1:])
        index = end + 1
    return chunks


_ATOM: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


def phrase_chunks(name: str) -> list[str]:
    """A display name (RFC 5322 ``phrase``) as chunks, each starting with a space.

    Atoms when the name is ASCII words separated by single spaces, a quoted string when it
    is other printable ASCII, encoded words otherwise (or when it looks encoded: the
    address reader decodes encoded words even inside quotes).
    """
    if name.isascii() and name.isprintable() and "=?" not in name:
        words = name.split(" ")
        if all(_ATOM.fullmatch(w) for w in words):
            return [" " + w for w in words]
        if len(name) <= _LONG_WORD:
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            return [f' "{escaped}"']
    return [" " + w for w in encoded_words(name)]


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 2045 token
_ATTRIBUTE_CHAR: Final = frozenset(
    b"!#$&+.^_`|~-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_SEGMENT: Final = 60


def _percent(data: bytes) -> list[str]:
    return [chr(b) if b in _ATTRIBUTE_CHAR else f"%{b:02X}" for b in data]


def param_chunks(key: str, value: str) -> list[str]:
    """One Content-Type/Content-Disposition parameter as chunks (decision 3), each starting
    with a space; RFC 2231 continuations come already separated by ``;``."""
    if value.isascii() and value.isprintable() and len(value) <= _LONG_WORD:
        if _TOKEN.fullmatch(value):
            return [f" {key}={value}"]
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return [f' {key}="{escaped}"']
    pieces = _percent(value.encode("utf-8", "surrogatepass"))
    text = "".join(pieces)
    if len(text) <= _SEGMENT:
        return [f" {key}*=utf-8''{text}"]
    segments: list[str] = []
    current = ""
    for piece in pieces:
        if len(current) + len(piece) > _SEGMENT:
            segments.append(current)
            current = ""
        current += piece
    segments.append(current)
    last = len(segments) - 1
    return [
        f" {key}*{i}*=" + ("utf-8''" if i == 0 else "") + segment + (";" if i < last else "")
        for i, segment in enumerate(segments)
    ]


def fold(name: str, chunks: Sequence[str]) -> bytes:
    """One header field: ``name:`` then the chunks, folded before chunks that start with
    white space when a line would pass 78 characters.  A chunk may carry its own CRLF
    folds (a pre-folded value).

    Raises:
        HeaderTooLong: a line is longer than 998 octets even so.
    """
    lines: list[str] = []
    line = name + ":"
    for chunk in chunks:
        fits = len(line) + len(chunk) <= SOFT_LINE
        if not fits and chunk[:1] in (" ", "\t") and line.strip() != name + ":":
            lines.append(line)
            line = chunk
        else:
            line += chunk
    lines.append(line)
    field = "\r\n".join(lines)
    octets = field.encode("utf-8", "surrogatepass")
    if any(len(physical) > MAX_LINE for physical in octets.split(b"\r\n")):
        raise HeaderTooLong(f"the {name} header field cannot be folded to {MAX_LINE} octets")
    return octets + b"\r\n"


# --- dates ------------------------------------------------------------------------------------

_DAY_NAMES: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


def rfc5322_date(moment: dt.datetime, *, unknown_zone: bool = False) -> str:
    """An RFC 5322 §3.3 date-time, in the zone ``moment`` carries (``-0000`` when
    ``unknown_zone``: RFC 3339's ``-00:00``).  Names are spelled here, not by strftime,
    which follows the process locale."""
    offset = moment.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 or unknown_zone else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{_DAY_NAMES[moment.weekday()]}, {moment.day:02d} {_MONTH_NAMES[moment.month - 1]}"
        f" {moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
        f" {sign}{hours:02d}{mins:02d}"
    )


# --- bodies -----------------------------------------------------------------------------------

Encoded = tuple[str, bytes]
"""(Content-Transfer-Encoding, encoded body octets)."""


def _clean_lines(data: bytes, *, ascii_only: bool) -> bool:
    """True when ``data`` may go unencoded: no NUL, CR and LF only as CRLF, short lines."""
    if (ascii_only and not data.isascii()) or b"\0" in data:
        return False
    lines = data.split(b"\r\n")
    return all(b"\r" not in ln and b"\n" not in ln and len(ln) <= MAX_LINE for ln in lines)


def _qp_line(line: bytes) -> list[bytes]:
    """One line quoted-printable (RFC 2045 §6.7), split by soft breaks into ≤ 76 octets."""
    out: list[bytes] = []
    current = bytearray()
    for index, octet in enumerate(line):
        last = index == len(line) - 1
        if (33 <= octet <= 126 and octet != 0x3D) or (octet in (0x09, 0x20) and not last):
            token = bytes([octet])
        else:
            token = b"=%02X" % octet
        if len(current) + len(token) > 75:
            out.append(bytes(current) + b"=")
            current = bytearray()
        current += token
    out.append(bytes(current))
    return out


def quoted_printable(data: bytes) -> bytes:
    """Quoted-printable with CRLF as the line break; lone CR and LF are escaped."""
    return b"\r\n".join(b"\r\n".join(_qp_line(line)) for line in data.split(b"\r\n"))


def base64_body(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF."""
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def encode_body(data: bytes, type_: str) -> Encoded:
    """Pick a Content-Transfer-Encoding for a part's content (decision 4)."""
    if type_ in ("message/rfc822", "message/global") and _clean_lines(data, ascii_only=False):
        return ("7bit" if data.isascii() else "8bit"), data
    if not type_.startswith("text/"):
        return "base64", base64_body(data)
    if _clean_lines(data, ascii_only=True):
        return "7bit", data
    if b"\r" in data.replace(b"\r\n", b"") or b"\n" in data.replace(b"\r\n", b""):
        return "base64", base64_body(data)  # bare CR/LF: QP would make them line breaks
    qp = quoted_printable(data)
    b64 = base64_body(data)
    return ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)
