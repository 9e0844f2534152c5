"""The MIME splitter: message bytes → a tree of :class:`Part`, numbered like IMAP.

Why not :mod:`email`: its parser keeps neither the raw header octets (``asRaw``) nor the raw
octets of an attached ``message/rfc822`` (it parses and would have to re-serialise it, so
its blob would not be the original bytes), and it does not number parts.  This splitter
works on the bytes, so every part knows its exact header fields and body octets.

partId scheme: the IMAP section number (RFC 3501 §6.4.5), so a part can be fetched again
with ``BODY.PEEK[<partId>]`` / ``BINARY.PEEK[<partId>]``:

- a message that is not multipart has one part, ``"1"``;
- the children of the top-level multipart are ``"1"``, ``"2"``, ...; the children of a
  multipart child ``"2"`` are ``"2.1"``, ``"2.2"``, ...;
- multipart parts themselves have no partId (JMAP: null iff ``multipart/*``);
- ``message/rfc822`` / ``message/global`` parts are leaves (RFC 8621 §4.1.4: bodyStructure
  does not recurse into them); their content is the attached message's octets.

Splitting rules (best effort, never raising):

1. A delimiter is a line starting with ``--boundary``; it closes the multipart when
   followed by ``--``.  Prefix match: RFC 2046 §5.1.1 "an exact match of the entire
   candidate line is not required".  The line break before a delimiter belongs to it.
   Preamble and epilogue are dropped.  A missing close delimiter ends the last part at EOF.
2. A ``multipart/*`` without a boundary parameter, or whose boundary never occurs, is a
   syntactically invalid Content-Type, so (RFC 2045 §5.2) it is read as ``text/plain``:
   a leaf holding the whole body, which at least shows the content.
3. A missing Content-Type means ``text/plain`` (``message/rfc822`` directly inside
   ``multipart/digest``, RFC 2046 §5.1.5); an unparseable one means ``text/plain``, its
   parameters still count (``Content-Type: text; charset=utf-8`` keeps the charset).
4. Of repeated Content-* fields, the first counts.  Nesting deeper than
   :data:`MAX_DEPTH` multiparts is read as rule 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from imapjmap.mime.codec import clean, decode_encoded_words, decode_text, decode_transfer
from imapjmap.mime.headers import RawField, split_header_block

__all__ = [
    "MAX_DEPTH",
    "Part",
    "assemble_params",
    "filename_from_params",
    "find_part",
    "parse_message",
    "split_params",
]

MAX_DEPTH: Final = 64

Params = list[tuple[str, str]]
"""Parameters as written, in order: (lower-case name, unquoted value), RFC 2231 not applied."""


@dataclass(slots=True)
class Part:
    """One MIME entity.  ``section`` is its IMAP section ("" for a top-level multipart)."""

    section: str
    fields: list[RawField]
    type: str
    type_params: Params
    disposition: str | None
    disposition_params: Params
    encoding: str | None
    body: bytes
    sub_parts: list[Part] = field(default_factory=list)
    _decoded: tuple[bytes, bool] | None = None
    _memo: dict[str, str | None] = field(default_factory=dict)

    @property
    def is_multipart(self) -> bool:
        return self.type.startswith("multipart/")

    @property
    def part_id(self) -> str | None:
        return None if self.is_multipart else (self.section or "1")

    @property
    def charset(self) -> str | None:
        """The charset parameter, ``us-ascii`` implied for text/* (RFC 2045 §5.2)."""
        if "charset" not in self._memo:
            explicit = (assemble_params(self.type_params).get("charset") or "").strip()
            implied = "us-ascii" if self.type.startswith("text/") else None
            self._memo["charset"] = explicit or implied
        return self._memo["charset"]

    @property
    def name(self) -> str | None:
        """The decoded file name (see :func:`filename_from_params`)."""
        if "name" not in self._memo:
            self._memo["name"] = filename_from_params(self.disposition_params, self.type_params)
        return self._memo["name"]

    def field_values(self, name: bytes) -> list[bytes]:
        wanted = name.lower()
        return [value for key, value in self.fields if key.lower() == wanted]

    def content(self) -> tuple[bytes, bool]:
        """The body with the Content-Transfer-Encoding undone, and whether that had problems."""
        if self._decoded is None:
            self._decoded = decode_transfer(self.body, self.encoding)
        return self._decoded

    def walk(self) -> Iterator[Part]:
        """This part and its descendants, depth first (bodyStructure order)."""
        yield self
        for child in self.sub_parts:
            yield from child.walk()


# --- parameters (RFC 2045 §5.1, RFC 2231) ------------------------------------------------------


def _split_outside_quotes(value: str) -> list[str]:
    """Split on ``;`` outside quoted strings, dropping comments (RFC 822 style)."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in value:
        if escaped:
            escaped = False
            if not depth:
                current.append(char)
            continue
        if char == "\\" and (quoted or depth):
            escaped = True
            if not depth:
                current.append(char)
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == "(" and not quoted:
            depth = 1
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    """Remove DQUOTEs; only ``\\"`` and ``\\\\`` are escapes, so that the bare backslashes of
    Windows paths (``filename="C:\\dir\\a.txt"``, a common generator bug) survive."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"':
        inner = value[1:-1] if value.endswith('"') else value[1:]
        return inner.replace('\\"', '"').replace("\\\\", "\\")
    return value


def split_params(value: str) -> tuple[str, Params]:
    """Split a Content-Type / Content-Disposition value into its lower-case main value and
    its parameters as written (see :data:`Params`)."""
    pieces = _split_outside_quotes(value.replace("\r", "").replace("\n", ""))
    params: Params = []
    for piece in pieces[1:]:
        key, equals, raw = piece.partition("=")
        key = key.strip().lower()
        if key and equals:
            params.append((key, _unquote(raw)))
    return "".join(pieces[0].split()).lower(), params


_SEGMENT: Final = re.compile(r"(.+?)\*(?:(\d{1,3})(\*?)|)")
_PERCENT: Final = re.compile(r"%([0-9A-Fa-f]{2})")


def _percent_decode(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def assemble_params(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Apply RFC 2231: join ``name*0``, ``name*1*``, ... continuations and decode
    ``charset'language'%XX`` values.  An RFC 2231 value wins over a plain one of the same
    name; of repeated plain ones the first wins.  Unknown charsets are guessed (UTF-8, else
    windows-1252); undecodable octets become U+FFFD."""
    plain: dict[str, str] = {}
    segments: dict[str, dict[int, tuple[str, bool]]] = {}
    for key, value in params:
        match = _SEGMENT.fullmatch(key)
        if match is None:
            plain.setdefault(key, value)
            continue
        base, index, star = match.group(1), match.group(2), match.group(3)
        number = 0 if index is None else int(index)
        encoded = index is None or star == "*"
        segments.setdefault(base, {}).setdefault(number, (value, encoded))
    result = {k: clean(v) for k, v in plain.items()}
    for base, parts in segments.items():
        charset: str | None = None
        octets = bytearray()
        for number in sorted(parts):
            value, encoded = parts[number]
            if encoded and number == 0 and value.count("'") >= 2:
                charset, _language, value = value.split("'", 2)
            if encoded:
                octets += _percent_decode(value)
            else:
                octets += value.encode("utf-8", "surrogateescape")
        result[base] = decode_text(bytes(octets), charset or "x-unknown")[0]
    return result


def filename_from_params(
    disposition_params: Sequence[tuple[str, str]], type_params: Sequence[tuple[str, str]]
) -> str | None:
    """The EmailBodyPart ``name``: Content-Disposition ``filename`` (RFC 2231), else the
    Content-Type ``name``; RFC 2047 words are decoded in either (the RFC names 2047 only for
    ``name``, but generators put encoded words in quoted filenames just as often).  Empty
    is null.  Shared by the full-message parser and the BODYSTRUCTURE path so that both
    give the same answer."""
    for params, key in ((disposition_params, "filename"), (type_params, "name")):
        value = assemble_params(params).get(key)
        if value is not None:
            decoded = decode_encoded_words(value).strip()
            if decoded:
                return decoded
    return None


# --- splitting -----------------------------------------------------------------------------------

_TYPE: Final = re.compile(r"[^\s/()<>@,;:\\\"\[\]?=]+/[^\s/()<>@,;:\\\"\[\]?=]+")


def _content_type(value: str | None, default: str) -> tuple[str, Params]:
    if value is None:
        return default, []
    main, params = split_params(value)
    return (main if _TYPE.fullmatch(main) else "text/plain"), params


def _delimiters(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(line start, line end incl. its newline, is the close delimiter) of each delimiter."""
    pattern = re.compile(rb"(?m)^--" + re.escape(boundary))
    for match in pattern.finditer(body):
        newline = body.find(b"\n", match.end())
        end = len(body) if newline < 0 else newline + 1
        yield match.start(), end, body.startswith(b"--", match.end())


def _chunks(body: bytes, boundary: bytes) -> list[bytes] | None:
    """The bodies between delimiters, or None when the boundary never occurs."""
    chunks: list[bytes] = []
    start: int | None = None
    for line_start, line_end, closing in _delimiters(body, boundary):
        if start is not None:
            stop = line_start
            if stop > start and body[stop - 1] == 0x0A:
                stop -= 1
                if stop > start and body[stop - 1] == 0x0D:
                    stop -= 1
            chunks.append(body[start:stop])
        if closing:
            return chunks
        start = line_end
    if start is None:
        return None
    chunks.append(body[start:])
    return chunks


def _parse(data: bytes, section: str, default_type: str, depth: int) -> Part:
    fields, offset = split_header_block(data, top=not section and depth == 0)
    first: dict[bytes, bytes] = {}
    for key, value in fields:
        first.setdefault(key.lower(), value)

    def text(name: bytes) -> str | None:
        value = first.get(name)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    type_, type_params = _content_type(text(b"content-type"), default_type)
    disposition_value = text(b"content-disposition")
    disposition, disposition_params = (
        split_params(disposition_value) if disposition_value is not None else (None, [])
    )
    encoding = text(b"content-transfer-encoding")
    part = Part(
        section=section,
        fields=fields,
        type=type_,
        type_params=type_params,
        disposition=(clean(disposition) or None) if disposition is not None else None,
        disposition_params=disposition_params,
        encoding=encoding.strip().lower() if encoding else None,
        body=data[offset:],
    )
    if part.is_multipart:
        # raw value (surrogate-escaped), so that even an 8-bit boundary matches its octets
        boundary = next((value for key, value in type_params if key == "boundary"), "")
        chunks = None
        if boundary and depth < MAX_DEPTH:
            chunks = _chunks(part.body, boundary.encode("utf-8", "surrogateescape"))
        if not chunks:
            part.type = "text/plain"
            return part
        child_default = "message/rfc822" if type_ == "multipart/digest" else "text/plain"
        prefix = f"{section}." if section else ""
        part.sub_parts = [
            _parse(chunk, f"{prefix}{number}", child_default, depth + 1)
            for number, chunk in enumerate(chunks, 1)
        ]
    return part


def parse_message(raw: bytes) -> Part:
    """Split a whole message into its :class:`Part` tree (never raises)."""
    return _parse(raw, "", "text/plain", 0)


def find_part(root: Part, part_id: str) -> Part | None:
    """The leaf whose partId is ``part_id``, or None."""
    for part in root.walk():
        if part.part_id == part_id:
            return part
    return None
