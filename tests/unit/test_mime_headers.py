"""Header fields: raw splitting, every parsed form, form_allowed, header_property."""

from __future__ import annotations

from typing import Any

import pytest

from imapjmap.mime.codec import decode_encoded_words
from imapjmap.mime.headers import (
    FORMS,
    form_allowed,
    header_property,
    parse_form,
    raw_headers,
    select_header,
    split_header_block,
)

# --- raw headers --------------------------------------------------------------------------

RAW_CASES: list[tuple[bytes, list[tuple[str, str]]]] = [
    (b"Subject: hi\r\n\r\nbody", [("Subject", " hi")]),
    (b"Subject:hi\r\n\r\n", [("Subject", "hi")]),  # no space after the colon
    (b"Subject:  two  \r\n\r\n", [("Subject", "  two  ")]),  # white space kept
    (b"Subject: a\r\n b\r\n\tc\r\n\r\n", [("Subject", " a\r\n b\r\n\tc")]),  # folds kept
    (b"Subject: bare\n lf\n\nbody", [("Subject", " bare\n lf")]),  # bare LF input
    (b"Subject : obs\r\n\r\n", [("Subject", " obs")]),  # RFC 5322 §4.5 obs WSP
    (b"X-Empty:\r\n\r\n", [("X-Empty", "")]),
    (b"A: 1\r\nB: 2", [("A", " 1"), ("B", " 2")]),  # no empty line, no final CRLF
    (b"From alice Mon Jan  1 00:00:00 2024\r\nA: 1\r\n\r\n", [("A", " 1")]),  # mbox line
    (b"A: 1\r\ngarbage line\r\nB: 2\r\n\r\n", [("A", " 1"), ("B", " 2")]),  # ignored
    (b"A: nul\x00byte\r\n\r\n", [("A", " nulbyte")]),  # NUL dropped (MUST)
    (b"A: caf\xc3\xa9\r\n\r\n", [("A", " caf\u00e9")]),  # RFC 6532 UTF-8
    (b"A: caf\xe9!\r\n\r\n", [("A", " caf\ufffd!")]),  # not UTF-8 → U+FFFD
    (b"B: y\r\nA\xff: x\r\n\r\n", [("B", " y")]),  # 8-bit name: not a field, ignored
    (b"A\xff: x\r\nB: y\r\n\r\n", []),  # ... and as first line: no header at all
    (b"", []),
    (b"\r\nbody only", []),
]


@pytest.mark.parametrize(("raw", "expected"), RAW_CASES)
def test_raw_headers(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert raw_headers(raw) == expected


def test_body_offset() -> None:
    raw = b"A: 1\r\nB: 2\r\n\r\nbody\r\n"
    assert split_header_block(raw)[1] == raw.index(b"body")
    assert split_header_block(b"A: 1")[1] == 4
    # a MIME part whose first line is not a field has no header: the body starts there
    assert split_header_block(b"just text\r\nmore: x\r\n") == ([], 0)
    assert split_header_block(b" indented\r\n") == ([], 0)


# --- forms ---------------------------------------------------------------------------------

E = [
    {"name": "James Smythe", "email": "james@example.com"},
    {"name": None, "email": "jane@example.com"},
    {"name": "John Sm\u00eeth", "email": "john@example.com"},
]
RFC_ADDRESS_LIST = (
    ' "  James Smythe" <james@example.com>, Friends:\r\n  jane@example.com, '
    "=?UTF-8?Q?John_Sm=C3=AEth?=\r\n  <john@example.com>;"
)

FORM_CASES: list[tuple[str, str, Any]] = [
    # asRaw is the value as given
    ("asRaw", " a\r\n b", " a\r\n b"),
    # asText (§4.1.2.2)
    ("asText", " Hello", "Hello"),
    ("asText", " a\r\n b", "a b"),
    ("asText", "  trailing  ", "trailing"),
    ("asText", " =?utf-8?q?caf=C3=A9?=", "caf\u00e9"),
    ("asText", " =?UTF-8?B?Y2Fmw6k=?=", "caf\u00e9"),
    ("asText", " =?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # space between words dropped
    ("asText", " =?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),  # also across a fold
    ("asText", " =?utf-8?q?a?= b", "a b"),
    ("asText", " =?utf-8?q?a_b?=", "a b"),  # "_" is a space in Q
    ("asText", " =?utf-8?B?U3RyYcM=?= =?utf-8?B?n2U=?=", "Stra\u00dfe"),  # split char
    ("asText", " Re:=?utf-8?q?x?=", "Re:=?utf-8?q?x?="),  # misplaced: MUST NOT decode
    ("asText", ' "=?utf-8?q?x?="', '"=?utf-8?q?x?="'),
    ("asText", " =?utf-8?q?a?==?utf-8?q?b?=", "ab"),  # run together: decoded
    ("asText", " =?x-unknown?q?a?=", "=?x-unknown?q?a?="),  # unknown charset: kept
    ("asText", " =?utf-8?B?!!!?= x", "\ufffd x"),  # bad base64: U+FFFD
    ("asText", " =?utf-8?q?a=00b=07c?=", "abc"),  # encoded NUL/controls dropped
    ("asText", " =?iso-8859-1?q?caf=E9?=", "caf\u00e9"),
    ("asText", " =?utf-8*en?q?English?=", "English"),  # RFC 2231 language suffix
    ("asText", " e\u0301", "\u00e9"),  # NFC
    ("asText", " =?utf-8?q?e=CC=81?=", "\u00e9"),  # NFC after decoding
    ("asText", "", ""),
    # asAddresses / asGroupedAddresses (§4.1.2.3-4)
    ("asAddresses", RFC_ADDRESS_LIST, E),
    (
        "asGroupedAddresses",
        RFC_ADDRESS_LIST,
        [
            {"name": None, "addresses": E[:1]},
            {"name": "Friends", "addresses": E[1:]},
        ],
    ),
    ("asAddresses", " alice@example.org", [{"name": None, "email": "alice@example.org"}]),
    ("asAddresses", " <alice@example.org>", [{"name": None, "email": "alice@example.org"}]),
    ("asAddresses", ' "" <a@b>', [{"name": None, "email": "a@b"}]),
    ("asAddresses", " a@b (Alice A.)", [{"name": "Alice A.", "email": "a@b"}]),  # comment
    ("asAddresses", " <a@b> (Alice)", [{"name": "Alice", "email": "a@b"}]),
    ("asAddresses", " Alice (x) <a@b> (y)", [{"name": "Alice", "email": "a@b"}]),
    ("asAddresses", ' "Smith, John" <j@x>', [{"name": "Smith, John", "email": "j@x"}]),
    ("asAddresses", ' "a \\"b\\" c" <j@x>', [{"name": 'a "b" c', "email": "j@x"}]),
    ("asAddresses", " John Q. Public <j@x>", [{"name": "John Q. Public", "email": "j@x"}]),
    ("asAddresses", " <@r.example:u@h>", [{"name": None, "email": "u@h"}]),  # obs route
    ("asAddresses", ' <"odd local"@h>', [{"name": None, "email": '"odd local"@h'}]),
    ("asAddresses", " < a @ b >", [{"name": None, "email": "a@b"}]),
    ("asAddresses", " a@[192.0.2.1]", [{"name": None, "email": "a@[192.0.2.1]"}]),
    (
        "asAddresses",
        " a@b, , c@d,",
        [{"name": None, "email": "a@b"}, {"name": None, "email": "c@d"}],
    ),
    ("asAddresses", " undisclosed-recipients:;", []),
    ("asAddresses", "", []),
    ("asAddresses", " Mailer <>", [{"name": "Mailer", "email": ""}]),
    ("asAddresses", " not an address", [{"name": None, "email": "not an address"}]),
    ("asAddresses", " Broken <a@b", [{"name": "Broken", "email": "a@b"}]),  # best effort
    ("asAddresses", ' "unterminated <a@b>', [{"name": None, "email": '"unterminated <a@b>'}]),
    (
        "asAddresses",
        ' =?utf-8?Q?M=C3=BCller?= <m@x>, "=?utf-8?B?TcO8bGxlcg==?=" <n@x>',
        [{"name": "M\u00fcller", "email": "m@x"}, {"name": "M\u00fcller", "email": "n@x"}],
    ),
    (
        "asGroupedAddresses",
        " undisclosed-recipients:;",
        [{"name": "undisclosed-recipients", "addresses": []}],
    ),
    (
        "asGroupedAddresses",
        " a@b, G: c@d;, e@f, g@h",
        [
            {"name": None, "addresses": [{"name": None, "email": "a@b"}]},
            {"name": "G", "addresses": [{"name": None, "email": "c@d"}]},
            {
                "name": None,
                "addresses": [{"name": None, "email": "e@f"}, {"name": None, "email": "g@h"}],
            },
        ],
    ),
    (
        "asGroupedAddresses",
        " G: a@b",
        [{"name": "G", "addresses": [{"name": None, "email": "a@b"}]}],
    ),
    (
        "asGroupedAddresses",
        " Project (big): <@r:erin@x>, f@x;, g@x",
        [
            {
                "name": "Project",
                "addresses": [{"name": None, "email": "erin@x"}, {"name": None, "email": "f@x"}],
            },
            {"name": None, "addresses": [{"name": None, "email": "g@x"}]},
        ],
    ),
    ("asGroupedAddresses", "", []),
    # asMessageIds (§4.1.2.5)
    ("asMessageIds", " <a@b>", ["a@b"]),
    ("asMessageIds", " <a@b> <c@d>\r\n\t<e@f>", ["a@b", "c@d", "e@f"]),
    ("asMessageIds", " <a@b> (comment <x@y>)", ["a@b"]),
    ("asMessageIds", ' Your message of "Mon" <a@b>', ["a@b"]),  # obs-in-reply-to phrase
    ("asMessageIds", " < a@b >", ["a@b"]),
    ("asMessageIds", " a@b", None),
    ("asMessageIds", " <>", None),
    ("asMessageIds", "", None),
    # asDate (§4.1.2.6)
    ("asDate", " Tue, 1 Jul 2003 10:52:37 +0200", "2003-07-01T10:52:37+02:00"),
    ("asDate", " 1 Jul 2003 10:52:37 +0200", "2003-07-01T10:52:37+02:00"),
    ("asDate", " Fri, 21 Nov 1997 09:55:06 -0600 (MDT)", "1997-11-21T09:55:06-06:00"),
    ("asDate", " Thu, 13 Feb 1969 23:32:54 -0330", "1969-02-13T23:32:54-03:30"),
    ("asDate", " Thu, 13 Feb 1969 23:32 -0000", "1969-02-13T23:32:00-00:00"),
    ("asDate", " 1 Jul 03 10:52 GMT", "2003-07-01T10:52:00+00:00"),  # obs year + zone
    ("asDate", " 1 Jul 99 10:52 EST", "1999-07-01T10:52:00-05:00"),
    ("asDate", " 1 Jul 103 10:52 PDT", "2003-07-01T10:52:00-07:00"),  # 3-digit year
    ("asDate", " 1 Jul 2003 10:52:00 A", "2003-07-01T10:52:00-00:00"),  # military zone
    ("asDate", " 1 Jul 2003 10:52:00", "2003-07-01T10:52:00-00:00"),  # no zone
    ("asDate", " 30 Jun 2003 23:59:60 +0000", "2003-06-30T23:59:59+00:00"),  # leap second
    ("asDate", " 29 Feb 2024 00:00:00 +0000", "2024-02-29T00:00:00+00:00"),
    ("asDate", " 29 Feb 2023 00:00:00 +0000", None),
    ("asDate", " 31 Apr 2024 00:00:00 +0000", None),
    ("asDate", " 1 Foo 2024 00:00:00 +0000", None),
    ("asDate", " 1 Jan 2024 24:00:00 +0000", None),
    ("asDate", " 1 Jan 2024 10:00:00 +2400", None),
    ("asDate", " Yesterday at 5pm", None),
    ("asDate", " 2024-01-01T10:00:00Z", None),
    ("asDate", "", None),
    # asURLs (§4.1.2.7)
    (
        "asURLs",
        " <mailto:list@host.com?subject=help> (List Instructions),\r\n <http://host.com/l/>",
        ["mailto:list@host.com?subject=help", "http://host.com/l/"],
    ),
    (
        "asURLs",
        " <http://www.host.com/list/\r\n folded.html>",
        ["http://www.host.com/list/folded.html"],
    ),
    ("asURLs", " NO", None),
    ("asURLs", "", None),
]


@pytest.mark.parametrize(("form", "raw", "expected"), FORM_CASES)
def test_parse_form(form: str, raw: str, expected: Any) -> None:
    assert parse_form(form, raw) == expected


def test_every_form_is_covered() -> None:
    assert {form for form, _, _ in FORM_CASES} == set(FORMS)


def test_unknown_form() -> None:
    with pytest.raises(ValueError, match="asBogus"):
        parse_form("asBogus", " x")


def test_decode_encoded_words_keeps_plain_text() -> None:
    assert decode_encoded_words("no words here") == "no words here"
    assert decode_encoded_words(" a  =?utf-8?q?b?=  c ") == " a  b  c "


def test_select_header_last_and_all() -> None:
    headers = [("Received", " one"), ("X", " x"), ("received", " two")]
    assert select_header(headers, "RECEIVED", "asRaw", False) == " two"
    assert select_header(headers, "Received", "asRaw", True) == [" one", " two"]
    assert select_header(headers, "Missing", "asRaw", False) is None
    assert select_header(headers, "Missing", "asText", True) == []


# --- which forms are allowed ---------------------------------------------------------------

ALLOWED = {
    "asText": ["Subject", "Comments", "Keywords", "List-Id"],
    "asAddresses": [
        *("From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Resent-From", "Resent-Sender"),
        *("Resent-Reply-To", "Resent-To", "Resent-Cc", "Resent-Bcc"),
    ],
    "asMessageIds": ["Message-ID", "In-Reply-To", "References", "Resent-Message-ID"],
    "asDate": ["Date", "Resent-Date"],
    "asURLs": [
        *("List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner"),
        "List-Archive",
    ],
}
ALLOWED["asGroupedAddresses"] = ALLOWED["asAddresses"]
STANDARD = sorted(
    {h for hs in ALLOWED.values() for h in hs} - {"List-Id"} | {"Received", "Return-Path"}
)


@pytest.mark.parametrize("header", [*STANDARD, "List-Id", "X-Custom", "Content-Type"])
@pytest.mark.parametrize("form", FORMS)
def test_form_allowed_table(header: str, form: str) -> None:
    standard = header in STANDARD
    expected = form == "asRaw" or not standard or header in ALLOWED[form]
    assert form_allowed(header, form) is expected
    assert form_allowed(header.upper(), form) is expected  # names are case-insensitive


def test_form_allowed_examples() -> None:
    assert not form_allowed("From", "asDate")
    assert not form_allowed("Subject", "asAddresses")
    assert not form_allowed("Received", "asText")
    assert form_allowed("List-Id", "asAddresses")  # RFC 2919, not 5322/2369
    assert form_allowed("X-Anything", "asDate")
    assert not form_allowed("X-Anything", "asBogus")


# --- property names ------------------------------------------------------------------------

PROPERTY_CASES = [
    ("header:Subject", ("Subject", "asRaw", False)),
    ("header:subject", ("subject", "asRaw", False)),
    ("header:From:asAddresses", ("From", "asAddresses", False)),
    ("header:From:asAddresses:all", ("From", "asAddresses", True)),
    ("header:Resent-To:asAddresses:all", ("Resent-To", "asAddresses", True)),
    ("header:X-Foo:all", ("X-Foo", "asRaw", True)),
    ("header:List-POST:asURLs", ("List-POST", "asURLs", False)),
    ("header:X-Date:asDate", ("X-Date", "asDate", False)),
    ("header:all", ("all", "asRaw", False)),
]


@pytest.mark.parametrize(("spec", "expected"), PROPERTY_CASES)
def test_header_property(spec: str, expected: tuple[str, str, bool]) -> None:
    assert header_property(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "header:",
        "header:From:",
        "header:From:asDate",  # not allowed on From
        "header:Subject:asAddresses",
        "header:X:asBogus",
        "header:X:asraw",  # forms are case-sensitive
        "header:X:all:asText",  # suffixes out of order
        "header:X:asText:all:all",
        "header:X Y",  # space is not a field-name character
        "header:X\u00e9",
        "Header:X",
        "headers",
    ],
)
def test_header_property_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="header"):
        header_property(spec)
