"""Tests for imapjmap.imap.utf7 (modified UTF-7, RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.errors import ImapProtocolViolation
from imapjmap.imap.utf7 import decode_mailbox_name, encode_mailbox_name

# (as the user sees it, as it travels); the CJK one is RFC 3501's own example.
PAIRS = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Sent Items", "Sent Items"),
    ("Ordner & Co", "Ordner &- Co"),
    ("&", "&-"),
    ("&&", "&-&-"),
    ("日本語", "&ZeVnLIqe-"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Привет", "&BB8EQAQ4BDIENQRC-"),
    ("📧 Mail", "&2D3c5w- Mail"),
    ("a\tb", "a&AAk-b"),  # control characters are not printable ASCII: encoded
    ("ü&ü", "&APw-&-&APw-"),
    ("Café-Bar", "Caf&AOk--Bar"),
]


@pytest.mark.parametrize(("name", "wire"), PAIRS)
def test_encode(name: str, wire: str) -> None:
    assert encode_mailbox_name(name) == wire


@pytest.mark.parametrize(("name", "wire"), PAIRS)
def test_decode(name: str, wire: str) -> None:
    assert decode_mailbox_name(wire) == name
    assert decode_mailbox_name(wire.encode("ascii")) == name


LENIENT = [
    ("Entwürfe".encode(), "Entwürfe"),  # raw UTF-8 from a UTF8=ACCEPT server
    ("Entwürfe & Co", "Entwürfe & Co"),  # non-ASCII text is never modified UTF-7
    ("&AGEAYgBj-", "abc"),  # printable ASCII that should have been direct: harmless
    ("&AOl-", "é"),  # non-zero leftover bits: unambiguous, so accepted
]


@pytest.mark.parametrize(("raw", "name"), LENIENT)
def test_decode_lenient(raw: str | bytes, name: str) -> None:
    assert decode_mailbox_name(raw) == name


INVALID = [
    "&",  # unterminated
    "&AOk",  # unterminated run
    "a&Jjo!-",  # "!" is not modified base64
    "&A-",  # one base64 character is not a byte
    "&AOk/-",  # "/" is standard base64, modified uses ","
    "&2D0-",  # a lone high surrogate
    "&AA-",  # one byte of UTF-16
    "bad\udcff",  # surrogate-escaped 8-bit junk
    b"\xff\xfe",  # not UTF-8
]


@pytest.mark.parametrize("raw", INVALID)
def test_decode_rejects(raw: str | bytes) -> None:
    with pytest.raises(ImapProtocolViolation):
        decode_mailbox_name(raw)


def test_encode_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode_mailbox_name("a\ud800b")


names = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None, database=None)
@given(names)
def test_round_trip(name: str) -> None:
    wire = encode_mailbox_name(name)
    assert all(" " <= c <= "~" for c in wire)
    assert decode_mailbox_name(wire) == name
