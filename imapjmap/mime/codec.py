"""Byte-level decoders: charsets, Content-Transfer-Encoding and RFC 2047 encoded words.

Every function here is total: malformed input never raises, it is decoded as well as
possible and the caller is told that there was a problem (the ``bool`` in the returned
pairs), which becomes ``isEncodingProblem`` in a JMAP EmailBodyValue (RFC 8621 §4.1.4).

Charset decisions (RFC 8621 §4.1.4 lets the server "use heuristics to determine the
charset ... if it believes the charset given is incorrect"):

1. ``us-ascii`` (and a missing charset, whose MIME default is us-ascii) is decoded as UTF-8,
   a strict superset: pure ASCII is unchanged, and undeclared UTF-8 is shown correctly.
2. ``iso-8859-1`` is decoded as windows-1252, as the WHATWG Encoding Standard does: the two
   differ only in 0x80-0x9F, which are C1 controls in Latin-1 and never meant as such in
   mail.  The five bytes windows-1252 leaves undefined keep their Latin-1 meaning.
   A few other labels map to their WHATWG supersets (gb2312 → gbk, euc-kr → cp949, ...).
3. An unknown label is decoded as UTF-8 if the bytes are valid UTF-8, else as windows-1252,
   and is always reported as a problem.
4. Bytes the charset cannot decode become U+FFFD and are reported as a problem.
5. Python codecs that are not mail charsets (``base64``, ``rot13``, ``unicode_escape``,
   ``undefined``, ``idna``, ...) count as unknown labels.
"""

from __future__ import annotations

import binascii
import codecs
import re
import unicodedata
from typing import Final

__all__ = [
    "clean",
    "decode_encoded_words",
    "decode_text",
    "decode_transfer",
    "is_known_charset",
]

_LATIN1: Final = "x-latin1-as-cp1252"
"""Pseudo codec name: Latin-1 labels decoded through :data:`_CP1252_TABLE`."""


def _cp1252_table() -> str:
    chars = []
    for byte in range(256):
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars)


_CP1252_TABLE: Final = _cp1252_table()
_TRANSLATE_LATIN1: Final = {i: c for i, c in enumerate(_CP1252_TABLE) if ord(c) != i}

_ALIASES: Final[dict[str, str]] = {
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
    "iso-8859-1": _LATIN1,
    "iso8859-1": _LATIN1,
    "iso_8859-1": _LATIN1,
    "latin1": _LATIN1,
    "latin-1": _LATIN1,
    "l1": _LATIN1,
    "cp819": _LATIN1,
    "windows-1252": _LATIN1,
    "cp1252": _LATIN1,
    "x-cp1252": _LATIN1,
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-9": "cp1254",
    "big5": "big5hkscs",
}

_NOT_MAIL_CHARSETS: Final = frozenset(
    {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs", "oem"}
)

_resolved: dict[str, str | None] = {}


def _resolve(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when unknown."""
    if label is None:
        return "utf-8"
    key = label.strip().strip("\"'").lower().split("*", 1)[0]  # RFC 2231 §5 "utf-8*en"
    if key in _resolved:
        return _resolved[key]
    codec: str | None = _ALIASES.get(key)
    if codec is None and key and key.isascii():
        try:
            info = codecs.lookup(key)
        except (LookupError, ValueError):
            info = None
        if info is not None and getattr(info, "_is_text_encoding", True):
            codec = None if info.name in _NOT_MAIL_CHARSETS else info.name
    if len(_resolved) < 1024:
        _resolved[key] = codec
    return codec


def is_known_charset(label: str | None) -> bool:
    """True when :func:`decode_text` has a decoder for ``label``."""
    return _resolve(label) is not None


_SURROGATE: Final = re.compile(
    r"[\ud800-\udfff]"
)  # re reads the escapes: no lone surrogate in the source


def clean(text: str) -> str:
    """Replace lone surrogates (from ``surrogateescape`` or odd codecs) with U+FFFD."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)


def _guess(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1").translate(_TRANSLATE_LATIN1)


def decode_text(data: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode ``data`` from ``charset`` (None: the MIME default).

    Returns:
        The text, and True when there was a problem: an unknown charset, or bytes the
        charset cannot represent (those become U+FFFD).
    """
    codec = _resolve(charset)
    if codec is None:
        return _guess(data), True
    if codec == _LATIN1:
        return data.decode("latin-1").translate(_TRANSLATE_LATIN1), False
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        return clean(data.decode(codec, "replace")), True
    except (LookupError, UnicodeError, ValueError, TypeError):
        return _guess(data), True
    return (text if codec == "utf-8" else clean(text)), False


# --- Content-Transfer-Encoding (RFC 2045 §6) ------------------------------------------------

_B64_JUNK: Final = re.compile(rb"[^A-Za-z0-9+/=]+")
_B64_PAD: Final = re.compile(rb"=+")
_QP_TRAILING_WS: Final = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
_QP_ESCAPE: Final = re.compile(rb"=([0-9A-Fa-f]{2})|=(\r?\n|\Z)|=")


def _decode_base64(data: bytes) -> tuple[bytes, bool]:
    compact = _B64_JUNK.sub(b"", data)
    problem = len(compact) != len(data.translate(None, b" \t\r\n"))
    try:
        return binascii.a2b_base64(compact, strict_mode=True), problem
    except binascii.Error:
        pass
    # Lenient: decode each run between padding separately, completing the last quantum.
    out = bytearray()
    for chunk in _B64_PAD.split(compact):
        keep = len(chunk) - len(chunk) % 4 if len(chunk) % 4 == 1 else len(chunk)
        chunk = chunk[:keep]
        if chunk:
            out += binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4))
    return bytes(out), True


def _decode_qp(data: bytes) -> tuple[bytes, bool]:
    problem = False

    def unescape(match: re.Match[bytes]) -> bytes:
        nonlocal problem
        if match.group(1) is not None:
            return bytes([int(match.group(1), 16)])
        if match.group(2) is not None:
            return b""  # soft line break
        problem = True
        return b"="

    data = _QP_TRAILING_WS.sub(b"", data)  # RFC 2045 §6.7 rule 3: added by transports
    if b"=" not in data:
        return data, False
    return _QP_ESCAPE.sub(unescape, data), problem


def decode_transfer(data: bytes, encoding: str | None) -> tuple[bytes, bool]:
    """Undo a Content-Transfer-Encoding.

    ``7bit``, ``8bit``, ``binary`` and a missing header are identity.  An unknown encoding
    is treated as identity too (RFC 8621 §4.1.4, blobId) but reported as a problem
    (isEncodingProblem: "the content-transfer-encoding was unknown").  Base64 ignores
    characters outside its alphabet and completes a truncated last quantum; QP keeps a
    malformed ``=`` literally and accepts lower-case hex (RFC 2045 §6.7 "robust
    implementation").  Both report such repairs as problems.
    """
    name = (encoding or "").strip().lower()
    if name in ("", "7bit", "8bit", "binary"):
        return data, False
    if name == "base64":
        return _decode_base64(data)
    if name == "quoted-printable":
        return _decode_qp(data)
    return data, True


# --- RFC 2047 encoded words ------------------------------------------------------------------

_WORD: Final = r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?="
_ENCODED_WORD: Final = re.compile(_WORD)
_ONLY_ENCODED_WORDS: Final = re.compile(f"(?:{_WORD})+")
_WSP_SPLIT: Final = re.compile(r"([ \t\r\n]+)")
_Q_ESCAPE: Final = re.compile(rb"=([0-9A-Fa-f]{2})")


def _word_bytes(kind: str, text: str) -> bytes | None:
    """The octets of one encoded word's encoded-text, or None when they cannot be had."""
    raw = text.encode("ascii", "replace")
    if kind in "Qq":
        raw = raw.replace(b"_", b" ")
        return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    compact = raw.rstrip(b"=")
    if len(compact) % 4 == 1 or _B64_JUNK.search(compact):
        return None
    try:
        return binascii.a2b_base64(compact + b"=" * (-len(compact) % 4))
    except binascii.Error:
        return None


def _drop_controls(text: str) -> str:
    """RFC 8621 §4.1.2.2 step 4: encoded NULs and control characters are dropped."""
    if text.isprintable():
        return text
    return "".join(c for c in text if unicodedata.category(c) != "Cc")


def _decode_run(words: list[tuple[str, str, str, str]]) -> str:
    """Decode adjacent encoded words, joining same-charset octets before decoding them.

    Joining first is what lets a multi-octet character split across two words (a common
    generator bug) come out whole.
    """
    out: list[str] = []
    index = 0
    while index < len(words):
        literal, charset, _kind, _text = words[index]
        if not is_known_charset(charset):
            out.append(literal)  # "with a known character set": leave it as it was
            index += 1
            continue
        octets = bytearray()
        broken = False
        while index < len(words) and words[index][1].lower() == charset.lower():
            decoded = _word_bytes(words[index][2], words[index][3])
            if decoded is None:
                broken = True
            else:
                octets += decoded
            index += 1
        text, _problem = decode_text(bytes(octets), charset)
        out.append(_drop_controls(text) + ("\ufffd" if broken else ""))
    return "".join(out)


def decode_encoded_words(text: str) -> str:
    """Decode the RFC 2047 encoded words of an unstructured text or a display name.

    RFC 8621 §4.1.2.2: text that looks like an encoded word but breaks the placement rules
    MUST NOT be decoded.  So a word is decoded only when it is delimited by white space
    (or the ends of the text).  Deliberate leniency: a white-space-delimited word made
    entirely of several encoded words run together (``=?a?Q?x?==?a?Q?y?=``) is decoded,
    since nothing else could have been meant.  White space between two decoded words is
    dropped (RFC 2047 §6.2).  An unknown charset leaves the word as it was; bad base64
    gives U+FFFD.
    """
    if "=?" not in text:
        return text
    pieces = _WSP_SPLIT.split(text)  # word, space, word, space, ..., word
    out: list[str] = []
    run: list[tuple[str, str, str, str]] = []
    pending_space = ""
    for position, piece in enumerate(pieces):
        if position % 2:  # white space
            pending_space = piece
            continue
        if piece and _ONLY_ENCODED_WORDS.fullmatch(piece):
            if not run:
                out.append(pending_space)
            run.extend(
                (m.group(0), m.group(1), m.group(2), m.group(3))
                for m in _ENCODED_WORD.finditer(piece)
            )
        else:
            if run:
                out.append(_decode_run(run))
                run = []
            out.append(pending_space)
            out.append(piece)
        pending_space = ""
    if run:
        out.append(_decode_run(run))
    out.append(pending_space)
    return "".join(out)
