"""Tests for imapjmap.imap.commands (argument builders)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.imap import commands
from imapjmap.imap.commands import Command
from imapjmap.imap.lexer import lex

QUOTE = [
    ("", '""'),
    ("abc", '"abc"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("tab\there", '"tab\there"'),
]


@pytest.mark.parametrize(("text", "wire"), QUOTE)
def test_quote(text: str, wire: str) -> None:
    assert commands.quote(text) == wire


@pytest.mark.parametrize("text", ["a\rb", "a\nb", "a\x00b", "Grüße", "日本"])
def test_quote_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"CR, LF or NUL|literal"):
        commands.quote(text)


ASTRING = [
    ("INBOX", "INBOX"),
    ("alice@example.com", "alice@example.com"),
    ("a]b", "a]b"),  # "]" is an ASTRING-CHAR
    ("[Gmail]/Sent", "[Gmail]/Sent"),
    ("", '""'),
    ("two words", '"two words"'),
    ("NIL", '"NIL"'),
    ("nil", '"nil"'),
    ("a(b", '"a(b"'),
    ("a{b", '"a{b"'),
    ("50%", '"50%"'),
    ("a*", '"a*"'),
    ('q"', '"q\\""'),
    ("\\Seen", '"\\\\Seen"'),
]


@pytest.mark.parametrize(("text", "wire"), ASTRING)
def test_astring(text: str, wire: str) -> None:
    assert commands.astring(text) == wire


MAILBOX = [
    ("INBOX", "INBOX"),
    ("inbox", "INBOX"),
    ("Inbox", "INBOX"),
    ("INBOX/Sub", "INBOX/Sub"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Sent Items", '"Sent Items"'),
    ("Ordner & Co", '"Ordner &- Co"'),
    ('Say "hi"', '"Say \\"hi\\""'),
    ("日本語", "&ZeVnLIqe-"),
    ("Nil", '"Nil"'),
    ("", '""'),
]


@pytest.mark.parametrize(("name", "wire"), MAILBOX)
def test_mailbox(name: str, wire: str) -> None:
    assert commands.mailbox(name) == wire


SEQUENCE_SETS = [
    ([1], "1"),
    ([1, 2, 3, 4, 5, 9], "1:5,9"),
    ([9, 1, 2, 3, 5, 4], "1:5,9"),
    ([3, 3, 3], "3"),
    ([1, 3, 5], "1,3,5"),
    ([10, 11, 20, 21, 22, 4294967295], "10:11,20:22,4294967295"),
    (range(1, 100_001), "1:100000"),
]


@pytest.mark.parametrize(("uids", "wire"), SEQUENCE_SETS)
def test_sequence_set(uids: list[int], wire: str) -> None:
    assert commands.sequence_set(uids) == wire


@pytest.mark.parametrize("uids", [[], [0], [-1, 2]])
def test_sequence_set_rejects(uids: list[int]) -> None:
    with pytest.raises(ValueError):
        commands.sequence_set(uids)


FLAG_LISTS = [
    ([], "()"),
    (["\\Seen"], "(\\Seen)"),
    (["\\Seen", "$Forwarded"], "(\\Seen $Forwarded)"),
    (["$MDNSent", "Junk", "\\Flagged"], "($MDNSent Junk \\Flagged)"),
]


@pytest.mark.parametrize(("flags", "wire"), FLAG_LISTS)
def test_flag_list(flags: list[str], wire: str) -> None:
    assert commands.flag_list(flags) == wire


@pytest.mark.parametrize(
    "flag", ["two words", "a(b", "\\", "", "Grüß", "a]", "x\r\n", "\\*", '"q"']
)
def test_flag_list_rejects(flag: str) -> None:
    with pytest.raises(ValueError, match="not a valid IMAP flag"):
        commands.flag_list(["\\Seen", flag])


INTERNALDATES = [
    (
        dt.datetime(2024, 1, 5, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        '"05-Jan-2024 09:15:00 +0200"',
    ),
    (
        dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
        '"17-Jul-1996 02:44:25 -0700"',
    ),
    (dt.datetime(2024, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC), '"31-Dec-2024 23:59:59 +0000"'),
    (
        dt.datetime(2024, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
        '"01-Jun-2024 00:00:00 -0330"',
    ),
]


@pytest.mark.parametrize(("when", "wire"), INTERNALDATES)
def test_internaldate(when: dt.datetime, wire: str) -> None:
    assert commands.internaldate(when) == wire


def test_internaldate_rejects_naive_and_odd_offsets() -> None:
    with pytest.raises(ValueError, match="aware"):
        commands.internaldate(dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="whole minutes"):
        commands.internaldate(dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=30))))


# -- Command ---------------------------------------------------------------------------------

COMPOSED = [
    (Command.text("NOOP"), ("NOOP",), ()),
    (Command.literal(b"abc"), ("", ""), (b"abc",)),
    (Command.join(["UID SEARCH", "ALL"]), ("UID SEARCH ALL",), ()),
    (
        Command.join(
            [Command.text("LOGIN"), commands.string_arg("alice"), commands.string_arg("pässword")]
        ),
        ("LOGIN alice ", ""),
        ("pässword".encode(),),
    ),
    (
        Command.join(
            [
                "UID SEARCH CHARSET UTF-8 SUBJECT",
                commands.search_string("Grüße"),
                "FROM",
                commands.search_string("bob"),
                "TEXT",
                commands.search_string("日本"),
            ]
        ),
        ("UID SEARCH CHARSET UTF-8 SUBJECT ", ' FROM "bob" TEXT ', ""),
        ("Grüße".encode(), "日本".encode()),
    ),
    (Command.join([Command.literal(b"a"), Command.literal(b"b")]), ("", " ", ""), (b"a", b"b")),
    (Command.join([]), ("",), ()),
    (Command.join(["A", "B"], sep=""), ("AB",), ()),
    (commands.string_arg("line\r\nbreak"), ("", ""), (b"line\r\nbreak",)),
    (commands.string_arg(""), ('""',), ()),
    (commands.search_string("bob"), ('"bob"',), ()),
    (commands.search_string("ab\ncd"), ("", ""), (b"ab\ncd",)),
]


@pytest.mark.parametrize(("command", "parts", "literals"), COMPOSED)
def test_command_composition(
    command: Command, parts: tuple[str, ...], literals: tuple[bytes, ...]
) -> None:
    assert (command.parts, command.literals) == (parts, literals)


def test_command_str_hides_literal_bytes() -> None:
    command = Command.join(["LOGIN alice", commands.string_arg("sécret")])
    assert str(command) == "LOGIN alice {7}"


@pytest.mark.parametrize(
    ("parts", "literals"),
    [(("a",), (b"x",)), (("a", "b"), ()), (("a\r\nb",), ()), (("a", "\n"), (b"x",))],
)
def test_command_rejects_bad_shapes(parts: tuple[str, ...], literals: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError):
        Command(parts, literals)


def test_command_join_rejects_line_breaks_in_text() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Command.join(["SELECT", "x\r\nA2 LOGOUT"])


# -- what we write, our own lexer reads back ---------------------------------------------------

ascii_text = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=127, exclude_characters="\r\n"),
    max_size=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(ascii_text)
def test_quote_and_astring_round_trip_through_the_lexer(text: str) -> None:
    assert lex([commands.quote(text).encode()]) == [text]
    assert lex([commands.astring(text).encode()]) == [text]


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20))
def test_mailbox_round_trip(name: str) -> None:
    from imapjmap.imap.utf7 import decode_mailbox_name

    (token,) = lex([commands.mailbox(name).encode()])
    assert isinstance(token, str)
    expected = "INBOX" if name.upper() == "INBOX" else name
    assert decode_mailbox_name(token) == expected
