"""ManageSieve (RFC 5804) without I/O: commands to bytes, bytes to responses.

A server speaks in lines.  Each line is a run of tokens: atoms (``OK``, ``ACTIVE``),
strings (quoted, ``"..."`` with ``\\"`` and ``\\\\`` escapes, or literal, ``{n}`` CRLF
then ``n`` octets, after which the line goes on), and the parentheses of a response
code.  Data lines come first (the capabilities, LISTSCRIPTS's names, GETSCRIPT's
literal), each starting with a string; a line starting with ``OK``, ``NO`` or ``BYE``
ends the response (RFC 5804 §1.3, §4), and any other atom there is not ManageSieve:

    response  = *data-line ("OK" / "NO" / "BYE") [SP "(" code [SP string] ")"] [SP string]

:class:`Reader` is fed the octets as they come and hands out whole :class:`Response`
objects; :func:`command` formats a command, sending every string the client cannot
quote as a non-synchronising literal ``{n+}`` (the form RFC 5804 §4 requires of
clients), so a command never waits for a continuation.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from imapjmap.errors import ProxyError

__all__ = [
    "Atom",
    "ManageSieveProtocolError",
    "Reader",
    "Response",
    "Token",
    "capabilities",
    "command",
    "plain_initial_response",
    "script_list",
]

Status = Literal["OK", "NO", "BYE"]
STATUSES: Final = frozenset({"OK", "NO", "BYE"})
MAX_QUOTED: Final = 1024  # RFC 5804 §4: a quoted string holds at most 1024 characters
MAX_LINE: Final = 64 * 1024  # octets of one line outside literals before it is refused
MAX_LITERAL: Final = 16 * 1024 * 1024  # a script is far smaller; a bigger literal is hostile
_ATOM_END: Final = frozenset(b' ()\r\n"{')
_LITERAL: Final = re.compile(rb"\{(\d{1,10})\+?\}\r\n")


class ManageSieveProtocolError(ProxyError):
    """The server sent something that is not ManageSieve; the connection is unusable."""


class Atom(str):
    """An atom of a server line (``OK``, ``ACTIVE``, ``(``); strings are ``bytes``."""

    __slots__ = ()


Token = Atom | bytes


@dataclass(frozen=True, slots=True)
class Response:
    """One complete server response: its data lines and the status line ending it."""

    status: Status
    code: str | None = None  # upper case, e.g. "NONEXISTENT", "QUOTA/MAXSIZE", "WARNINGS"
    code_data: bytes | None = None  # the string after the code, e.g. SASL's
    text: str = ""  # the human-readable string, e.g. a script's compile errors
    lines: tuple[tuple[Token, ...], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "OK"


# --- reading --------------------------------------------------------------------------------


class Reader:
    """Parses the server's octets into responses, however they are split in transit."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[Token, ...]] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_response(self) -> Response | None:
        """The next complete response, or None when more octets are needed.

        Raises:
            ManageSieveProtocolError: the octets are not a ManageSieve response.
        """
        while True:
            parsed = _read_line(self._buffer)
            if parsed is None:
                if len(self._buffer) > MAX_LINE + MAX_LITERAL:
                    raise ManageSieveProtocolError("a server line exceeds every limit")
                return None
            tokens, used = parsed
            del self._buffer[:used]
            if tokens and isinstance(tokens[0], Atom):
                if tokens[0].upper() not in STATUSES:  # e.g. an SMTP or IMAP greeting
                    raise ManageSieveProtocolError(f"not ManageSieve: a line {tokens[:3]!r}")
                lines, self._lines = tuple(self._lines), []
                return _status_line(tokens, lines)
            self._lines.append(tokens)


def _read_line(buf: bytearray | bytes) -> tuple[tuple[Token, ...], int] | None:
    """The tokens of the first whole line of ``buf`` and the octets it took, or None."""
    tokens: list[Token] = []
    pos = 0
    while True:
        if pos >= len(buf):
            return None
        if buf[pos] == 0x20:  # SP
            pos += 1
            continue
        if buf.startswith(b"\r\n", pos):
            return tuple(tokens), pos + 2
        read = _read_token(buf, pos)
        if read is None:
            return None
        token, pos = read
        tokens.append(token)


def _read_token(buf: bytearray | bytes, pos: int) -> tuple[Token, int] | None:
    """The token starting at ``pos`` and the position after it, or None: need more."""
    char = buf[pos]
    if char == 0x0D:
        if pos + 1 < len(buf):
            _bad("a CR without LF", buf, pos)
        return None
    if char in (0x28, 0x29):  # ( )
        return Atom(chr(char)), pos + 1
    if char == 0x22:  # "
        return _read_quoted(buf, pos)
    if char == 0x7B:  # {
        return _read_literal(buf, pos)
    end = pos
    while end < len(buf) and buf[end] not in _ATOM_END:
        end += 1
    if end >= len(buf):
        return None
    if end == pos:  # an octet that starts no token (a bare LF, a stray "}")
        _bad("an unexpected octet", buf, pos)
    return Atom(bytes(buf[pos:end]).decode("utf-8", "replace")), end


def _read_quoted(buf: bytearray | bytes, start: int) -> tuple[bytes, int] | None:
    out = bytearray()
    pos = start + 1
    while pos < len(buf):
        char = buf[pos]
        if char == 0x5C:  # backslash: the next octet stands for itself
            if pos + 1 >= len(buf):
                return None
            out.append(buf[pos + 1])
            pos += 2
        elif char == 0x22:
            return bytes(out), pos + 1
        elif char in (0x0D, 0x0A):
            _bad("a line break inside a quoted string", buf, start)
        else:
            out.append(char)
            pos += 1
        if pos - start > MAX_LINE:
            _bad("an endless quoted string", buf, start)
    return None


def _read_literal(buf: bytearray | bytes, start: int) -> tuple[bytes, int] | None:
    head_end = buf.find(b"\n", start)
    if head_end < 0:
        if len(buf) - start >= 16:
            _bad("a broken literal", buf, start)
        return None
    match = _LITERAL.fullmatch(bytes(buf[start : head_end + 1]))
    if match is None:
        _bad("a broken literal", buf, start)
    size = int(match.group(1))
    if size > MAX_LITERAL:
        _bad(f"a literal of {size} octets", buf, start)
    begin = head_end + 1
    if len(buf) < begin + size:
        return None
    return bytes(buf[begin : begin + size]), begin + size


def _bad(what: str, buf: bytearray | bytes, pos: int) -> NoReturn:
    near = bytes(buf[pos : pos + 40])
    raise ManageSieveProtocolError(f"not ManageSieve: {what} near {near!r}")


def _status_line(tokens: tuple[Token, ...], lines: tuple[tuple[Token, ...], ...]) -> Response:
    status = tokens[0].upper()
    assert status in STATUSES
    rest = list(tokens[1:])
    code: str | None = None
    code_data: bytes | None = None
    if rest and rest[0] == "(":
        try:
            close = rest.index(Atom(")"))
        except ValueError:
            raise ManageSieveProtocolError("a response code without ')'") from None
        inside, rest = rest[1:close], rest[close + 1 :]
        if not inside or not isinstance(inside[0], Atom):
            raise ManageSieveProtocolError("an empty response code")
        code = inside[0].upper()
        code_data = next((t for t in inside[1:] if isinstance(t, bytes)), None)
    text = next((t for t in rest if isinstance(t, bytes)), b"")
    return Response(
        status,  # type: ignore[arg-type]  # checked against STATUSES above
        code,
        code_data,
        text.decode("utf-8", "replace"),
        lines,
    )


# --- what responses say ------------------------------------------------------------------------


def capabilities(response: Response) -> dict[str, str]:
    """The capability lines (RFC 5804 §1.7) as upper-case name -> value ("" when none)."""
    out: dict[str, str] = {}
    for line in response.lines:
        if line and isinstance(line[0], bytes):
            value = line[1] if len(line) > 1 and isinstance(line[1], bytes) else b""
            out[line[0].decode("utf-8", "replace").upper()] = value.decode("utf-8", "replace")
    return out


def script_list(response: Response) -> list[tuple[str, bool]]:
    """LISTSCRIPTS's lines (RFC 5804 §2.7): (name, is it the active one)."""
    out: list[tuple[str, bool]] = []
    for line in response.lines:
        if not line or not isinstance(line[0], bytes):
            raise ManageSieveProtocolError(f"not a LISTSCRIPTS line: {line!r}")
        active = any(isinstance(t, Atom) and t.upper() == "ACTIVE" for t in line[1:])
        out.append((line[0].decode("utf-8", "replace"), active))
    return out


def extensions(caps: Mapping[str, str]) -> frozenset[str]:
    """The Sieve extensions the server implements (the ``SIEVE`` capability), lower case."""
    return frozenset(caps.get("SIEVE", "").lower().split())


def sasl_mechanisms(caps: Mapping[str, str]) -> frozenset[str]:
    return frozenset(caps.get("SASL", "").upper().split())


# --- writing ------------------------------------------------------------------------------------


def command(verb: str, *args: str | bytes) -> bytes:
    """One command line: ``VERB`` then each argument as a string (quoted or ``{n+}``)."""
    parts = [verb.encode("ascii")]
    parts.extend(string(arg) for arg in args)
    return b" ".join(parts) + b"\r\n"


def string(value: str | bytes) -> bytes:
    """A ManageSieve string: quoted when short and free of CR/LF/NUL, else a literal."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= MAX_QUOTED and not any(c in data for c in b"\r\n\0"):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d+}\r\n" % len(data) + data


def plain_initial_response(username: str, password: str) -> str:
    """SASL PLAIN's message (RFC 4616), base64, for ``AUTHENTICATE "PLAIN" "..."``."""
    raw = b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def responses_of(data: bytes | Iterable[bytes]) -> list[Response]:
    """Every complete response in ``data`` (the tests' helper; chunks are fed in order)."""
    reader = Reader()
    out: list[Response] = []
    for chunk in [data] if isinstance(data, bytes) else data:
        reader.feed(chunk)
        while (response := reader.next_response()) is not None:
            out.append(response)
    return out
