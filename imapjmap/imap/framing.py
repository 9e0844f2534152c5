"""Cut the byte stream an IMAP server sends into whole responses (RFC 3501 §2.2.2, §7).

Bytes in, responses out, and nothing else: no socket, no clock, no event loop (the
"sans-I/O" shape of h11).  The session module feeds it whatever the network delivered, in
pieces of any size, and gets back the responses those bytes complete:

* :class:`Untagged` ``* ...``: the chunks ``(line0, literal0, line1, ..., lineN)`` that
  :func:`imapjmap.imap.parse.parse_reply` reads (line text without CRLF and without the
  leading ``"* "``, each literal's contents after the line that announced it);
* :class:`Tagged` ``tag OK|NO|BAD text``: the completion of one command;
* :class:`Continuation` ``+ text``: the server waits for more from us (a literal, the next
  step of AUTHENTICATE, or it is idling).

Rules
1. A response may span any number of reads and a read may hold any number of responses;
   how the stream is cut never changes the responses (the tests feed captured transcripts
   split at every byte offset).
2. A line ending in ``{n}`` (``{n+}``, ``~{n}``) announces a literal of exactly n bytes,
   after which the same response goes on with another line.  Only responses that may carry
   strings do so: a status response (``OK``, ``NO``, ``BAD``, ``BYE``, ``PREAUTH``), a
   tagged line and a continuation end at their first CRLF (their text is ``resp-text``, in
   which RFC 3501 §9 allows no literal), so a human text that happens to end in ``{5}``
   does not swallow the next five bytes.
3. Nothing is buffered without bound: a line longer than ``max_line``, a literal larger
   than ``max_literal`` (refused as soon as it is announced) or a response whose chunks add
   up to more than ``max_response`` raises :class:`FramingError`.  After an error the
   framer is spent: the stream's position is lost, the connection must be dropped.
4. Bytes are never decoded here except the tag and status of a tagged line (ASCII).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from imapjmap.errors import ImapProtocolViolation

__all__ = [
    "Continuation",
    "Framer",
    "FramingError",
    "Response",
    "Tagged",
    "Untagged",
]

#: A line: a SEARCH of every UID of a big mailbox on a server without ESEARCH is one line of
#: several megabytes (ten million UIDs, parse.MAX_SEARCH_IDS, take about 80 MB).
DEFAULT_MAX_LINE: Final = 128 * 1024 * 1024
#: A literal: the largest message a server will hand us (Dovecot and Cyrus default to no
#: limit; Gmail's is 35 MB, other hosted services stay below 150 MB).
DEFAULT_MAX_LITERAL: Final = 512 * 1024 * 1024
#: All the chunks of one response.
DEFAULT_MAX_RESPONSE: Final = 1024 * 1024 * 1024

# A literal marker ends a line (RFC 3501 §9 literal, RFC 7888 {n+}, RFC 3516 ~{n}).
_LITERAL: Final = re.compile(rb"\{(\d+)\+?\}\Z")
_MAX_DIGITS: Final = 20  # a size this long is refused before int() reads it
# Untagged responses whose text is resp-text (Rule 2), matched on the start of the line
# after "* ".
_STATUS: Final = re.compile(rb"(?:OK|NO|BAD|BYE|PREAUTH)(?: |\Z)", re.IGNORECASE)
_TAGGED_STATUS: Final = frozenset({"OK", "NO", "BAD"})


class FramingError(ImapProtocolViolation):
    """The server's bytes are not IMAP responses, or exceed a limit (Rule 3)."""


class Untagged(NamedTuple):
    """``* ...``: ``chunks`` as :func:`imapjmap.imap.parse.parse_reply` takes them."""

    chunks: tuple[bytes, ...]


class Tagged(NamedTuple):
    """``tag STATUS text``; ``status`` upper-cased, ``text`` as received (codes included)."""

    tag: str
    status: str
    text: bytes


class Continuation(NamedTuple):
    """``+ text``: the server waits for us."""

    text: bytes


Response = Untagged | Tagged | Continuation


class Framer:
    """Feed it bytes with :meth:`feed`; it returns the responses they complete (the module
    docstring has the rules)."""

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_response = max_response
        self._buf = bytearray()
        # how far the buffer's first, unfinished line has been searched for CRLF already:
        # a line of megabytes arriving 64 KiB at a time is scanned once, not once a read
        self._scanned = 0
        # the untagged response being read, when a literal made it span more than one line
        self._chunks: list[bytes] = []
        self._size = 0  # bytes in self._chunks
        self._literal_left = 0  # bytes still owed to the literal at self._chunks[-1]
        self._literal_parts: list[bytes] = []
        self._failed: FramingError | None = None

    @property
    def between_responses(self) -> bool:
        """True when no response is partly received: the stream may end here cleanly."""
        return not self._buf and not self._chunks

    def feed(self, data: bytes) -> list[Response]:
        """Take the next bytes of the stream; return the responses now complete, in order.

        Raises:
            FramingError: malformed input or a limit passed (Rule 3), then on every call.
        """
        if self._failed is not None:
            raise self._failed
        try:
            return self._feed(data)
        except FramingError as exc:
            self._failed = exc
            raise

    def _feed(self, data: bytes) -> list[Response]:
        out: list[Response] = []
        buf = self._buf
        buf += data
        pos = 0
        scanned = self._scanned
        self._scanned = 0
        end_of_data = len(buf)
        while pos < end_of_data:
            if self._literal_left:
                take = min(self._literal_left, end_of_data - pos)
                self._literal_parts.append(bytes(buf[pos : pos + take]))
                pos += take
                self._literal_left -= take
                if self._literal_left:
                    break
                self._chunks.append(b"".join(self._literal_parts))
                self._literal_parts.clear()
                continue
            end = buf.find(b"\r\n", max(pos, scanned))
            scanned = 0
            if end < 0:
                if end_of_data - pos > self.max_line:
                    raise FramingError(f"a line longer than {self.max_line} bytes")
                self._scanned = max(end_of_data - pos - 1, 0)  # a CR may end this read
                break
            if end - pos > self.max_line:
                raise FramingError(f"a line longer than {self.max_line} bytes")
            line = bytes(buf[pos:end])
            pos = end + 2
            response = self._line(line)
            if response is not None:
                out.append(response)
        del buf[:pos]
        return out

    def _line(self, line: bytes) -> Response | None:
        chunks = self._chunks
        if chunks:
            # the line after a literal: the same response goes on
            self._add(line)
            return self._literal_or_end(line)
        if line.startswith(b"* "):
            rest = line[2:]
            if not rest.endswith(b"}") or _STATUS.match(rest):
                return Untagged((rest,))  # the common case: one line
            self._add(rest)
            return self._literal_or_end(rest)
        if line.startswith(b"+"):
            return Continuation(line[2:] if line.startswith(b"+ ") else line[1:])
        return _tagged(line)

    def _add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.max_response:
            raise FramingError(f"a response larger than {self.max_response} bytes")
        self._chunks.append(chunk)

    def _literal_or_end(self, line: bytes) -> Untagged | None:
        match = _LITERAL.search(line)
        if match is None:
            response = Untagged(tuple(self._chunks))
            self._chunks.clear()
            self._size = 0
            return response
        digits = match.group(1)
        if len(digits) > _MAX_DIGITS or int(digits) > self.max_literal:
            shown = digits[:_MAX_DIGITS].decode() + ("..." if len(digits) > _MAX_DIGITS else "")
            raise FramingError(f"a literal of {shown} bytes (at most {self.max_literal})")
        size = int(digits)
        if self._size + size > self.max_response:
            raise FramingError(f"a response larger than {self.max_response} bytes")
        self._size += size
        if size == 0:
            self._chunks.append(b"")
        else:
            self._literal_left = size
        return None


def _tagged(line: bytes) -> Tagged:
    tag, sep, rest = line.partition(b" ")
    status, _, text = rest.partition(b" ")
    status_text = status.decode("ascii", "replace").upper()
    if not tag or not sep or status_text not in _TAGGED_STATUS:
        raise FramingError(f"not an IMAP response: {line[:80]!r}")
    return Tagged(tag.decode("ascii", "replace"), status_text, text)
