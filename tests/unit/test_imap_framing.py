"""The IMAP framer (imapjmap.imap.framing): byte tables, limits, and captured transcripts
split at every byte offset and at random.

The transcripts are tests/data/imap/*.txt (README.md there): real Dovecot 2.3.19 and
Cyrus 3.6.1 output with FETCH literals, a 42 KB BODY[], LIST-STATUS, ESEARCH, VANISHED,
IDLE and NOTIFY events.  The expected responses come from :func:`read_stream`, a reader
that sees the whole file at once, so it needs none of the framer's incremental state.
"""

from __future__ import annotations

import importlib.util
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from imapjmap.errors import ImapProtocolViolation
from imapjmap.imap.framing import (
    Continuation,
    Framer,
    FramingError,
    Response,
    Tagged,
    Untagged,
)
from imapjmap.imap.parse import parse_reply

DATA = Path(__file__).resolve().parent.parent / "data" / "imap"
TRANSCRIPTS = ("dovecot-2.3.19.txt", "dovecot-2.3.19-stream.txt", "cyrus-3.6.1-stream.txt")


def feed_all(pieces: list[bytes], framer: Framer | None = None) -> list[Response]:
    framer = framer or Framer()
    out: list[Response] = []
    for piece in pieces:
        out += framer.feed(piece)
    return out


# -- byte tables -----------------------------------------------------------------------------

U, T, C = Untagged, Tagged, Continuation

CASES: list[tuple[str, list[bytes], list[Response]]] = [
    ("untagged", [b"* 3 EXISTS\r\n"], [U((b"3 EXISTS",))]),
    ("tagged", [b"A1 OK [READ-WRITE] done\r\n"], [T("A1", "OK", b"[READ-WRITE] done")]),
    ("tagged status any case", [b"a1 no nope\r\n"], [T("a1", "NO", b"nope")]),
    ("tagged without text", [b"A1 OK\r\n"], [T("A1", "OK", b"")]),
    ("tagged BAD", [b"A1 BAD what?\r\n"], [T("A1", "BAD", b"what?")]),
    ("continuation", [b"+ Ready\r\n"], [C(b"Ready")]),
    ("bare continuation", [b"+\r\n"], [C(b"")]),
    ("continuation without space", [b"+idling\r\n"], [C(b"idling")]),
    ("continuation base64", [b"+ eyJzdGF0dXMiOiI0MDAifQ==\r\n"], [C(b"eyJzdGF0dXMiOiI0MDAifQ==")]),
    (
        "several in one read",
        [b"* 1 EXISTS\r\n* 0 RECENT\r\nA1 OK x\r\n"],
        [U((b"1 EXISTS",)), U((b"0 RECENT",)), T("A1", "OK", b"x")],
    ),
    (
        "one line over three reads",
        [b"* 1 FE", b"TCH (FLAGS ())\r", b"\n"],
        [U((b"1 FETCH (FLAGS ())",))],
    ),
    (
        "literal",
        [b"* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\n"],
        [U((b"1 FETCH (BODY[] {5}", b"ab\r\nc", b")"))],
    ),
    (
        "literal holding what looks like responses",
        [b"* 1 FETCH (BODY[] {23}\r\n* 2 EXISTS\r\nA1 OK {3}\r\n)\r\nA1 OK done\r\n"],
        [
            U((b"1 FETCH (BODY[] {23}", b"* 2 EXISTS\r\nA1 OK {3}\r\n", b")")),
            T("A1", "OK", b"done"),
        ],
    ),
    (
        "two literals",
        [b"* 1 FETCH (BODY[1] {1}\r\nx BODY[2] {2}\r\nyz)\r\n"],
        [U((b"1 FETCH (BODY[1] {1}", b"x", b" BODY[2] {2}", b"yz", b")"))],
    ),
    (
        "empty literal",
        [b"* 1 FETCH (BODY[TEXT] {0}\r\n)\r\n"],
        [U((b"1 FETCH (BODY[TEXT] {0}", b"", b")"))],
    ),
    (
        "literal at the end of the line after it",
        [b'* LIST () "/" {3}\r\nabc\r\n'],
        [U((b'LIST () "/" {3}', b"abc", b""))],
    ),
    (
        "literal8 and non-synchronising marker",
        [b"* 1 FETCH (BINARY[1] ~{2}\r\n\x00\xff X {1+}\r\nq)\r\n"],
        [U((b"1 FETCH (BINARY[1] ~{2}", b"\x00\xff", b" X {1+}", b"q", b")"))],
    ),
    (
        "literal arriving byte by byte",
        [b"* 1 FETCH (BODY[] {3}\r\n", b"a", b"b", b"c", b")\r\n"],
        [U((b"1 FETCH (BODY[] {3}", b"abc", b")"))],
    ),
    (
        "marker split across reads",
        [b"* 1 FETCH (BODY[] {1", b"0}\r", b"\n0123456789)\r\n"],
        [U((b"1 FETCH (BODY[] {10}", b"0123456789", b")"))],
    ),
    (
        "braces not at the end are text",
        [b'* 1 FETCH (BODY[] "{5}")\r\n'],
        [U((b'1 FETCH (BODY[] "{5}")',))],
    ),
    # Rule 2: resp-text cannot hold a literal
    ("status text ending in braces", [b"* OK hello {5}\r\n"], [U((b"OK hello {5}",))]),
    ("BYE ending in braces", [b"* bye see you {2}\r\n"], [U((b"bye see you {2}",))]),
    ("tagged text ending in braces", [b"A1 OK done {5}\r\n"], [T("A1", "OK", b"done {5}")]),
    ("continuation ending in braces", [b"+ go {5}\r\n"], [C(b"go {5}")]),
    ("OKAY is not OK", [b"* OKAY {1}\r\nx\r\n"], [U((b"OKAY {1}", b"x", b""))]),
    ("nothing yet", [b"* 1 EXI"], []),
]


@pytest.mark.parametrize(("pieces", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_table(pieces: list[bytes], expected: list[Response]) -> None:
    assert feed_all(pieces) == expected


@pytest.mark.parametrize(("pieces", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_table_one_byte_at_a_time(pieces: list[bytes], expected: list[Response]) -> None:
    data = b"".join(pieces)
    assert feed_all([data[i : i + 1] for i in range(len(data))]) == expected


MALFORMED: list[tuple[str, bytes, str]] = [
    ("unknown tagged status", b"A1 MAYBE x\r\n", "not an IMAP response"),
    ("a word alone", b"garbage\r\n", "not an IMAP response"),
    ("empty line", b"\r\n", "not an IMAP response"),
    ("star without space", b"*OK hi\r\n", "not an IMAP response"),
    ("literal size of 21 digits", b"* 1 X {123456789012345678901}\r\n", "literal of 12345"),
]


@pytest.mark.parametrize(
    ("data", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed(data: bytes, message: str) -> None:
    framer = Framer()
    with pytest.raises(FramingError, match=re.escape(message)):
        framer.feed(data)
    # Rule 3: the position is lost, the framer stays failed
    with pytest.raises(FramingError):
        framer.feed(b"* 1 EXISTS\r\n")


def test_framing_error_is_a_protocol_violation() -> None:
    # the session breaks the connection on any ImapProtocolViolation
    assert issubclass(FramingError, ImapProtocolViolation)


# -- limits (Rule 3) -------------------------------------------------------------------------


def test_line_limit_applies_before_the_line_ends() -> None:
    framer = Framer(max_line=10)
    assert framer.feed(b"* 12345678") == []  # 10 bytes: still allowed
    with pytest.raises(FramingError, match="line longer than 10"):
        framer.feed(b"9")


def test_line_limit_applies_to_a_whole_line() -> None:
    assert Framer(max_line=10).feed(b"* 12345678\r\n") == [U((b"12345678",))]
    with pytest.raises(FramingError, match="line longer than 10"):
        Framer(max_line=10).feed(b"* 123456789\r\n")


def test_line_limit_applies_to_lines_after_literals() -> None:
    framer = Framer(max_line=12)
    framer.feed(b"* 1 X {2}\r\nab")
    with pytest.raises(FramingError, match="line longer"):
        framer.feed(b" 0123456789012\r\n")


def test_literal_limit_refuses_the_marker_before_any_literal_byte() -> None:
    framer = Framer(max_literal=100)
    assert framer.feed(b"* 1 FETCH (BODY[] {100}\r\n" + b"x" * 100 + b")\r\n")
    with pytest.raises(FramingError, match="literal of 101 bytes"):
        framer.feed(b"* 2 FETCH (BODY[] {101}\r\n")


def test_response_limit_counts_lines_and_literals() -> None:
    framer = Framer(max_response=30)
    # 8 + 10 + 6 + 5 + 1 = 30 bytes: allowed
    assert framer.feed(b"* 1 X {10}\r\n0123456789 Y {5}\r\nabcde)\r\n") == [
        U((b"1 X {10}", b"0123456789", b" Y {5}", b"abcde", b")"))
    ]
    framer.feed(b"* 1 X {10}\r\n0123456789 Y {5}\r\n")  # 29 announced
    with pytest.raises(FramingError, match="response larger than 30"):
        framer.feed(b"abcde))\r\n")


def test_response_limit_stops_an_endless_chain_of_small_literals() -> None:
    framer = Framer(max_response=1000)
    framer.feed(b"* 1 X {1}\r\ny")
    with pytest.raises(FramingError, match="response larger"):
        for _ in range(1000):
            framer.feed(b" x {1}\r\ny")


def test_a_line_of_megabytes_over_many_reads() -> None:
    """A plain SEARCH of every UID (no ESEARCH) is one line of megabytes; each read is
    searched for CRLF from where the last one stopped, a CR ending a read included."""
    line = b"* SEARCH " + b" ".join(b"%d" % n for n in range(300_000)) + b"\r\n"
    for size in (65536, len(line) - 1):
        pieces = [line[i : i + size] for i in range(0, len(line), size)]
        assert feed_all(pieces) == [U((line[2:-2],))]


def test_between_responses() -> None:
    framer = Framer()
    assert framer.between_responses
    for piece in (b"* 1 FETCH (BODY[] {2}\r\n", b"ab", b")\r", b"\n"):
        assert framer.between_responses is (piece == b"* 1 FETCH (BODY[] {2}\r\n")
        framer.feed(piece)
    assert framer.between_responses


# -- captured transcripts --------------------------------------------------------------------

_MARKER = re.compile(rb"~?\{(\d+)\+?\}\Z")


@dataclass(frozen=True)
class Stream:
    """A transcript without its ``C:`` lines: the bytes the server sent, the responses the
    file holds, and where each command's output starts (an offset into ``data``)."""

    data: bytes
    responses: list[Response]
    commands: list[tuple[str, int, int]]  # (name, start, end) in data
    names: list[str]  # the command each response belongs to


def read_stream(path: Path) -> Stream:
    raw = path.read_bytes()
    data = bytearray()
    responses: list[Response] = []
    names: list[str] = []
    commands: list[tuple[str, int, int]] = []
    pos = 0
    while pos < len(raw):
        start = pos
        end = raw.index(b"\r\n", pos)
        chunks = [raw[pos:end]]
        pos = end + 2
        if chunks[0].startswith(b"C: "):
            if commands:
                commands[-1] = (commands[-1][0], commands[-1][1], len(data))
            commands.append((chunks[0][3:].split(b" ")[0].decode(), len(data), -1))
            continue
        while (marker := _MARKER.search(chunks[-1])) and not chunks[0].startswith(b"+"):
            size = int(marker.group(1))
            end = raw.index(b"\r\n", pos + size)
            chunks += [raw[pos : pos + size], raw[pos + size : end]]
            pos = end + 2
        data += raw[start:pos]
        names.append(commands[-1][0])
        line = chunks[0]
        if line.startswith(b"* "):
            responses.append(Untagged((line[2:], *chunks[1:])))
        elif line.startswith(b"+"):
            responses.append(Continuation(line[2:]))
        else:
            tag, status, text = [*line.split(b" ", 2), b""][:3]
            responses.append(Tagged(tag.decode(), status.decode(), text))
    commands[-1] = (commands[-1][0], commands[-1][1], len(data))
    return Stream(bytes(data), responses, commands, names)


STREAMS = {name: read_stream(DATA / name) for name in TRANSCRIPTS}


def _capture_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("capture_stream", DATA / "capture_stream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_in_one_piece(name: str) -> None:
    stream = STREAMS[name]
    framer = Framer()
    assert framer.feed(stream.data) == stream.responses
    assert framer.between_responses


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_split_at_every_offset(name: str) -> None:
    """Each command's output split in two at every offset.  Between commands the framer holds
    nothing (checked here), so a split inside one command's output cannot change what the
    others give: this covers every split of the whole stream at a fraction of the cost."""
    stream = STREAMS[name]
    framer = Framer()
    for command, start, end in stream.commands:
        part = stream.data[start:end]
        expected = framer.feed(part)
        assert framer.between_responses, command
        for cut in range(1, len(part)):
            got = feed_all([part[:cut], part[cut:]])
            assert got == expected, (command, cut)


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_random_chunks(name: str) -> None:
    stream = STREAMS[name]
    rng = random.Random(name)
    for _ in range(20):
        pieces, pos = [], 0
        biggest = rng.choice((2, 16, 300, 5000, 70000))
        while pos < len(stream.data):
            size = rng.randint(1, biggest)
            pieces.append(stream.data[pos : pos + size])
            pos += size
        assert feed_all(pieces) == stream.responses


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_byte_by_byte(name: str) -> None:
    data = STREAMS[name].data
    assert feed_all([data[i : i + 1] for i in range(len(data))]) == STREAMS[name].responses


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_responses_parse(name: str) -> None:
    """What the framer gives is what parse_reply takes: every command's reply parses."""
    stream = STREAMS[name]
    untagged: list[tuple[bytes, ...]] = []
    tagged = 0
    for response in Framer().feed(stream.data):
        if isinstance(response, Untagged):
            untagged.append(response.chunks)
        elif isinstance(response, Tagged):
            reply = parse_reply(untagged, response.status, response.text)
            assert reply.tagged.status == response.status
            untagged, tagged = [], tagged + 1
    assert tagged > 20


@pytest.mark.parametrize("name", ["dovecot-2.3.19-stream.txt", "cyrus-3.6.1-stream.txt"])
def test_transcript_big_body_arrives_whole(name: str) -> None:
    stream = STREAMS[name]
    big = _capture_script().big_message()
    bodies = [
        r.chunks[1]
        for r, command in zip(stream.responses, stream.names, strict=True)
        if command == "uid-fetch-big" and isinstance(r, Untagged)
    ]
    assert bodies == [big]
    assert len(big) > 40_000
    # every continuation the server sent: one per synchronising literal, one for IDLE
    continuations = [r for r in stream.responses if isinstance(r, Continuation)]
    assert len(continuations) == 2 + 4 + 1


def test_dovecot_notify_and_idle_events_are_framed() -> None:
    stream = STREAMS["dovecot-2.3.19-stream.txt"]
    by_command: dict[str, list[Response]] = {}
    for response, command in zip(stream.responses, stream.names, strict=True):
        by_command.setdefault(command, []).append(response)
    assert by_command["idle"][0] == Continuation(b"idling")
    assert Untagged((b"4 EXISTS",)) in by_command["idle"]
    assert by_command["notify-noop"][0] == Untagged(
        (b"STATUS Sub (MESSAGES 1 UIDNEXT 2 UNSEEN 1 HIGHESTMODSEQ 2)",)
    )
    assert by_command["logout"][0] == Untagged((b"BYE Logging out",))
