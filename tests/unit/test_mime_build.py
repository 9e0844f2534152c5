"""Email/set create objects → RFC 5322 octets (imapjmap.mime.build; CHECKLIST 12.5, 12.8).

Every message built here is checked for the wire rules (CRLF only, lines ≤ 998 octets) and
read back through the package's own parser (``email_properties``).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap.jmap.errors import SetError, SetErrorType
from imapjmap.mime.build import build_message, referenced_blob_ids
from imapjmap.mime.email import email_properties
from imapjmap.mime.encode import encode_body, encoded_words, quoted_printable
from imapjmap.mime.headers import raw_headers
from imapjmap.mime.tree import Part, parse_message

NOW = dt.datetime(2024, 3, 1, 12, 30, 45, tzinfo=dt.UTC)
BLOBS: dict[str, tuple[bytes, str]] = {
    "Updf": (b"%PDF-1.4\n\x00\x01binary\xff", "application/pdf"),
    "Upng": (b"\x89PNG\r\n\x1a\nimage", "image/png"),
    "Utxt": (b"plain blob\r\nsecond line\r\n", "text/plain; charset=iso-8859-1"),
    "Umsg": (b"Subject: inner\r\nFrom: a@b.c\r\n\r\nattached body\r\n", "message/rfc822"),
}
BODY_PROPS = [
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
    "headers",
]


class Tokens:
    """A predictable token source, so boundaries and Message-IDs are stable."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"tok{self.count:04d}"


def build(obj: dict[str, Any], blobs: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    raw = build_message(obj, (blobs or BLOBS).get, now=NOW, hostname="host.example", token=Tokens())
    assert_wire(raw)
    return raw


def assert_wire(raw: bytes) -> None:
    """RFC 5322 §2.1.1 / §2.3: CRLF line endings only, lines at most 998 octets."""
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def read(raw: bytes, *props: str) -> dict[str, Any]:
    wanted = list(props) or [
        "messageId",
        "from",
        "to",
        "cc",
        "bcc",
        "replyTo",
        "sender",
        "subject",
        "sentAt",
        "inReplyTo",
        "references",
        "bodyStructure",
        "bodyValues",
        "textBody",
        "htmlBody",
        "attachments",
        "hasAttachment",
    ]
    return email_properties(
        raw,
        properties=wanted,
        body_properties=BODY_PROPS,
        fetch_text=False,
        fetch_html=False,
        fetch_all=True,
        max_body_value_bytes=0,
        blob_prefix="X",
    )


def header(raw: bytes, name: str) -> list[str]:
    return [v for n, v in raw_headers(raw) if n.lower() == name.lower()]


def shape(part: Part) -> Any:
    """The MIME tree as nested (type, children) tuples."""
    if part.sub_parts:
        return (part.type, [shape(p) for p in part.sub_parts])
    return part.type


def values(**texts: str) -> dict[str, Any]:
    return {k: {"value": v} for k, v in texts.items()}


# --- shapes and headers (EML-SET create, CHECKLIST 12.8) -----------------------------------

TEXT = {"partId": "t"}
HTML = {"partId": "h", "type": "text/html"}
SHAPES = [
    ("text only", {"textBody": [TEXT]}, "text/plain"),
    ("html only", {"htmlBody": [HTML]}, "text/html"),
    ("html only, type defaulted", {"htmlBody": [{"partId": "h"}]}, "text/html"),
    (
        "text and html",
        {"textBody": [TEXT], "htmlBody": [HTML]},
        ("multipart/alternative", ["text/plain", "text/html"]),
    ),
    (
        "text and attachment",
        {"textBody": [TEXT], "attachments": [{"blobId": "Updf"}]},
        ("multipart/mixed", ["text/plain", "application/pdf"]),
    ),
    (
        "html with inline cid image",
        {"htmlBody": [HTML], "attachments": [{"blobId": "Upng", "cid": "logo@x"}]},
        ("multipart/related", ["text/html", "image/png"]),
    ),
    (
        "everything",
        {
            "textBody": [TEXT],
            "htmlBody": [HTML],
            "attachments": [
                {"blobId": "Upng", "cid": "logo@x"},
                {"blobId": "Updf", "name": "a.pdf"},
            ],
        },
        (
            "multipart/mixed",
            [
                (
                    "multipart/alternative",
                    ["text/plain", ("multipart/related", ["text/html", "image/png"])],
                ),
                "application/pdf",
            ],
        ),
    ),
    (
        "cid image without html is an attachment",
        {"textBody": [TEXT], "attachments": [{"blobId": "Upng", "cid": "logo@x"}]},
        ("multipart/mixed", ["text/plain", "image/png"]),
    ),
    (
        "attachments only",
        {"attachments": [{"blobId": "Updf"}]},
        ("multipart/mixed", ["application/pdf"]),
    ),
    ("no body at all", {}, "text/plain"),
    (
        "bodyStructure",
        {
            "bodyStructure": {
                "type": "multipart/mixed",
                "subParts": [
                    {"partId": "t"},
                    {
                        "type": "multipart/alternative",
                        "subParts": [{"partId": "t"}, {"partId": "h", "type": "text/html"}],
                    },
                ],
            }
        },
        ("multipart/mixed", ["text/plain", ("multipart/alternative", ["text/plain", "text/html"])]),
    ),
    (
        "bodyStructure multipart type defaulted",
        {"bodyStructure": {"subParts": [{"partId": "t"}]}},
        ("multipart/mixed", ["text/plain"]),
    ),
]


@pytest.mark.parametrize(("label", "body", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
def test_eml_set_create_body_shapes(label: str, body: dict[str, Any], expected: Any) -> None:
    obj = {"mailboxIds": {"m": True}, "bodyValues": values(t="text", h="<p>html</p>"), **body}
    assert shape(parse_message(build(obj))) == expected


def test_eml_set_create_lists_read_back_as_given() -> None:
    """The §4.1.4 algorithm (EML-BODY-01) gives back textBody/htmlBody/attachments."""
    obj = {
        "bodyValues": values(t="hello", h="<b>hello</b>"),
        "textBody": [TEXT],
        "htmlBody": [HTML],
        "attachments": [
            {"blobId": "Upng", "cid": "logo@x"},
            {"blobId": "Updf", "name": "report.pdf"},
            {"blobId": "Utxt", "name": "notes.txt", "type": "text/plain"},
        ],
    }
    got = read(build(obj))
    assert [p["type"] for p in got["textBody"]] == ["text/plain"]
    assert [p["type"] for p in got["htmlBody"]] == ["text/html"]
    atts = got["attachments"]
    assert [(a["type"], a["disposition"], a["cid"], a["name"]) for a in atts] == [
        ("image/png", "inline", "logo@x", None),
        ("application/pdf", "attachment", None, "report.pdf"),
        ("text/plain", "attachment", None, "notes.txt"),
    ]
    assert got["hasAttachment"] is True
    assert [a["size"] for a in atts] == [
        len(BLOBS["Upng"][0]),
        len(BLOBS["Updf"][0]),
        len(BLOBS["Utxt"][0]),
    ]
    assert {v["value"] for v in got["bodyValues"].values()} >= {"hello", "<b>hello</b>"}


def test_eml_set_create_generated_headers() -> None:
    """§4.6: Message-ID and Date are set when missing; MIME-Version always."""
    raw = build(
        {
            "from": [{"name": None, "email": "me@mail.example.org"}],
            "bodyValues": values(t="x"),
            "textBody": [TEXT],
        }
    )
    assert header(raw, "Date") == [" Fri, 01 Mar 2024 12:30:45 +0000"]
    assert header(raw, "Message-ID") == [" <tok0001@mail.example.org>"]
    assert header(raw, "MIME-Version") == [" 1.0"]
    assert header(raw, "Content-Type") == [" text/plain; charset=us-ascii"]
    assert header(raw, "Content-Transfer-Encoding") == [" 7bit"]
    assert raw.endswith(b"\r\n\r\nx")


def test_eml_set_create_message_id_domain_falls_back_to_hostname() -> None:
    raw = build({"from": [{"name": "x", "email": "no-domain"}]})
    assert header(raw, "Message-ID") == [" <tok0001@host.example>"]


def test_eml_set_create_given_date_and_message_id_are_kept() -> None:
    raw = build(
        {
            "sentAt": "2023-12-24T18:00:00+01:00",
            "messageId": ["given@x"],
            "inReplyTo": ["a@x"],
            "references": ["r1@x", "a@x"],
        }
    )
    assert header(raw, "Date") == [" Sun, 24 Dec 2023 18:00:00 +0100"]
    assert header(raw, "Message-ID") == [" <given@x>"]
    got = read(raw, "sentAt", "messageId", "inReplyTo", "references")
    assert got == {
        "sentAt": "2023-12-24T18:00:00+01:00",
        "messageId": ["given@x"],
        "inReplyTo": ["a@x"],
        "references": ["r1@x", "a@x"],
    }


def test_eml_set_create_null_values_write_nothing_and_still_generate() -> None:
    raw = build({"sentAt": None, "messageId": None, "subject": None, "to": []})
    assert len(header(raw, "Date")) == len(header(raw, "Message-ID")) == 1
    assert header(raw, "Subject") == header(raw, "To") == []


def test_eml_set_create_root_part_headers_join_the_message_header() -> None:
    raw = build(
        {
            "bodyValues": values(t="x"),
            "bodyStructure": {
                "partId": "t",
                "header:X-Root": " yes",
                "header:Date:asDate": "2020-02-29T00:00:00Z",
                "language": ["en", "fr"],
            },
        }
    )
    assert header(raw, "X-Root") == [" yes"]
    assert header(raw, "Date") == [" Sat, 29 Feb 2020 00:00:00 +0000"]
    assert header(raw, "Content-Language") == [" en, fr"]


HEADER_FORMS = [
    ("asRaw kept verbatim", "header:X-Raw", " raw  value (c)", "header:X-Raw", " raw  value (c)"),
    ("asRaw with a fold", "header:X-Raw", " a\r\n b", "header:X-Raw", " a\r\n b"),
    ("asText", "header:X-Text:asText", "  héllo  wörld ", "header:X-Text:asText", "héllo  wörld"),
    (
        "asAddresses",
        "header:X-To:asAddresses",
        [{"name": "A, B", "email": "a@b.c"}],
        "header:X-To:asAddresses",
        [{"name": "A, B", "email": "a@b.c"}],
    ),
    (
        "asGroupedAddresses",
        "header:To:asGroupedAddresses",
        [
            {"name": "Friends", "addresses": [{"name": None, "email": "f@x.y"}]},
            {"name": None, "addresses": [{"name": "Z", "email": "z@x.y"}]},
            {"name": "Empty", "addresses": []},
        ],
        "header:To:asGroupedAddresses",
        [
            {"name": "Friends", "addresses": [{"name": None, "email": "f@x.y"}]},
            {"name": None, "addresses": [{"name": "Z", "email": "z@x.y"}]},
            {"name": "Empty", "addresses": []},
        ],
    ),
    (
        "asMessageIds",
        "header:X-Ids:asMessageIds",
        ["a@b", "c.d@e"],
        "header:X-Ids:asMessageIds",
        ["a@b", "c.d@e"],
    ),
    (
        "asDate keeps the zone",
        "header:Resent-Date:asDate",
        "2024-01-01T00:00:00-05:00",
        "header:Resent-Date:asDate",
        "2024-01-01T00:00:00-05:00",
    ),
    (
        "asDate unknown zone",
        "header:X-D:asDate",
        "2024-01-01T00:00:00-00:00",
        "header:X-D:asDate",
        "2024-01-01T00:00:00-00:00",
    ),
    (
        "asDate Z reads as +00:00",
        "header:X-D:asDate",
        "2024-01-01T00:00:00Z",
        "header:X-D:asDate",
        "2024-01-01T00:00:00+00:00",
    ),
    (
        "asURLs",
        "header:List-Unsubscribe:asURLs",
        ["mailto:u@x", "https://x.example/u?a=1"],
        "header:List-Unsubscribe:asURLs",
        ["mailto:u@x", "https://x.example/u?a=1"],
    ),
    ("all", "header:X-Many:all", [" one", " two"], "header:X-Many:all", [" one", " two"]),
    (
        "all parsed",
        "header:X-Many:asText:all",
        ["one", "twö"],
        "header:X-Many:asText:all",
        ["one", "twö"],
    ),
    ("convenience subject", "subject", "Hi there", "subject", "Hi there"),
    (
        "convenience bcc",
        "bcc",
        [{"name": "Bcc Person", "email": "b@x"}],
        "bcc",
        [{"name": "Bcc Person", "email": "b@x"}],
    ),
]


@pytest.mark.parametrize(
    ("label", "prop", "value", "read_prop", "expected"),
    HEADER_FORMS,
    ids=[h[0] for h in HEADER_FORMS],
)
def test_eml_hdr_forms_round_trip(
    label: str, prop: str, value: Any, read_prop: str, expected: Any
) -> None:
    assert read(build({prop: value}), read_prop) == {read_prop: expected}


def test_eml_hdr_encoding_ascii_stays_plain_non_ascii_is_rfc2047() -> None:
    raw = build(
        {
            "subject": "Plain ASCII subject",
            "from": [{"name": "Zoë Ångström", "email": "zoe@x.example"}],
            "to": [{"name": "Plain Name", "email": "p@x.example"}],
        }
    )
    assert header(raw, "Subject") == [" Plain ASCII subject"]
    assert header(raw, "To") == [" Plain Name <p@x.example>"]
    (from_,) = header(raw, "From")
    assert from_.isascii() and "=?utf-8?" in from_ and from_.endswith(" <zoe@x.example>")
    assert read(raw, "from")["from"] == [{"name": "Zoë Ångström", "email": "zoe@x.example"}]


def test_eml_hdr_long_subject_is_folded() -> None:
    subject = " ".join(["word"] * 60) + " " + "é" * 100
    raw = build({"subject": subject})
    lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert read(raw, "subject") == {"subject": subject}


def test_eml_hdr_encoded_word_lookalike_is_encoded() -> None:
    subject = "literally =?utf-8?q?not_encoded?= here"
    assert read(build({"subject": subject}), "subject") == {"subject": subject}


def test_eml_hdr_non_ascii_filename_uses_rfc2231() -> None:
    name = "Überweisung für März 2024 — sehr lange Dateinamen sind üblich.pdf"
    raw = build({"attachments": [{"blobId": "Updf", "name": name}]})
    assert b"filename*0*=utf-8''%C3%9Cberweisung" in raw
    assert read(raw, "attachments")["attachments"][0]["name"] == name


def test_eml_body_transfer_encodings() -> None:
    long_line = "x" * 1500
    cjk = "漢字かなカナ" * 40
    obj = {
        "bodyValues": values(a="short ascii", b=long_line, c="mostly ascii é", d=cjk),
        "bodyStructure": {"type": "multipart/mixed", "subParts": [{"partId": p} for p in "abcd"]},
    }
    raw = build(obj)
    root = parse_message(raw)
    assert [p.encoding for p in root.sub_parts] == [
        "7bit",
        "quoted-printable",
        "quoted-printable",
        "base64",
    ]
    assert [p.charset for p in root.sub_parts] == ["us-ascii", "us-ascii", "utf-8", "utf-8"]
    got = read(raw, "bodyValues")["bodyValues"]
    assert [got[k]["value"] for k in ("1", "2", "3", "4")] == [
        "short ascii",
        long_line,
        "mostly ascii é",
        cjk,
    ]


def test_eml_body_blob_parts() -> None:
    obj = {
        "bodyStructure": {
            "type": "multipart/mixed",
            "subParts": [
                {"blobId": "Utxt"},
                {"blobId": "Umsg"},
                {"blobId": "Updf", "type": "application/x-y", "size": 1},
            ],
        }
    }
    raw = build(obj)
    root = parse_message(raw)
    assert [(p.type, p.charset, p.encoding) for p in root.sub_parts] == [
        ("text/plain", "iso-8859-1", "7bit"),
        ("message/rfc822", None, "7bit"),
        ("application/x-y", None, "base64"),
    ]
    assert [p.content()[0] for p in root.sub_parts] == [
        BLOBS["Utxt"][0],
        BLOBS["Umsg"][0],
        BLOBS["Updf"][0],
    ]


def test_eml_body_part_headers_and_properties() -> None:
    obj = {
        "bodyValues": values(t="x"),
        "bodyStructure": {
            "type": "multipart/mixed",
            "subParts": [
                {
                    "partId": "t",
                    "header:X-Part": " p",
                    "cid": "c1@x",
                    "language": ["de"],
                    "location": "https://x.example/" + "a" * 300,
                    "disposition": "inline",
                },
                {
                    "blobId": "Updf",
                    "header:Content-Type": "application/pdf; x-mode=fast",
                    "header:Content-Disposition:asText": "attachment; size=3",
                    "name": "n.pdf",
                },
            ],
        },
    }
    raw = build(obj)
    parts = read(raw, "bodyStructure")["bodyStructure"]["subParts"]
    first, second = parts
    assert first["cid"] == "c1@x" and first["language"] == ["de"]
    assert first["location"] == "https://x.example/" + "a" * 300
    assert first["disposition"] == "inline"
    assert {"name": "X-Part", "value": " p"} in first["headers"]
    assert (second["type"], second["disposition"], second["name"]) == (
        "application/pdf",
        "attachment",
        "n.pdf",
    )
    assert b"x-mode=fast" in raw and b"size=3" in raw


def test_eml_body_boundary_never_collides_with_content() -> None:
    """A 7bit text holding the would-be delimiter line forces another boundary."""
    tokens = Tokens()
    collide = "--=_tok0002\r\nnot a delimiter"
    raw = build_message(
        {"bodyValues": values(t=collide, h="<p/>"), "textBody": [TEXT], "htmlBody": [HTML]},
        BLOBS.get,
        now=NOW,
        token=tokens,
    )
    assert read(raw, "bodyValues")["bodyValues"]["1"]["value"] == collide.replace("\r\n", "\n")


def test_referenced_blob_ids_walks_every_part_list() -> None:
    obj = {
        "bodyStructure": {"subParts": [{"blobId": "a"}, {"subParts": [{"blobId": "b"}]}]},
        "attachments": [{"blobId": "c"}, {"blobId": "a"}, "junk"],
        "textBody": None,
    }
    assert referenced_blob_ids(obj) == ["a", "b", "c"]


# --- every create rule → invalidProperties (CHECKLIST 12.8, CORE-SET-04) ---------------------

BV = values(t="text", h="<p>x</p>")
INVALID = [
    ("headers at the top", {"headers": []}, ["headers"]),
    (
        "headers in a part",
        {"bodyValues": BV, "bodyStructure": {"partId": "t", "headers": []}},
        ["bodyStructure/headers"],
    ),
    (
        "same header twice, convenience and header:",
        {"from": [], "header:From:asAddresses": []},
        ["from", "header:From:asAddresses"],
    ),
    (
        "same header twice, different case and form",
        {"header:X-A": " a", "header:x-a:asText": "b"},
        ["header:X-A", "header:x-a:asText"],
    ),
    (
        "same header twice, :all",
        {"header:X-A": " a", "header:X-A:all": []},
        ["header:X-A", "header:X-A:all"],
    ),
    (
        "same header twice in a part",
        {"bodyValues": BV, "textBody": [{"partId": "t", "cid": "a@b", "header:Content-ID": "<x>"}]},
        ["textBody/0/cid", "textBody/0/header:Content-ID"],
    ),
    (
        "type and header:Content-Type",
        {
            "bodyValues": BV,
            "bodyStructure": {
                "partId": "t",
                "type": "text/plain",
                "header:Content-Type": "text/plain",
            },
        },
        ["bodyStructure/type", "bodyStructure/header:Content-Type"],
    ),
    (
        "form not allowed: From asDate",
        {"header:From:asDate": "2024-01-01T00:00:00Z"},
        ["header:From:asDate"],
    ),
    (
        "form not allowed: Subject asAddresses",
        {"header:Subject:asAddresses": []},
        ["header:Subject:asAddresses"],
    ),
    (
        "form not allowed in a part",
        {"bodyValues": BV, "textBody": [{"partId": "t", "header:Date:asText": "x"}]},
        ["textBody/0/header:Date:asText"],
    ),
    ("unknown form", {"header:X-A:asWhatever": "x"}, ["header:X-A:asWhatever"]),
    ("Content-* at the top level", {"header:Content-Type": "text/plain"}, ["header:Content-Type"]),
    (
        "Content-* at the top level, parsed form",
        {"header:Content-Language:asText": "en"},
        ["header:Content-Language:asText"],
    ),
    (
        "bodyStructure with textBody",
        {"bodyValues": BV, "bodyStructure": {"partId": "t"}, "textBody": [TEXT]},
        ["bodyStructure", "textBody"],
    ),
    (
        "bodyStructure with attachments",
        {"bodyStructure": {"blobId": "Updf"}, "attachments": []},
        ["bodyStructure", "attachments"],
    ),
    ("textBody with two parts", {"bodyValues": BV, "textBody": [TEXT, TEXT]}, ["textBody"]),
    ("textBody empty", {"textBody": []}, ["textBody"]),
    (
        "textBody not text/plain",
        {"bodyValues": BV, "textBody": [{"partId": "h", "type": "text/html"}]},
        ["textBody/0/type"],
    ),
    (
        "htmlBody not text/html",
        {"bodyValues": BV, "htmlBody": [{"partId": "t", "type": "text/plain"}]},
        ["htmlBody/0/type"],
    ),
    ("htmlBody with two parts", {"bodyValues": BV, "htmlBody": [HTML, HTML]}, ["htmlBody"]),
    (
        "partId and blobId",
        {"bodyValues": BV, "attachments": [{"partId": "t", "blobId": "Updf"}]},
        ["attachments/0/partId", "attachments/0/blobId"],
    ),
    (
        "partId not in bodyValues",
        {"bodyValues": BV, "textBody": [{"partId": "nope"}]},
        ["textBody/0/partId"],
    ),
    ("partId without bodyValues", {"textBody": [{"partId": "t"}]}, ["textBody/0/partId"]),
    (
        "charset with partId",
        {"bodyValues": BV, "textBody": [{"partId": "t", "charset": "utf-8"}]},
        ["textBody/0/charset"],
    ),
    (
        "size with partId",
        {"bodyValues": BV, "textBody": [{"partId": "t", "size": 4}]},
        ["textBody/0/size"],
    ),
    (
        "Content-Transfer-Encoding in a part",
        {
            "bodyValues": BV,
            "textBody": [{"partId": "t", "header:Content-Transfer-Encoding": " base64"}],
        },
        ["textBody/0/header:Content-Transfer-Encoding"],
    ),
    (
        "Content-Transfer-Encoding at the top",
        {"header:Content-Transfer-Encoding": " 7bit"},
        ["header:Content-Transfer-Encoding"],
    ),
    (
        "isEncodingProblem true",
        {"bodyValues": {"t": {"value": "x", "isEncodingProblem": True}}, "textBody": [TEXT]},
        ["bodyValues/t/isEncodingProblem"],
    ),
    (
        "isTruncated true",
        {"bodyValues": {"t": {"value": "x", "isTruncated": True}}, "textBody": [TEXT]},
        ["bodyValues/t/isTruncated"],
    ),
    (
        "bodyValue without a string value",
        {"bodyValues": {"t": {"value": 3}}},
        ["bodyValues/t/value"],
    ),
    ("unknown property", {"flavour": "vanilla"}, ["flavour"]),
    (
        "unknown part property",
        {"bodyValues": BV, "bodyStructure": {"partId": "t", "colour": "red"}},
        ["bodyStructure/colour"],
    ),
    *[
        (f"server-set {p}", {p: None}, [p])
        for p in ("id", "blobId", "threadId", "size", "hasAttachment", "preview")
    ],
    (
        "root part repeats a top-level header",
        {
            "subject": "a",
            "bodyValues": BV,
            "bodyStructure": {"partId": "t", "header:Subject": " b"},
        },
        ["subject", "bodyStructure/header:Subject"],
    ),
    (
        "lone text part repeats a top-level header",
        {"header:X-A": " a", "bodyValues": BV, "textBody": [{"partId": "t", "header:x-a": " b"}]},
        ["header:X-A", "textBody/0/header:x-a"],
    ),
    (
        "multipart with a partId",
        {
            "bodyValues": BV,
            "bodyStructure": {"type": "multipart/mixed", "partId": "t", "subParts": [TEXT]},
        },
        ["bodyStructure/partId"],
    ),
    (
        "leaf with subParts",
        {"bodyValues": BV, "bodyStructure": {"type": "text/plain", "subParts": [TEXT]}},
        ["bodyStructure/subParts"],
    ),
    (
        "multipart without parts",
        {"bodyStructure": {"type": "multipart/mixed", "subParts": []}},
        ["bodyStructure/subParts"],
    ),
    ("part without content", {"bodyStructure": {"type": "text/plain"}}, ["bodyStructure"]),
    (
        "nested part error path",
        {"bodyValues": BV, "bodyStructure": {"subParts": [TEXT, {"subParts": [{"blobId": 7}]}]}},
        ["bodyStructure/subParts/1/subParts/0/blobId"],
    ),
    ("bad date", {"sentAt": "yesterday"}, ["sentAt"]),
    ("bad address", {"from": [{"name": None, "email": "a<b>@c"}]}, ["from"]),
    ("address not an object", {"to": ["a@b"]}, ["to"]),
    ("raw value with a bare line break", {"header:X-A": " a\r\nb"}, ["header:X-A"]),
    ("raw value too long to fold", {"header:X-A": " " + "a" * 1000}, ["header:X-A"]),
    ("message id with spaces", {"messageId": ["a b@c"]}, ["messageId"]),
    ("text value not a string", {"subject": 5}, ["subject"]),
    (
        "bad type",
        {"bodyStructure": {"blobId": "Updf", "type": "not a type"}},
        ["bodyStructure/type"],
    ),
    ("bad cid", {"attachments": [{"blobId": "Updf", "cid": "<x>"}]}, ["attachments/0/cid"]),
    (
        "bad language",
        {"attachments": [{"blobId": "Updf", "language": "en"}]},
        ["attachments/0/language"],
    ),
]


@pytest.mark.parametrize(("label", "obj", "properties"), INVALID, ids=[c[0] for c in INVALID])
def test_eml_set_create_rules_give_invalid_properties(
    label: str, obj: dict[str, Any], properties: list[str]
) -> None:
    with pytest.raises(SetError) as info:
        build_message({"mailboxIds": {"m": True}, **obj}, BLOBS.get, now=NOW)
    assert info.value.type is SetErrorType.INVALID_PROPERTIES
    assert info.value.properties == properties
    assert info.value.to_json()["type"] == "invalidProperties"


def test_eml_set_create_unknown_blobs_give_blob_not_found() -> None:
    """blobNotFound MUST carry notFound with every unknown blobId (RFC 8621 §4.6)."""
    obj = {
        "attachments": [
            {"blobId": "Unope"},
            {"blobId": "Updf"},
            {"blobId": "Gmissing"},
            {"blobId": "Unope"},
        ]
    }
    with pytest.raises(SetError) as info:
        build_message(obj, BLOBS.get, now=NOW)
    assert info.value.to_json() == {
        "type": "blobNotFound",
        "description": "no such blob",
        "notFound": ["Unope", "Gmissing"],
    }


def test_eml_set_create_invalid_properties_win_over_missing_blobs() -> None:
    with pytest.raises(SetError) as info:
        build_message({"headers": [], "attachments": [{"blobId": "Unope"}]}, BLOBS.get)
    assert info.value.type is SetErrorType.INVALID_PROPERTIES


# --- encoders -------------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_encoded_words_are_short_and_decode_back(text: str) -> None:
    from imapjmap.mime.codec import decode_encoded_words

    words = encoded_words(text)
    assert all(len(w) <= 75 for w in words)
    assert decode_encoded_words(" ".join(words)) == "".join(
        c for c in text if unicodedata.category(c) != "Cc"
    )


@given(st.binary(max_size=600))
def test_quoted_printable_decodes_back(data: bytes) -> None:
    from imapjmap.mime.codec import decode_transfer

    for kind in ("text/plain", "application/octet-stream"):
        encoding, body = encode_body(data, kind)
        assert max((len(line) for line in body.split(b"\r\n")), default=0) <= 998
        assert decode_transfer(body, encoding) == (data, False)
    qp = quoted_printable(data)
    assert max((len(line) for line in qp.split(b"\r\n")), default=0) <= 76


# --- round trip (Hypothesis): what is built reads back --------------------------------------

_local = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,12}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)
emails = st.builds(
    lambda local, domain: f"{local}@{domain}.example",
    _local,
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
)
names = st.one_of(st.none(), st.text(max_size=60))
bodies = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\n", "\r", " ", "="])),
    max_size=1500,
) | st.builds(lambda n, s: ("y" * n) + s, st.integers(900, 2500), st.text(max_size=30))


def expected_text(value: str) -> str:
    return re.sub(r"\r\n|\r", "\n", value)


def expected_header_text(value: str) -> str:
    text = re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", value.replace("\r\n", " "))
    return unicodedata.normalize("NFC", text).strip(" ")


def expected_name(value: str | None) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize(
        "NFC", re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", value.replace("\r\n", " "))
    ).strip()
    return text or None


@given(
    subject=st.text(max_size=300),
    sender=names,
    from_email=emails,
    recipients=st.lists(st.tuples(names, emails), max_size=4),
    text=bodies,
    html=st.none() | bodies,
    filename=st.none() | st.text(min_size=1, max_size=120).filter(lambda s: "=?" not in s),
)
def test_eml_set_create_round_trip(
    subject: str,
    sender: str | None,
    from_email: str,
    recipients: list[tuple[str | None, str]],
    text: str,
    html: str | None,
    filename: str | None,
) -> None:
    obj: dict[str, Any] = {
        "mailboxIds": {"m": True},
        "subject": subject,
        "from": [{"name": sender, "email": from_email}],
        "to": [{"name": n, "email": e} for n, e in recipients],
        "bodyValues": values(t=text, **({"h": html} if html is not None else {})),
        "textBody": [TEXT],
    }
    if html is not None:
        obj["htmlBody"] = [HTML]
    if filename is not None:
        obj["attachments"] = [{"blobId": "Updf", "name": filename}]
    raw = build(obj)
    got = read(raw)
    assert got["subject"] == expected_header_text(subject)
    assert got["from"] == [{"name": expected_name(sender), "email": from_email}]
    assert (got["to"] or []) == [{"name": expected_name(n), "email": e} for n, e in recipients]
    by_id = {p["partId"]: p for p in walk(got["bodyStructure"])}
    (text_part,) = (
        got["textBody"]
        if html is None
        else [p for p in got["textBody"] if p["type"] == "text/plain"]
    )
    assert got["bodyValues"][text_part["partId"]]["value"] == expected_text(text)
    if html is not None:
        (html_part,) = got["htmlBody"]
        assert got["bodyValues"][html_part["partId"]]["value"] == expected_text(html)
    if filename is not None:
        (attachment,) = got["attachments"]
        assert attachment["name"] == expected_name(filename)
        assert by_id[attachment["partId"]]["size"] == len(BLOBS["Updf"][0])


def walk(part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield part
    for child in part.get("subParts") or []:
        yield from walk(child)
