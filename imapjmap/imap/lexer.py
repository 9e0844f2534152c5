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
and may cover 100,000 messages.  :func:`lex` finds every token of a line with one compiled
regex and dispatches on its first character, which still costs Python work per token.
:func:`lex_fast`, used for FETCH responses, does no per-token Python work: it rewrites the
response into JSON with a fixed number of ``bytes`` operations and lets the C JSON scanner
build the lists (half again as fast on Dovecot's first-sync responses); whatever it is not
sure to read exactly as :func:`lex` does, it declines, and the caller uses :func:`lex`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeAlias

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


# -- the fast path: IMAP to JSON with bytes operations ------------------------------------
#
# lex_fast rewrites a response into JSON text and lets the C scanner of the json module
# build the lists.  Each step is one C call over the whole response, so the Python work
# hardly grows with the number of tokens:
#
# 1. The lines are joined with spaces, each literal marker ({n}, ~{n+}, ...) replaced by the
#    atom "{}"; the literals go in at the very end, in place of those atoms.
# 2. Split at '"': the odd pieces are the quoted strings' contents, the even ones what lies
#    between them ("outside"), joined with " \x00 ": one placeholder atom per string.
# 3. In outside, the space, parentheses and "[" of bracketed sections
#    (BODY[HEADER.FIELDS (A B)]) become control bytes, so that step 4 leaves them in their
#    atom.
# 4. Every token becomes a JSON value: ' ' -> '","', '(' -> '",["', ')' -> '"],"', all in
#    '["' ... '"]'.  That quotes every atom, and leaves an empty string "" wherever two
#    separators meet (next to each parenthesis, in a run of spaces); no real value is "" yet
#    (strings are placeholders), so '"",' and ',""' are deleted and '[""]' becomes '[]'.  The
#    result is lex's tokenisation: a run of spaces separates, parentheses need no space, a
#    string glued to an atom is a token of its own.  Atom NIL becomes null, and the literal
#    atom "{}" becomes {}, a JSON object, which nothing else can be.
# 5. The control bytes of step 3 turn back; each string's placeholder is now "\x00", and the
#    text is split at \x00 and joined again with the strings' contents in between.  After
#    the scan, the literals replace the {} objects.
#
# It declines (returns None) where the JSON could differ from lex: a backslash in a quoted
# string (lex undoes escapes), a "{" or "[" anywhere else than above, deep nesting.  A
# control byte of the input (a tab between tokens, a \x00 in a string) ends up raw in a
# JSON string or splits off an extra piece: that declines too.

_MARKER = re.compile(rb"~?\{([0-9]+)\+?\}\Z")
_NEUTRAL = bytes.maketrans(b" ()[", b"\x01\x02\x03\x05")
_UNNEUTRAL = bytes.maketrans(b"\x01\x02\x03\x05", b" ()[")
_ANY_CASE_NIL = re.compile(rb'"[Nn][Ii][Ll]"')
# the C scanner behind json.loads, without its Python wrapper; strict: no control characters
_scan_json: Callable[[str, int], tuple[Any, int]]
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _join_lines(chunks: Sequence[bytes], start: int) -> bytes | None:
    """Step 1: the lines joined, each literal marker replaced by the atom "{}"."""
    if len(chunks) == 1:
        return chunks[0][start:]
    if len(chunks) % 2 == 0:
        return None
    pieces: list[bytes] = []
    for index in range(0, len(chunks) - 1, 2):
        line = chunks[index]
        first = start if index == 0 else 0
        at = line.rfind(b"{", first)
        if at > first and line[at - 1] == 0x7E:  # "~{n}", literal8
            at -= 1
        match = _MARKER.match(line, at) if at >= 0 else None
        # lex wants the marker at the end, not glued to the token before it
        if match is None or (at > first and line[at - 1] not in (0x20, 0x28)):
            return None
        if len(chunks[index + 1]) != int(match.group(1)):
            return None
        pieces += (line[first:at], b"{} ")
    pieces.append(chunks[-1])
    return b"".join(pieces)


def _neutralize_sections(outside: bytes) -> bytes | None:
    """Step 3; None if a "[" is not closed before the next string or literal marker."""
    if 1 in outside or 2 in outside or 3 in outside or 5 in outside:
        return None  # the control bytes of step 3 are not free
    pieces: list[bytes] = []
    done = 0
    at = outside.find(b"[")
    while at >= 0:
        end = outside.find(b"]", at)
        # lex would close it beyond a string (\x00), or never; a "{" in it may be the
        # marker of a literal that lex reads as a separate line
        if end < 0 or outside.find(b"\x00", at, end) >= 0 or outside.find(b"{", at, end) >= 0:
            return None
        pieces += (outside[done:at], outside[at:end].translate(_NEUTRAL))
        done = end
        at = outside.find(b"[", end)
    pieces.append(outside[done:])
    return b"".join(pieces)


def _to_json(outside: bytes, literals: int) -> bytes | None:
    """Steps 3 and 4, and the first half of 5, on the text outside the quoted strings."""
    sections = 0x5B in outside  # "["
    if sections:
        neutral = _neutralize_sections(outside)
        if neutral is None:
            return None
        outside = neutral
    if outside.count(b"{") != literals:  # "{" only in markers: a stray one is an error for lex
        return None
    spaced = outside.replace(b" ", b'","')
    text = spaced.replace(b"(", b'",["')
    if len(text) - len(spaced) > 3 * MAX_DEPTH:  # more "(" than lex allows levels
        return None
    text = (b'["' + text.replace(b")", b'"],"') + b'"]').replace(b'"",', b"").replace(b',""', b"")
    text = text.replace(b'[""]', b"[]").replace(b'"NIL"', b"null")
    if b'"nil"' in text.lower():
        text = _ANY_CASE_NIL.sub(b"null", text)
    if literals:  # a JSON object: nothing else becomes one, unlike a string "{}"
        text = text.replace(b'"{}"', b"{}")
    return text.translate(_UNNEUTRAL) if sections else text


def lex_fast(chunks: Sequence[bytes], start: int = 0) -> list[Value] | None:
    """Exactly what :func:`lex` returns, without a Python loop over the tokens; or None
    where that cannot be promised, and then :func:`lex` must do it (and say what is wrong,
    if anything).
    """
    line = _join_lines(chunks, start)
    if line is None:
        return None
    parts = line.split(b'"')
    if not len(parts) & 1:  # an odd number of quotes
        return None
    outside = line if len(parts) == 1 else b" \x00 ".join(parts[0::2])
    if 0x5C in line:  # "\": atoms keep theirs as they are, JSON needs them escaped
        escaped = outside.replace(b"\\", b"\\\\")
        if len(escaped) - len(outside) != line.count(b"\\"):
            return None  # one in a quoted string: lex undoes the escapes
        outside = escaped
    text = _to_json(outside, len(chunks) >> 1)
    if text is None:
        return None
    if len(parts) > 1:
        pieces = text.split(b"\x00")
        if len(pieces) != len(parts) // 2 + 1:
            return None  # a \x00 of the input
        parts[0::2] = pieces
        text = b"".join(parts)
    try:
        # strict UTF-8: json.loads would decode encoded surrogates, lex escapes them
        json_text = text.decode()
        values, end = _scan_json(json_text, 0)
    except (ValueError, StopIteration, RecursionError):
        return None
    if end != len(json_text):
        return None
    if len(chunks) > 1:
        return _place_literals(values, chunks)
    result: list[Value] = values
    return result


def _place_literals(values: list[Any], chunks: Sequence[bytes]) -> list[Value]:
    """Put the literals in place of the {} objects, in order."""
    literals = [c if type(c) is bytes else bytes(c) for c in chunks[1::2]]
    outer = values[0] if len(values) == 1 and type(values[0]) is list else None
    if outer is not None and outer.count({}) == len(literals):
        # the usual: items of the one outer list, as in FETCH's "BODY[] {n}"
        at = 0
        for literal in literals:
            at = outer.index({}, at)
            outer[at] = literal
    else:  # one in a nested list (a subject with a quote, 8-bit names): look everywhere
        _place_nested(values, iter(literals))
    result: list[Value] = values
    return result


def _place_nested(values: list[Any], literals: Iterator[bytes]) -> None:
    for index, value in enumerate(values):
        if type(value) is list:
            _place_nested(value, literals)
        elif type(value) is dict:
            values[index] = next(literals)


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
