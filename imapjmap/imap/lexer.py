r"""Tokenise one IMAP response into nested Python values.

Input is one untagged response as the session hands it over: a tuple of chunks
``(line0, literal0, line1, literal1, ..., lineN)``.  Even chunks are line text; each line but
the last ends with a literal marker ``{n}`` (or ``~{n}``, RFC 3516 literal8) whose ``n`` bytes
are the next chunk.

Output is a flat list of values, where a parenthesised list is a nested Python list:

=====================  =========================================================
on the wire            value
=====================  =========================================================
``NIL`` (any case)     ``None``
atom, number           ``str`` (``"FETCH"``, ``"\Seen"``, ``"12"``, ``"BODY[1]<0>"``)
``"quoted"``           ``str`` with the ``\"`` and ``\\`` escapes undone
literal                ``bytes`` (exactly as received)
``( ... )``            ``list``
=====================  =========================================================

Atoms and quoted strings both become ``str``: no consumer needs to tell them apart, and a
single type keeps the hot path short.  ``NIL`` is the exception (an atom ``NIL`` is None, a
quoted ``"NIL"`` is the string).  Lines are decoded as UTF-8 with ``surrogateescape`` before
tokenising, so 8-bit bytes in quoted strings survive and can be re-encoded exactly.

Speed matters: a full-mailbox FETCH of ENVELOPE and BODYSTRUCTURE is ~120 tokens a message
and may cover 100,000 messages.  One compiled regex finds every token of a line in a single
``findall`` call; the Python loop only dispatches on the token's first character.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

from imapjmap.errors import ImapProtocolViolation

Value: TypeAlias = "str | bytes | list[Value] | None"

# One alternative per token kind, most frequent first.  Possessive quantifiers (3.11+) stop
# the engine from backtracking through long atoms and strings, which halves the time.
#
# * quoted string, with backslash escapes;
# * "(" or ")";
# * literal marker {n}, {n+} or ~{n} (RFC 3516 literal8), only at the end of a line;
# * atom: runs of atom characters and bracketed sections, so BODY[HEADER.FIELDS (A B)]<0>
#   is one token and so is a mailbox atom like [Gmail]/Sent ("]" is an ASTRING-CHAR); an
#   unclosed "[" is an ordinary atom character;
# * anything else (a lone '"' or '{') is garbage that the caller rejects.
_TOKEN = re.compile(
    r"""
    [ ]*+
    (
        "[^"\\]*+(?:\\.[^"\\]*+)*+"
      | [()]
      | ~?\{[0-9]+\+?\}$
      | (?:[^\s()"{\[]++|\[[^\]]*+\]|\[)++
      | \S
    )
    """,
    re.VERBOSE | re.ASCII,
)
_findall = _TOKEN.findall
_UNESCAPE = re.compile(r"\\(.)")
# NIL is an atom, and atoms are case-insensitive; a set lookup beats token.upper().
_NIL = frozenset({"NIL", "nil", "Nil", "NIl", "nIL", "niL", "nIl", "NiL"})

# Deep nesting means a hostile or broken server; the consumers recurse, so stop early.
MAX_DEPTH = 100


def unquote(token: str) -> str:
    """Strip the quotes of a quoted-string token and undo its backslash escapes."""
    body = token[1:-1]
    if "\\" in body:
        body = _UNESCAPE.sub(r"\1", body)
    return body


def lex(chunks: Sequence[bytes], start: int = 0) -> list[Value]:
    """Tokenise one response.

    Args:
        chunks: ``(line0, literal0, ..., lineN)`` as described in the module docstring.
        start: byte offset in ``line0`` where tokenising begins (the caller has already
            read the response's leading words).

    Returns:
        The top-level values in order; parenthesised lists nest as Python lists.

    Raises:
        ImapProtocolViolation: unbalanced parentheses, an unterminated quoted string, a
            literal marker that is not at the end of a line, a literal whose length does
            not match its marker, or a missing literal.
    """
    if len(chunks) % 2 == 0:
        raise ImapProtocolViolation(f"literal without a line after it: {_excerpt(chunks)}")
    root: list[Value] = []
    stack: list[list[Value]] = []
    current = root
    for index in range(0, len(chunks), 2):
        line = chunks[index][start:] if index == 0 and start else chunks[index]
        current = _lex_line(line, chunks, index, current, stack)
    if stack:
        raise ImapProtocolViolation(f"unbalanced '(': {_excerpt(chunks)}")
    return root


def _lex_line(
    line: bytes,
    chunks: Sequence[bytes],
    index: int,
    current: list[Value],
    stack: list[list[Value]],
) -> list[Value]:
    """Append the tokens of one line to ``current``; returns the list open at its end.

    This is the hot loop of the whole proxy during a first sync: each branch is ordered by
    frequency and does the least possible work (``append`` is cached per open list).
    """
    literal_pending = index < len(chunks) - 1
    append = current.append
    for token in _findall(line.decode("utf-8", "surrogateescape")):
        first = token[0]
        if first == '"':
            if token == '"':
                raise ImapProtocolViolation(f"unterminated quoted string: {_excerpt(chunks)}")
            append(token[1:-1] if "\\" not in token else unquote(token))
        elif first == "(":
            if len(stack) >= MAX_DEPTH:
                raise ImapProtocolViolation(f"lists nested too deeply: {_excerpt(chunks)}")
            new: list[Value] = []
            append(new)
            stack.append(current)
            current = new
            append = new.append
        elif first == ")":
            if not stack:
                raise ImapProtocolViolation(f"unbalanced ')': {_excerpt(chunks)}")
            current = stack.pop()
            append = current.append
        elif token in _NIL:
            append(None)
        elif first == "{" or (first == "~" and token[1:2] == "{"):
            # only the literal alternative yields "~{"; a lone "{" is garbage
            append(_literal(chunks, index, token, literal_pending))
            literal_pending = False
        else:
            append(token)
    if literal_pending:
        raise ImapProtocolViolation(f"line does not end in a literal marker: {_excerpt(chunks)}")
    return current


def _literal(chunks: Sequence[bytes], index: int, token: str, expected: bool) -> bytes:
    """The literal announced by ``token`` at the end of line ``index``, length-checked."""
    if token[-1] != "}":
        raise ImapProtocolViolation(f"stray '{{': {_excerpt(chunks)}")
    if not expected:
        raise ImapProtocolViolation(f"literal marker without literal: {_excerpt(chunks)}")
    literal = chunks[index + 1]
    size = int(token.lstrip("~")[1:-1].rstrip("+"))
    if len(literal) != size:
        raise ImapProtocolViolation(
            f"literal of {len(literal)} bytes announced as {size}: {_excerpt(chunks)}"
        )
    # a bytearray or memoryview from the session becomes bytes (records are immutable)
    return literal if type(literal) is bytes else bytes(literal)


def _excerpt(chunks: Sequence[bytes]) -> str:
    """A short, printable piece of the offending response for error messages."""
    first = chunks[0] if chunks else b""
    return repr(first[:80]) + ("..." if len(first) > 80 or len(chunks) > 1 else "")


# -- typed access to values ---------------------------------------------------------------
#
# The consumers in parse.py / parse_fetch.py call these on every field, so they test the
# exact type first (``type(v) is str``) and raise ValueError, which parse_reply turns into
# ImapProtocolViolation together with an excerpt of the response.


def nstring(value: Value) -> str | None:
    """A string or NIL; literals are decoded as UTF-8 (``surrogateescape``).

    Raises:
        ValueError: the value is a list.
    """
    if value is None or type(value) is str:
        return value
    if type(value) is bytes:
        return value.decode("utf-8", "surrogateescape")
    raise ValueError(f"expected a string, got {render(value)[:40]}")


def string(value: Value) -> str:
    """A string (NIL is an error).

    Raises:
        ValueError: the value is NIL or a list.
    """
    text = nstring(value)
    if text is None:
        raise ValueError("expected a string, got NIL")
    return text


def number(value: Value) -> int:
    """An unsigned decimal number.

    Raises:
        ValueError: anything but ASCII digits (``int()`` alone would take "+1" or "1_0").
    """
    if type(value) is str and value.isdigit() and value.isascii():
        return int(value)
    raise ValueError(f"expected a number, got {render(value)[:40]}")


def nnumber(value: Value) -> int | None:
    """A number or NIL.

    Raises:
        ValueError: anything but ASCII digits or NIL.
    """
    return None if value is None else number(value)


def items(value: Value) -> list[Value]:
    """A parenthesised list; NIL counts as the empty list (servers mix them up).

    Raises:
        ValueError: the value is a string.
    """
    if type(value) is list:
        return value
    if value is None:
        return []
    raise ValueError(f"expected a list, got {render(value)[:40]}")


_ATOM_SAFE = re.compile(r'\\?[^\x00-\x20()"{\\\x7f]+', re.ASCII)


def render(value: Value) -> str:
    """Write a value back as IMAP text (for ``other``/``extra`` and error messages).

    Atoms and quoted strings were merged by the lexer, so strings are written as atoms
    when that is unambiguous and quoted otherwise; literals are written quoted.
    """
    if value is None:
        return "NIL"
    if type(value) is list:
        return "(" + " ".join(render(v) for v in value) + ")"
    text = value.decode("utf-8", "surrogateescape") if type(value) is bytes else str(value)
    if _ATOM_SAFE.fullmatch(text) and text.upper() != "NIL":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
