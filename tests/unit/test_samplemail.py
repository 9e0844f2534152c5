"""The sample mail generator: deterministic, parseable, and as varied as real mail."""

from __future__ import annotations

import email
import email.policy
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from devservers.samplemail import (
    DEFAULT_END,
    FOLDERS,
    SampleMessage,
    encode_mutf7,
    generate,
    make_ics,
    make_pdf,
    make_png,
)


@pytest.fixture(scope="module")
def messages() -> list[SampleMessage]:
    return generate(300)


@pytest.fixture(scope="module")
def sample(messages: list[SampleMessage]) -> list[tuple[SampleMessage, EmailMessage]]:
    out = []
    for message in messages:
        parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        out.append((message, parsed))
    return out


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = generate(40, seed=7)
    assert [m.raw for m in first] == [m.raw for m in generate(40, seed=7)]
    assert [m.raw for m in first] != [m.raw for m in generate(40, seed=8)]
    assert len(generate(0)) == 0
    assert len(generate(13, seed=2)) == 13


def test_dates_are_fixed_and_span_two_years(messages: list[SampleMessage]) -> None:
    dates = [m.internaldate for m in messages]
    assert dates == sorted(dates)
    assert max(dates) <= DEFAULT_END < datetime.now(UTC)
    assert max(dates) - min(dates) > timedelta(days=500)
    later = generate(5, end=DEFAULT_END + timedelta(days=100))
    assert max(m.internaldate for m in later) > DEFAULT_END


def test_folders_and_flags(sample: list[tuple[SampleMessage, EmailMessage]]) -> None:
    messages = [m for m, _ in sample]
    folders = Counter(m.folder for m in messages)
    assert set(folders) <= set(FOLDERS)
    assert {"INBOX", "Sent", "Archive", "Drafts", "Projects/Alpha", "Reisen/Übersicht"} <= set(
        folders
    )
    for message in messages:
        flags = set(message.flags)
        if message.folder == "Drafts":
            assert "\\Draft" in flags
        if message.folder == "Sent":
            assert "\\Seen" in flags
    every = Counter(f for m in messages for f in m.flags)
    assert {"\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$Forwarded"} <= set(every)


def test_realistic_variety(sample: list[tuple[SampleMessage, EmailMessage]]) -> None:
    parsed = [p for _, p in sample]
    raw = [m.raw for m, _ in sample]
    types = Counter(part.get_content_type() for p in parsed for part in p.walk())
    for content_type in (
        "multipart/alternative",
        "multipart/related",
        "multipart/mixed",
        "text/html",
        "text/calendar",
        "application/pdf",
        "image/png",
        "message/rfc822",
    ):
        assert types[content_type], content_type
    charsets = Counter(
        part.get_content_charset()
        for p in parsed
        for part in p.walk()
        if part.get_content_charset()
    )
    assert {"utf-8", "iso-8859-1", "iso-2022-jp"} <= set(charsets)
    assert sum(b"=?utf-8?" in r for r in raw) > 20  # RFC 2047 words
    assert any(b"filename*=" in r for r in raw)  # RFC 2231 non-ASCII file names
    assert sum("List-Id" in p for p in parsed) > 10
    replies = [p for p in parsed if p["In-Reply-To"]]
    assert len(replies) > 30
    ids = {p["Message-ID"] for p in parsed}
    assert sum(p["In-Reply-To"] in ids for p in replies) > 20  # threads hold together
    subjects = " ".join(str(p["Subject"]) for p in parsed)
    for word in ("Re: ", "Übersicht", "Réunion", "会議", "🎉"):
        assert word in subjects, word
    for p in parsed:
        for part in p.walk():
            if not part.is_multipart() and part.get_content_maintype() == "text":
                part.get_content()  # every text part decodes


def test_made_up_attachments_are_valid() -> None:
    png = make_png(20, 10, 5)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == 10 * (1 + 20 * 3)
    pdf = make_pdf("Rechnung (Übersicht)", ["line 1"])
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    offset = int(pdf.split(b"startxref\n")[1].split()[0])
    assert pdf[offset:].startswith(b"xref")
    from email.headerregistry import Address

    ics = make_ics(
        uid="x@example.com",
        summary="Team-Frühstück 🥐, with a very long summary that must be folded somewhere",
        start=datetime(2025, 1, 2, 9, tzinfo=UTC),
        minutes=30,
        organizer=Address("Zoë", "zoe", "example.com"),
        attendees=[Address("Demo", "demo", "example.test")],
    )
    assert ics.startswith("BEGIN:VCALENDAR\r\n") and ics.endswith("END:VCALENDAR\r\n")
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
    assert "DTSTART:20250102T090000Z" in ics


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Übersicht", "&ANw-bersicht"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("日本語", "&ZeVnLIqe-"),
        ("a~b", "a~b"),
    ],
)
def test_modified_utf7(name: str, encoded: str) -> None:
    assert encode_mutf7(name) == encoded
    assert encoded.replace("&-", "+-").replace("&", "+").replace(",", "/").encode().decode(
        "utf-7"
    ).replace("+-", "&") in (name, name.replace("&", "+"))
