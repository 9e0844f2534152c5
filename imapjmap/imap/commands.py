"""Build IMAP command arguments: quoting, literals, sequence sets, flags and dates.

Pure string work, no I/O.  A :class:`Command` is what the session writes to the wire: text
pieces with literals between them, so an argument that cannot be quoted (8-bit text,
CR/LF) travels as a literal without the caller knowing the wire syntax::

    Command.join([Command.text("UID SEARCH CHARSET UTF-8 SUBJECT"), search_string("Grüße")])
    # parts=("UID SEARCH CHARSET UTF-8 SUBJECT ", ""), literals=(b"Gr\\xc3\\xbc\\xc3\\x9fe",)
    # wire: UID SEARCH CHARSET UTF-8 SUBJECT {7}\\r\\nGrüße\\r\\n

Everything here raises ``ValueError`` for arguments it cannot express: those are bugs in
the caller (or hostile input that must not reach the wire), never server errors.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from imapjmap.imap.utf7 import encode_mailbox_name


@dataclass(frozen=True, slots=True)
class Command:
    """A command line with literals: ``parts[0] {n}CRLF literals[0] parts[1] ...``.

    ``parts`` carry their own spacing: the literal marker goes right after ``parts[i]``
    (so ``parts[i]`` normally ends in a space) and ``parts[i + 1]`` continues right after
    the literal's bytes.  The session chooses ``{n}`` or ``{n+}`` and adds the tag and the
    final CRLF.

    Raises:
        ValueError: ``len(parts) != len(literals) + 1``, or a part holds CR, LF or NUL
            (that would end the command line early: command injection).
    """

    parts: tuple[str, ...]
    literals: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.literals) + 1:
            raise ValueError(
                f"Command needs one more part than literals, got {len(self.parts)} parts "
                f"and {len(self.literals)} literals"
            )
        for part in self.parts:
            if _LINE_BREAKERS.search(part):
                raise ValueError(f"CR, LF or NUL in command text: {part[:60]!r}")

    @classmethod
    def text(cls, text: str) -> Command:
        """A literal-free command or argument.

        Raises:
            ValueError: the text holds CR, LF or NUL.
        """
        return cls((text,))

    @classmethod
    def literal(cls, data: bytes) -> Command:
        """One argument sent as a literal (``{n}`` + the bytes)."""
        return cls(("", ""), (data,))

    @classmethod
    def join(cls, pieces: Iterable[Command | str], sep: str = " ") -> Command:
        """Concatenate commands and plain strings with ``sep`` between neighbours.

        Raises:
            ValueError: a plain string holds CR, LF or NUL.
        """
        parts: list[str] = []
        literals: list[bytes] = []
        for index, piece in enumerate(pieces):
            command = Command.text(piece) if isinstance(piece, str) else piece
            if index == 0:
                parts.extend(command.parts)
            else:
                parts[-1] += sep + command.parts[0]
                parts.extend(command.parts[1:])
            literals.extend(command.literals)
        if not parts:
            return cls(("",))
        return cls(tuple(parts), tuple(literals))

    def __str__(self) -> str:
        """A log-safe rendering: literals are shown as ``{n}``, never their bytes."""
        out = [self.parts[0]]
        for literal, part in zip(self.literals, self.parts[1:], strict=True):
            out.append(f"{{{len(literal)}}}{part}")
        return "".join(out)


_LINE_BREAKERS = re.compile(r"[\r\n\x00]")
# RFC 3501 ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" '"' "\" "]"
_ATOM = re.compile(r'[^\x00-\x20\x7f-\U0010ffff(){%*"\\\]]+')
# ASTRING-CHAR adds "]" (resp-specials) to ATOM-CHAR.
_ASTRING_ATOM = re.compile(r'[^\x00-\x20\x7f-\U0010ffff(){%*"\\]+')


def quote(s: str) -> str:
    """Write ``s`` as an IMAP quoted string.

    Raises:
        ValueError: ``s`` holds CR, LF or NUL (not representable), or non-ASCII characters
            (the caller must send a literal: see :func:`string_arg`).
    """
    if _LINE_BREAKERS.search(s):
        raise ValueError(f"CR, LF or NUL cannot be quoted: {s[:60]!r}")
    if not s.isascii():
        raise ValueError(f"non-ASCII text needs a literal: {s[:60]!r}")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def astring(s: str) -> str:
    """Write ``s`` as an atom when that is unambiguous, else as a quoted string.

    ``NIL`` (any case) is quoted because as an atom it would read as the NIL token.

    Raises:
        ValueError: as :func:`quote`.
    """
    if _ASTRING_ATOM.fullmatch(s) and s.upper() != "NIL":
        return s
    return quote(s)


def string_arg(value: str) -> Command:
    """An astring argument holding any text: atom or quoted if possible, else a literal.

    For login names, passwords and other astrings; the literal carries the UTF-8 bytes.

    Raises:
        ValueError: the text holds a lone surrogate (no UTF-8 form).
    """
    if value.isascii() and not _LINE_BREAKERS.search(value):
        return Command.text(astring(value))
    return Command.literal(value.encode("utf-8"))


def search_string(value: str) -> Command:
    """A SEARCH string key (``SUBJECT x``); non-ASCII becomes a literal.

    Send the search with ``CHARSET UTF-8`` when any key is non-ASCII.  Compose several
    with :meth:`Command.join`.

    Raises:
        ValueError: the text holds a lone surrogate (no UTF-8 form).
    """
    if value.isascii() and not _LINE_BREAKERS.search(value):
        return Command.text(quote(value))
    return Command.literal(value.encode("utf-8"))


def mailbox(name: str) -> str:
    """A mailbox name as a command argument: modified UTF-7, then atom or quoted.

    ``INBOX`` is case-insensitive (RFC 3501 §5.1): any spelling is sent as ``INBOX`` so
    servers with case-sensitive storage find the real inbox.

    Raises:
        ValueError: the name holds a lone surrogate (no UTF-16 form).
    """
    if name.upper() == "INBOX":
        return "INBOX"
    return astring(encode_mailbox_name(name))


def sequence_set(uids: Iterable[int]) -> str:
    """Compress numbers into a sequence set: ``[9, 1, 2, 3, 5, 4]`` → ``"1:5,9"``.

    Raises:
        ValueError: no numbers, or a number below 1 (UIDs and sequence numbers are
            nz-number).
    """
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty sequence set")
    if ordered[0] < 1:
        raise ValueError(f"sequence numbers start at 1, got {ordered[0]}")
    ranges: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid != prev + 1:
            ranges.append(_range(start, prev))
            start = uid
        prev = uid
    ranges.append(_range(start, prev))
    return ",".join(ranges)


def _range(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}:{end}"


def flag_list(flags: Iterable[str]) -> str:
    """A parenthesised flag list: ``["\\\\Seen", "$Forwarded"]`` → ``(\\Seen $Forwarded)``.

    Raises:
        ValueError: a flag that is not an atom or ``\\`` + atom (keywords cannot be quoted in
            IMAP, so a flag with a space or a parenthesis cannot be sent at all).
    """
    checked: list[str] = []
    for flag in flags:
        name = flag[1:] if flag.startswith("\\") else flag
        if not _ATOM.fullmatch(name):
            raise ValueError(f"not a valid IMAP flag: {flag!r}")
        checked.append(flag)
    return "(" + " ".join(checked) + ")"


_MONTHS: Sequence[str] = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


def internaldate(d: dt.datetime) -> str:
    """A quoted date-time for APPEND: ``"05-Jan-2024 09:15:00 +0200"``.

    Month names are spelled here, not by strftime, which follows the process locale.

    Raises:
        ValueError: ``d`` is naive (the zone is part of the IMAP value), or its offset is
            not a whole number of minutes.
    """
    offset = d.utcoffset()
    if offset is None:
        raise ValueError("internaldate needs an aware datetime")
    seconds = int(offset.total_seconds())
    if seconds % 60 or offset.microseconds:
        raise ValueError(f"UTC offset {offset} is not whole minutes")
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return (
        f'"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year:04d} '
        f'{d.hour:02d}:{d.minute:02d}:{d.second:02d} {sign}{hours:02d}{minutes:02d}"'
    )
