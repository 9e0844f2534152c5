"""The ManageSieve (RFC 5804) core: responses, literals, capabilities, command text."""

from __future__ import annotations

import base64

import pytest

from imapjmap.managesieve.protocol import (
    Atom,
    ManageSieveProtocolError,
    Reader,
    Response,
    capabilities,
    command,
    extensions,
    plain_initial_response,
    responses_of,
    sasl_mechanisms,
    script_list,
    string,
)

GREETING = (
    b'"IMPLEMENTATION" "Example Sieve"\r\n'
    b'"SIEVE" "fileinto vacation include date relational"\r\n'
    b'"SASL" "PLAIN LOGIN"\r\n'
    b'"STARTTLS"\r\n'
    b'"VERSION" "1.0"\r\n'
    b'OK "ready"\r\n'
)

# (server octets, the one response they hold)
RESPONSES: list[tuple[bytes, Response]] = [
    (b"OK\r\n", Response("OK")),
    (b'OK "done"\r\n', Response("OK", text="done")),
    (b'ok "lower case status"\r\n', Response("OK", text="lower case status")),
    (b'NO "no such"\r\n', Response("NO", text="no such")),
    (b'NO (NONEXISTENT) "no script"\r\n', Response("NO", "NONEXISTENT", None, "no script")),
    (b"NO (QUOTA/MAXSIZE) {5}\r\ntoo b\r\n", Response("NO", "QUOTA/MAXSIZE", None, "too b")),
    (b'BYE "going"\r\n', Response("BYE", text="going")),
    (
        b'OK (SASL "c2VydmVy") "welcome"\r\n',
        Response("OK", "SASL", b"c2VydmVy", "welcome"),
    ),
    (b'OK (TAG {3}\r\nabc) "x"\r\n', Response("OK", "TAG", b"abc", "x")),
    (
        b"NO {24}\r\nline 1: error\r\nline 2: x\r\n",
        Response("NO", text="line 1: error\r\nline 2: x"),
    ),
    (b'NO "a \\"quoted\\" \\\\ word"\r\n', Response("NO", text='a "quoted" \\ word')),
    (
        b'"a" ACTIVE\r\n"b"\r\nOK\r\n',
        Response("OK", lines=((b"a", Atom("ACTIVE")), (b"b",))),
    ),
    (
        b"{10}\r\nkeep;\r\nok;\r\nOK\r\n",
        Response("OK", lines=((b"keep;\r\nok;",),)),
    ),
    (b"{0}\r\n\r\nOK\r\n", Response("OK", lines=((b"",),))),
    (b'OK (WARNINGS) "line 3: warning"\r\n', Response("OK", "WARNINGS", None, "line 3: warning")),
]


@pytest.mark.parametrize(("octets", "expected"), RESPONSES)
def test_response_parses(octets: bytes, expected: Response) -> None:
    assert responses_of(octets) == [expected]


@pytest.mark.parametrize(("octets", "expected"), RESPONSES)
def test_response_parses_fed_one_octet_at_a_time(octets: bytes, expected: Response) -> None:
    """Literals and quoted strings split anywhere in transit still make one response."""
    assert responses_of([octets[i : i + 1] for i in range(len(octets))]) == [expected]


def test_incomplete_response_waits_for_more() -> None:
    reader = Reader()
    reader.feed(b'"a" ACTIVE\r\n{10}\r\nkeep;')
    assert reader.next_response() is None
    reader.feed(b"\r\nok;\r\nOK\r")
    assert reader.next_response() is None
    reader.feed(b"\n")
    response = reader.next_response()
    assert response is not None and response.lines[1] == (b"keep;\r\nok;",)


def test_two_responses_in_one_read() -> None:
    assert [r.status for r in responses_of(b'OK\r\nNO "x"\r\n')] == ["OK", "NO"]


@pytest.mark.parametrize(
    "octets",
    [
        b'NO "broken\r\n" x\r\n',  # a line break inside a quoted string
        b"NO {abc}\r\n",  # a literal whose length is not a number
        b"NO {3}x\r\nabc\r\n",  # no CRLF after the literal's length
        b"OK (\r\n",  # a response code without its parenthesis
        b"OK ( )\r\n",  # an empty response code
        b"OK \rx\r\n",  # a CR alone
        b"NO {99999999999}\r\n",  # a literal of absurd size
        b"NO {3}\r\nabc\n",  # a bare LF
        b"220 smtp.example.org ESMTP\r\n",  # another protocol's greeting
        b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
    ],
)
def test_garbage_is_a_protocol_error(octets: bytes) -> None:
    with pytest.raises(ManageSieveProtocolError):
        responses_of(octets)


def test_capabilities_of_the_greeting() -> None:
    (greeting,) = responses_of(GREETING)
    caps = capabilities(greeting)
    assert caps["IMPLEMENTATION"] == "Example Sieve"
    assert caps["STARTTLS"] == ""
    assert caps["VERSION"] == "1.0"
    assert extensions(caps) == {"fileinto", "vacation", "include", "date", "relational"}
    assert sasl_mechanisms(caps) == {"PLAIN", "LOGIN"}


def test_script_list() -> None:
    (response,) = responses_of(b'"vacation" ACTIVE\r\n{4}\r\nmine\r\n"x y"\r\nOK\r\n')
    assert script_list(response) == [("vacation", True), ("mine", False), ("x y", False)]


def test_script_list_refuses_a_line_without_a_name() -> None:
    (response,) = responses_of(b"\r\nOK\r\n")
    with pytest.raises(ManageSieveProtocolError):
        script_list(response)


# (command and arguments, the octets sent)
COMMANDS: list[tuple[tuple[str, ...] | tuple[str, str, bytes], bytes]] = [
    (("LISTSCRIPTS",), b"LISTSCRIPTS\r\n"),
    (("GETSCRIPT", "my script"), b'GETSCRIPT "my script"\r\n'),
    (("SETACTIVE", ""), b'SETACTIVE ""\r\n'),
    (("DELETESCRIPT", 'a"b\\c'), b'DELETESCRIPT "a\\"b\\\\c"\r\n'),
    (("GETSCRIPT", "été"), 'GETSCRIPT "été"\r\n'.encode()),
    (
        ("PUTSCRIPT", "s", b"keep;\r\nstop;\r\n"),
        b'PUTSCRIPT "s" {14+}\r\nkeep;\r\nstop;\r\n\r\n',
    ),
    (("CHECKSCRIPT", b"a\0b"), b"CHECKSCRIPT {3+}\r\na\0b\r\n"),
]


@pytest.mark.parametrize(("args", "octets"), COMMANDS)
def test_command_text(args: tuple[str, ...], octets: bytes) -> None:
    assert command(*args) == octets


def test_a_long_string_is_a_non_synchronising_literal() -> None:
    assert string("x" * 1024) == b'"' + b"x" * 1024 + b'"'
    assert string("x" * 1025) == b"{1025+}\r\n" + b"x" * 1025


def test_sasl_plain_initial_response() -> None:
    """RFC 4616: authzid (empty) NUL authcid NUL password, base64."""
    assert base64.b64decode(plain_initial_response("alice", "pä ss")) == b"\0alice\0p\xc3\xa4 ss"
