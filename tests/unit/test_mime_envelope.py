"""Email properties from cached IMAP records must match the full-message answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapjmap.imap.models import Address, BodyStructure, Envelope
from imapjmap.mime.body import analyse, has_attachment
from imapjmap.mime.email import email_properties
from imapjmap.mime.envelope import (
    addresses_from_envelope,
    base_subject,
    grouped_addresses_from_envelope,
    has_attachment_from_bodystructure,
    message_ids,
    sent_at,
    subject_from_envelope,
)
from imapjmap.mime.tree import Part, parse_message

DATA = Path(__file__).resolve().parent.parent / "data" / "mime"
CORPUS = {path.stem: path.read_bytes() for path in sorted(DATA.glob("*.eml"))}


def first_wins(params: list[tuple[str, str]]) -> dict[str, str]:
    return dict(reversed(params))


def bodystructure(part: Part) -> BodyStructure:
    """The BODYSTRUCTURE an IMAP server would report for a parsed part (params as written:
    servers pass RFC 2231 continuations through undecoded)."""
    type_, subtype = part.type.split("/", 1)
    return BodyStructure(
        type=type_,
        subtype=subtype,
        params=first_wins(part.type_params),
        disposition=part.disposition,
        disposition_params=first_wins(part.disposition_params),
        parts=tuple(bodystructure(child) for child in part.sub_parts),
        size=None if part.is_multipart else len(part.body),
    )


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_has_attachment_agrees_with_the_full_message(case: str) -> None:
    raw = CORPUS[case]
    full = has_attachment(analyse(raw).attachments)
    assert has_attachment_from_bodystructure(bodystructure(parse_message(raw))) is full


def test_has_attachment_from_bodystructure_cases() -> None:
    text = BodyStructure("text", "plain")
    pdf = BodyStructure("application", "pdf", disposition="attachment")
    inline_png = BodyStructure("image", "png", disposition="INLINE")
    named = BodyStructure("text", "plain", disposition_params={"filename*0*": "utf-8''a%20b"})
    rfc822 = BodyStructure(
        "message", "rfc822", parts=(BodyStructure("multipart", "mixed", parts=(pdf,)),)
    )
    assert not has_attachment_from_bodystructure(text)
    assert has_attachment_from_bodystructure(BodyStructure("multipart", "mixed", parts=(text, pdf)))
    assert not has_attachment_from_bodystructure(
        BodyStructure("multipart", "mixed", parts=(text, inline_png))
    )
    assert has_attachment_from_bodystructure(
        BodyStructure("multipart", "mixed", parts=(text, named))
    )
    assert has_attachment_from_bodystructure(
        BodyStructure("multipart", "mixed", parts=(text, rfc822))
    )
    assert not has_attachment_from_bodystructure(BodyStructure("multipart", "mixed"))


# --- ENVELOPE fields ---------------------------------------------------------------------------


def addr(name: str | None, mailbox: str | None, host: str | None) -> Address:
    return Address(name=name, adl=None, mailbox=mailbox, host=host)


def test_addresses_with_groups_and_encoded_names() -> None:
    addrs = (
        addr("=?utf-8?Q?J=C3=BCrgen?=", "j", "example.de"),
        addr(None, "Team", None),
        addr("Bob, Jr.", "bob", "example.net"),
        addr(None, None, None),
        addr("  ", "carol", "example.com"),
    )
    assert addresses_from_envelope(addrs) == [
        {"name": "J\u00fcrgen", "email": "j@example.de"},
        {"name": "Bob, Jr.", "email": "bob@example.net"},
        {"name": None, "email": "carol@example.com"},
    ]
    assert grouped_addresses_from_envelope(addrs) == [
        {"name": None, "addresses": [{"name": "J\u00fcrgen", "email": "j@example.de"}]},
        {"name": "Team", "addresses": [{"name": "Bob, Jr.", "email": "bob@example.net"}]},
        {"name": None, "addresses": [{"name": None, "email": "carol@example.com"}]},
    ]
    assert addresses_from_envelope(()) is None
    assert (
        addresses_from_envelope(
            (addr(None, "undisclosed-recipients", None), addr(None, None, None))
        )
        == []
    )


def test_eight_bit_names_decode_like_the_full_message() -> None:
    wire = b"Bj\xc3\xb6rn \xe9".decode("utf-8", "surrogateescape")  # as imap.parse leaves it
    assert addresses_from_envelope((addr(wire, "b", "x.se"),)) == [
        {"name": "Bj\u00f6rn \ufffd", "email": "b@x.se"}
    ]


def envelope(**fields: object) -> Envelope:
    base: dict[str, object] = {
        "date": None,
        "subject": None,
        "from_": (),
        "sender": (),
        "reply_to": (),
        "to": (),
        "cc": (),
        "bcc": (),
        "in_reply_to": None,
        "message_id": None,
    }
    base.update(fields)
    return Envelope(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "env"),
    [
        (
            "rfc2047_headers",
            envelope(
                date="Mon, 27 May 2024 08:15:00 +0200",
                subject=(
                    "=?UTF-8?B?R3LDvMOfZQ==?= =?UTF-8?Q?_aus_M=C3=BCnchen?= und "
                    "=?utf-8?B?U3RyYcM=?= =?utf-8?B?n2U=?= (Re:=?utf-8?q?nicht?= dekodiert)"
                ),
                from_=(addr("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=", "juergen", "example.de"),),
                to=(
                    addr("=?utf-8?B?TcO8bGxlciwgQW5uYQ==?=", "anna", "example.de"),
                    addr("=?iso-2022-jp?B?GyRCRnxLXDhsJE4lRiU5JUgbKEI=?=", "taro", "example.jp"),
                ),
                message_id="<ew.10@mail.example.de>",
            ),
        ),
        (
            "group_addresses",
            envelope(
                date="Fri, 31 May 2024 16:00:00 -0700",
                subject="Groups",
                from_=(addr("Alice Example", "alice", "example.org"),),
                to=(addr(None, "undisclosed-recipients", None), addr(None, None, None)),
                cc=(
                    addr(None, "Project", None),
                    addr(None, "erin", "example.com"),
                    addr(None, "frank", "example.com"),
                    addr(None, None, None),
                    addr(None, "grace", "example.org"),
                ),
                message_id="<grp.14@mail.example.org>",
            ),
        ),
        (
            "invalid_date",
            envelope(
                date="Yesterday at 5pm",
                subject="Invalid date",
                message_id="<baddate.16@mail.example.org>",
            ),
        ),
    ],
)
def test_envelope_matches_full_message(case: str, env: Envelope) -> None:
    full = email_properties(
        CORPUS[case],
        properties=["subject", "sentAt", "from", "to", "cc", "messageId", "inReplyTo"],
        body_properties=[],
        fetch_text=False,
        fetch_html=False,
        fetch_all=False,
        max_body_value_bytes=0,
        blob_prefix="x",
    )
    assert subject_from_envelope(env) == full["subject"]
    assert sent_at(env) == full["sentAt"]
    assert message_ids(env.message_id) == full["messageId"]
    assert message_ids(env.in_reply_to) == full["inReplyTo"]
    if env.from_:
        assert addresses_from_envelope(env.from_) == full["from"]
    if env.to:
        assert addresses_from_envelope(env.to) == full["to"]
    if env.cc:
        assert addresses_from_envelope(env.cc) == full["cc"]


def test_missing_envelope_fields() -> None:
    env = envelope()
    assert subject_from_envelope(env) is None
    assert sent_at(env) is None
    assert message_ids(None) is None


# --- RFC 5256 base subject -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hello", "Hello"),
        ("Re: Hello", "Hello"),
        ("RE: re: Fwd: Hello", "Hello"),
        ("Re[2]: Hello", "Hello"),  # subj-refwd allows a blob before the colon
        ("Re:Re[3] : x", "x"),
        ("Re [2]: Hello", "Hello"),
        ("[list] Re: Hello", "Hello"),
        ("Re: [list] Re: Hello", "Hello"),
        ("[list]", "[list]"),  # a blob is kept when nothing would remain
        ("[a][b] Hello", "Hello"),
        ("Hello (fwd)", "Hello"),
        ("Hello (fwd) (FWD)  ", "Hello"),
        ("[Fwd: Re: Hello]", "Hello"),
        ("Fw: [Fwd: Hello (fwd)]", "Hello"),
        ("  Re:\t Hello   world ", "Hello world"),
        ("Fwd:Hello", "Hello"),
        ("Reply to all", "Reply to all"),
        ("Re:", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_base_subject(subject: str | None, expected: str) -> None:
    assert base_subject(subject) == expected
