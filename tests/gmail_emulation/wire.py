"""IMAP wire helpers of the emulation: reading commands, tokens, rendering values.

A command is read as segments: text lines, each one that ends in ``{n}`` or ``{n+}``
followed by the literal's bytes.  :func:`tokenize` turns the segments into nested lists of
:class:`Atom` (bare words, with ``BODY[...]<...>`` kept whole), ``str`` (quoted strings),
``bytes`` (literals) and ``list`` (parenthesised lists).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Union

from imapjmap.imap.utf7 import decode_mailbox_name, encode_mailbox_name

Token = Union["Atom", str, bytes, list["Token"]]
_LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")
_ATOM_END = frozenset(' ()"\r\n')


class Atom(str):
    """A bare word (as opposed to a quoted string)."""


class ProtocolError(Exception):
    """The client sent something the emulation cannot parse (answered BAD)."""


async def read_command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> list[bytes] | None:
    """The segments of the next command, or None at end of stream."""
    segments: list[bytes] = []
    while True:
        line = await reader.readline()
        if not line:
            return None
        line = line.rstrip(b"\r\n")
        segments.append(line)
        match = _LITERAL.search(line)
        if match is None:
            return segments
        if not match.group(2):
            writer.write(b"+ go ahead\r\n")
            await writer.drain()
        segments.append(await reader.readexactly(int(match.group(1))))


def tokenize(segments: Sequence[bytes]) -> list[Token]:
    """Tokens of a command; literals come from the segments that follow ``{n}``."""
    out: list[Token] = []
    stack: list[list[Token]] = [out]
    for index in range(0, len(segments), 2):
        raw = segments[index]
        literal = segments[index + 1] if index + 1 < len(segments) else None
        match = _LITERAL.search(raw)
        if match is not None:
            raw = raw[: match.start()]
        _scan(raw.decode("utf-8", "surrogateescape"), stack)
        if literal is not None:
            stack[-1].append(literal)
    if len(stack) != 1:
        raise ProtocolError("unbalanced parentheses")
    return out


def _scan(text: str, stack: list[list[Token]]) -> None:
    i = 0
    while i < len(text):
        c = text[i]
        if c == " ":
            i += 1
        elif c == "(":
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == ")":
            if len(stack) == 1:
                raise ProtocolError("unbalanced parentheses")
            stack.pop()
            i += 1
        elif c == '"':
            i = _quoted(text, i, stack[-1])
        else:
            i = _atom(text, i, stack[-1])


def _quoted(text: str, i: int, into: list[Token]) -> int:
    chars: list[str] = []
    i += 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        chars.append(text[i])
        i += 1
    if i >= len(text):
        raise ProtocolError("unterminated quoted string")
    into.append("".join(chars))
    return i + 1


def _atom(text: str, i: int, into: list[Token]) -> int:
    start = i
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "[<":
            depth += 1
        elif c in "]>":
            depth -= 1
        elif depth == 0 and c in _ATOM_END:
            break
        i += 1
    into.append(Atom(text[start:i]))
    return i


def as_text(token: Token) -> str:
    """An astring argument as text (atoms, quoted strings and UTF-8 literals)."""
    if isinstance(token, bytes):
        return token.decode("utf-8")
    if isinstance(token, list):
        raise ProtocolError("expected a string, got a list")
    return str(token)


def mailbox_arg(token: Token) -> str:
    name = decode_mailbox_name(as_text(token))
    return "INBOX" if name.upper() == "INBOX" else name


# -- rendering -------------------------------------------------------------------------------


def quote(text: str | None) -> bytes:
    """A string as a quoted string, a literal when it cannot be quoted, NIL for None."""
    if text is None:
        return b"NIL"
    if text.isascii() and "\r" not in text and "\n" not in text:
        return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
    return literal(text.encode("utf-8"))


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def mailbox_name(name: str) -> bytes:
    return quote(encode_mailbox_name(name) if name != "INBOX" else name)


def label(value: str) -> bytes:
    """An X-GM-LABELS item: system labels as atoms, user labels as mailbox names."""
    if value.startswith("\\"):
        return value.encode()
    return quote(encode_mailbox_name(value))


def plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def internaldate(value: dt.datetime) -> bytes:
    return b'"' + value.strftime("%d-%b-%Y %H:%M:%S %z").encode() + b'"'


def parse_internaldate(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")


def sequence_set(text: str, largest: int) -> set[int]:
    """The numbers of a sequence set; ``*`` is ``largest`` (nothing when it is 0)."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if "*" in (lo, hi) and largest == 0:
            continue
        a = largest if lo == "*" else int(lo)
        b = a if not hi else (largest if hi == "*" else int(hi))
        out.update(range(min(a, b), max(a, b) + 1))
    return out


def render_set(numbers: Iterable[int]) -> str:
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)
