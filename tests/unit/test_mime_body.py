"""The MIME tree, the §4.1.4 decomposition, bodyValues, preview and the decoders."""

from __future__ import annotations

import email
import email.policy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imapjmap.mime.body import (
    analyse,
    body_values,
    decompose,
    has_attachment,
    html_to_text,
    part_content,
    preview,
    truncate,
)
from imapjmap.mime.codec import decode_text, decode_transfer
from imapjmap.mime.email import (
    DEFAULT_BODY_PROPERTIES,
    DEFAULT_PARSE_PROPERTIES,
    check_body_properties,
    check_properties,
    email_properties,
)
from imapjmap.mime.envelope import base_subject
from imapjmap.mime.tree import MAX_DEPTH, assemble_params, parse_message, split_params

DATA = Path(__file__).resolve().parent.parent / "data" / "mime"
CORPUS = {path.stem: path.read_bytes() for path in sorted(DATA.glob("*.eml"))}


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# --- the §4.1.4 algorithm on bare nodes ----------------------------------------------------


@dataclass
class Node:
    type: str
    label: str = ""
    disposition: str | None = None
    name: str | None = None
    sub_parts: list[Node] = field(default_factory=list)


def labels(nodes: list[Node]) -> str:
    return "".join(n.label for n in nodes)


def mp(subtype: str, *children: Node) -> Node:
    return Node(f"multipart/{subtype}", sub_parts=list(children))


def test_rfc_example_decomposition() -> None:
    """The example under the pseudo-code in RFC 8621 §4.1.4, literally."""
    inline = "inline"
    root = mp(
        "mixed",
        Node("text/plain", "A", inline),
        mp(
            "mixed",
            mp(
                "alternative",
                mp(
                    "mixed",
                    Node("text/plain", "B", inline),
                    Node("image/jpeg", "C", inline),
                    Node("text/plain", "D", inline),
                ),
                mp("related", Node("text/html", "E"), Node("image/jpeg", "F")),
            ),
            Node("image/jpeg", "G", "attachment"),
            Node("application/x-excel", "H"),
            Node("message/rfc822", "J"),
        ),
        Node("text/plain", "K", inline),
    )
    text, html, attachments = decompose(root)
    assert (labels(text), labels(html), labels(attachments)) == ("ABCDK", "AEK", "CFGHJ")


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (Node("text/plain", "P"), ("P", "P", "")),
        (Node("text/html", "H"), ("H", "H", "")),
        (Node("image/png", "I"), ("I", "I", "")),  # an image alone is the body
        (Node("application/pdf", "X"), ("", "", "X")),
        (mp("alternative", Node("text/plain", "P"), Node("text/html", "H")), ("P", "H", "")),
        (mp("alternative", Node("text/html", "H")), ("H", "H", "")),  # HTML only
        (mp("alternative", Node("text/plain", "P")), ("P", "P", "")),  # text only
        (mp("alternative", Node("text/plain", "P"), Node("image/png", "I")), ("P", "P", "I")),
        (mp("related", Node("text/html", "H"), Node("image/png", "I")), ("H", "H", "I")),
        (  # a named text part after the first is an attachment
            mp("mixed", Node("text/plain", "P"), Node("text/plain", "N", name="n.txt")),
            ("P", "P", "N"),
        ),
        (  # ... but a named first part is the body
            mp("mixed", Node("text/plain", "N", name="n.txt")),
            ("N", "N", ""),
        ),
        (mp("mixed", Node("text/plain", "P", "attachment")), ("", "", "P")),
        (
            mp(
                "mixed",
                mp("alternative", Node("text/plain", "P"), Node("text/html", "H")),
                Node("image/png", "I", "inline"),
            ),
            ("PI", "HI", ""),
        ),
        (  # an alternative nested where the text list was already dropped: no crash
            mp(
                "alternative",
                mp(
                    "mixed",
                    Node("text/html", "H"),
                    mp("alternative", Node("text/plain", "Q"), Node("text/html", "R")),
                ),
            ),
            ("HR", "HR", ""),  # the outer alternative then copies the HTML-only result
        ),
        (mp("mixed"), ("", "", "")),
    ],
)
def test_decomposition_table(root: Node, expected: tuple[str, str, str]) -> None:
    text, html, attachments = decompose(root)
    assert (labels(text), labels(html), labels(attachments)) == expected


def test_has_attachment_rule() -> None:
    assert not has_attachment([])
    assert not has_attachment([Node("image/png", disposition="inline")])
    assert has_attachment([Node("image/png")])  # no Content-Disposition at all
    assert has_attachment([Node("application/pdf", disposition="attachment")])


# --- the tree ------------------------------------------------------------------------------


def test_multipart_without_boundary_parameter_is_text() -> None:
    root = parse_message(crlf("Content-Type: multipart/mixed\n\n--x\n\nhello\n--x--\n"))
    assert (root.type, root.part_id, root.sub_parts) == ("text/plain", "1", [])


def test_missing_close_delimiter_ends_at_eof() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\npre\n--b\n\none\n--b\n\ntwo\n")
    root = parse_message(raw)
    assert [p.content()[0] for p in root.sub_parts] == [b"one", b"two\r\n"]


def test_preamble_epilogue_and_empty_parts() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\npreamble\n--b\n--b\n\n--b--\nepilogue")
    root = parse_message(raw)
    assert [(p.part_id, p.content()[0]) for p in root.sub_parts] == [("1", b""), ("2", b"")]


def test_boundary_with_transport_padding_and_quotes() -> None:
    raw = crlf('Content-Type: multipart/mixed; boundary="a b"\n\n--a b  \n\nx\n--a b-- \n')
    assert [p.content()[0] for p in parse_message(raw).sub_parts] == [b"x"]


def test_invalid_content_type_is_text_plain_but_keeps_charset() -> None:
    root = parse_message(crlf("Content-Type: text; charset=utf-8\n\ncaf\u00e9"))
    assert (root.type, root.charset) == ("text/plain", "utf-8")


def test_non_text_charset_is_null_and_default_is_us_ascii() -> None:
    assert parse_message(crlf("Content-Type: image/png; charset=x\n\n")).charset == "x"
    assert parse_message(crlf("Content-Type: image/png\n\n")).charset is None
    assert parse_message(crlf("Subject: x\n\nhi")).charset == "us-ascii"


def test_digest_default_only_when_no_content_type() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: a\n\nA\n"
        "--d\nContent-Type: text/plain\n\nB\n--d--\n"
    )
    assert [p.type for p in parse_message(raw).sub_parts] == ["message/rfc822", "text/plain"]


def test_deep_nesting_is_cut() -> None:
    depth = MAX_DEPTH + 10
    head = "".join(
        f"--b{i}z\nContent-Type: multipart/mixed; boundary=b{i + 1}z\n\n" for i in range(depth)
    )
    raw = crlf("Content-Type: multipart/mixed; boundary=b0z\n\n" + head + "--bX\n")
    parts = list(parse_message(raw).walk())
    assert len(parts) == MAX_DEPTH + 1
    assert parts[-1].type == "text/plain"


def test_rfc2231_parameters() -> None:
    _, params = split_params(
        "attachment; filename*0*=utf-8'en'a%20; filename*1=\"b c\"; filename*2*=%E2%82%AC; "
        'title="x; y"; Size=10; size=11'
    )
    assembled = assemble_params(params)
    assert assembled["filename"] == "a b c\u20ac"
    assert assembled["title"] == "x; y"
    assert assembled["size"] == "10"  # first wins, names are case-insensitive


def test_windows_path_filename_keeps_backslashes() -> None:
    _, params = split_params('attachment; filename="C:\\dir\\a.txt"')
    assert assemble_params(params)["filename"] == "C:\\dir\\a.txt"


# --- decoders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding", "expected"),
    [
        (b"aGVsbG8=", "base64", (b"hello", False)),
        (b"aGVs\r\nbG8=\r\n", "BASE64", (b"hello", False)),
        (b"aGVsbG8", "base64", (b"hello", True)),  # missing padding
        (b"aGVs*bG8=", "base64", (b"hello", True)),  # junk character
        (b"aGk=aGk=", "base64", (b"hihi", True)),  # data after padding
        (b"aGVsbG8=a", "base64", (b"hello", True)),  # a lone trailing sextet
        (b"caf=C3=A9", "quoted-printable", ("caf\u00e9".encode(), False)),
        (b"caf=c3=a9", "quoted-printable", ("caf\u00e9".encode(), False)),  # lower case
        (b"soft=\r\nbreak", "quoted-printable", (b"softbreak", False)),
        (b"soft=  \r\nbreak", "quoted-printable", (b"softbreak", False)),
        (b"trailing   \r\nx", "quoted-printable", (b"trailing\r\nx", False)),
        (b"bad =G1 =", "quoted-printable", (b"bad =G1 ", True)),
        (b"a=3D=", "quoted-printable", (b"a=", False)),
        (b"\xff raw", "8bit", (b"\xff raw", False)),
        (b"x", None, (b"x", False)),
        (b"begin 644 x", "x-uuencode", (b"begin 644 x", True)),  # unknown: identity
    ],
)
def test_decode_transfer(data: bytes, encoding: str | None, expected: tuple[bytes, bool]) -> None:
    assert decode_transfer(data, encoding) == expected


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        (b"caf\xc3\xa9", "utf-8", ("caf\u00e9", False)),
        (b"caf\xc3\xa9", None, ("caf\u00e9", False)),  # us-ascii default read as UTF-8
        (b"caf\xc3\xa9", "us-ascii", ("caf\u00e9", False)),
        (b"caf\xe9", "us-ascii", ("caf\ufffd", True)),
        (b"caf\xe9", "iso-8859-1", ("caf\u00e9", False)),
        (b"\x80\x81", "ISO-8859-1", ("\u20ac\x81", False)),  # WHATWG: latin-1 is cp1252
        (b"\x93q\x94", "windows-1252", ("\u201cq\u201d", False)),
        (b"\xc3\xa9", "x-unknown", ("\u00e9", True)),  # unknown: UTF-8 if it is
        (b"\xe9", "x-unknown", ("\u00e9", True)),  # ... else windows-1252
        (b"x", "base64", ("x", True)),  # a Python codec that is not a charset
        (b"x", "rot13", ("x", True)),
        (b"\\u0041", "unicode_escape", ("\\u0041", True)),
        (b"x", "undefined", ("x", True)),
        (b"+2D3/-", "utf-7", ("\ufffd", True)),  # lone surrogate replaced
        (b"\x1b$BF|K\\\x1b(B", "iso-2022-jp", ("\u65e5\u672c", False)),
        (b"\xd6\xd0", "gb2312", ("\u4e2d", False)),
        (b"x", '"UTF-8"', ("x", False)),
    ],
)
def test_decode_text(data: bytes, charset: str | None, expected: tuple[str, bool]) -> None:
    assert decode_text(data, charset) == expected


# --- bodyValues ------------------------------------------------------------------------------


def test_truncate_on_character_boundary() -> None:
    assert truncate("h\u00e9llo", 0) == ("h\u00e9llo", False)
    assert truncate("h\u00e9llo", 6) == ("h\u00e9llo", False)
    assert truncate("h\u00e9llo", 2) == ("h", True)  # é is 2 octets
    assert truncate("h\u00e9llo", 3) == ("h\u00e9", True)
    assert truncate("\U0001f389\U0001f389", 7) == ("\U0001f389", True)


def test_truncate_html_not_inside_a_tag() -> None:
    text = '<p>Hello <a href="https://example.com">x</a></p>'
    assert truncate(text, 20, is_html=True) == ("<p>Hello ", True)
    assert truncate(text, 20) == ('<p>Hello <a href="ht', True)
    assert truncate(text, 41, is_html=True) == ('<p>Hello <a href="https://example.com">x', True)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=64), st.booleans())
def test_truncate_properties(text: str, limit: int, is_html: bool) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8")  # body values are valid Unicode
    cut, truncated = truncate(text, limit, is_html=is_html)
    encoded = cut.encode("utf-8")  # raises if a sequence was split
    assert len(encoded) <= limit
    assert text.startswith(cut)
    assert truncated == (len(text.encode("utf-8")) > limit)


def test_body_values_flags() -> None:
    body = analyse(CORPUS["alternative"])

    def keys(**flags: bool) -> list[str]:
        merged = {"fetch_text": False, "fetch_html": False, "fetch_all": False, **flags}
        return list(body_values(body, max_bytes=0, **merged))

    assert keys() == []
    assert keys(fetch_text=True) == ["1"]
    assert keys(fetch_html=True) == ["2"]
    assert keys(fetch_text=True, fetch_html=True) == ["1", "2"]
    assert keys(fetch_all=True) == ["1", "2"]


def test_body_values_only_text_parts_and_truncation() -> None:
    body = analyse(CORPUS["mixed_inline_image"])
    values = body_values(body, fetch_text=True, fetch_html=True, fetch_all=True, max_bytes=10)
    assert list(values) == ["1", "3"]  # the image and the PDF have no body value
    assert values["1"] == {"value": "Here is th", "isEncodingProblem": False, "isTruncated": True}


def test_body_value_of_attached_message_is_not_fetched() -> None:
    body = analyse(CORPUS["attached_message"])
    values = body_values(body, fetch_text=False, fetch_html=False, fetch_all=True, max_bytes=0)
    assert list(values) == ["1"]


# --- EmailBodyPart extras --------------------------------------------------------------------


def test_part_header_properties_and_headers() -> None:
    props = email_properties(
        CORPUS["related"],
        properties=["attachments"],
        body_properties=[
            "partId",
            "headers",
            "header:Content-ID",
            "header:content-id:asMessageIds",
        ],
        fetch_text=False,
        fetch_html=False,
        fetch_all=False,
        max_body_value_bytes=0,
        blob_prefix="B",
    )
    (image,) = props["attachments"]
    assert image["partId"] == "2.2"
    assert image["header:Content-ID"] == " <logo.8c1f@example.org>"
    assert image["header:content-id:asMessageIds"] == ["logo.8c1f@example.org"]
    assert [h["name"] for h in image["headers"]] == [
        "Content-Type",
        "Content-Disposition",
        "Content-Id",
        "Content-Transfer-Encoding",
    ]


def test_email_properties_returns_exactly_what_was_asked() -> None:
    props = email_properties(
        CORPUS["plain"],
        properties=["id", "subject", "header:X-Missing:all", "header:Subject:asText", "size"],
        body_properties=DEFAULT_BODY_PROPERTIES,
        fetch_text=False,
        fetch_html=False,
        fetch_all=False,
        max_body_value_bytes=0,
        blob_prefix="B",
    )
    assert props == {
        "subject": "Re: Lunch on Friday?",
        "header:X-Missing:all": [],
        "header:Subject:asText": "Re: Lunch on Friday?",
    }


def test_property_validation() -> None:
    check_properties(["id", "threadId", "bodyStructure", "header:From:asAddresses:all"])
    check_body_properties(["partId", "subParts", "header:Content-Type"])
    with pytest.raises(ValueError, match="'bogus'"):
        check_properties(["subject", "bogus"])
    with pytest.raises(ValueError, match="header:From:asDate"):
        check_properties(["header:From:asDate"])
    with pytest.raises(ValueError, match="'textBody'"):
        check_body_properties(["textBody"])
    with pytest.raises(ValueError, match="'id'"):
        check_body_properties(["id"])


def test_part_content_unknown_part() -> None:
    with pytest.raises(KeyError):
        part_content(CORPUS["alternative"], "3")
    with pytest.raises(KeyError):
        part_content(CORPUS["nested_alternative"], "2")  # a multipart has no blob


# --- preview -----------------------------------------------------------------------------------


def test_preview_length_and_whitespace() -> None:
    long = "word " * 200
    body = analyse(crlf(f"Content-Type: text/plain\n\n{long}\n"))
    text = preview(body.text_body)
    assert len(text) <= 256 and "  " not in text and text.startswith("word word")


def test_html_to_text() -> None:
    markup = (
        "<html><head><title>T</title><style>p{}</style></head><body><!-- c -->"
        "<p>a&amp;b</p><div>c<br>d</div><b>bo</b>ld 1 < 2 <script>x()</script>"
        "<![CDATA[z]]><?pi?>e</body>"
    )
    assert " ".join(html_to_text(markup).split()) == "a&b c d bold 1 < 2 e"
    assert html_to_text("<p>unterminated <a href=") == " unterminated "
    assert html_to_text("<head>no end") == " no end"


# --- robustness -----------------------------------------------------------------------------


def _all_properties(raw: bytes) -> dict[str, object]:
    return email_properties(
        raw,
        properties=[*DEFAULT_PARSE_PROPERTIES, "bodyStructure", "headers", "header:X:asDate:all"],
        body_properties=[*DEFAULT_BODY_PROPERTIES, "subParts", "headers"],
        fetch_text=True,
        fetch_html=True,
        fetch_all=True,
        max_body_value_bytes=64,
        blob_prefix="H",
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_email_properties_never_raises_on_bytes(raw: bytes) -> None:
    _all_properties(raw)


MIME_ALPHABET = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"--",
        b"--b",
        b"=",
        b"=?utf-8?B?",
        b"?=",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: text/html; charset=x\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%C3; filename*1*=%A9\r\n",
        b'From: "a" <b@c>, G: d@e;\r\n',
        b"Date: 1 Jan 2024 10:00 +0000\r\n",
        b"<p>",
        b"\xc3",
        b"\xff",
        b" ",
        b"\x00",
        b"x",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MIME_ALPHABET, max_size=60).map(b"".join))
def test_email_properties_never_raises_on_mime_like_bytes(raw: bytes) -> None:
    _all_properties(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(CORPUS)), st.data())
def test_email_properties_never_raises_on_mutated_corpus(case: str, data: st.DataObject) -> None:
    raw = bytearray(CORPUS[case])
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw)))
        action = data.draw(st.sampled_from(["delete", "insert", "flip"]))
        if action == "delete":
            del raw[at : at + data.draw(st.integers(min_value=1, max_value=40))]
        elif action == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif raw:
            raw[min(at, len(raw) - 1)] ^= 0xFF
    _all_properties(bytes(raw))


# --- cross-check with the stdlib parser ---------------------------------------------------

WELL_FORMED = [
    *("plain", "html_only", "alternative", "mixed_inline_image", "related", "digest"),
    *("nested_alternative", "iso_8859_1", "windows_1252", "rfc2231_filenames", "utf8_headers"),
    *("long_folded_headers", "group_addresses", "no_content_type", "attached_message"),
]


@pytest.mark.parametrize("case", WELL_FORMED)
def test_tree_agrees_with_the_stdlib_parser(case: str) -> None:
    """On well-formed mail our splitter sees the parts email.policy.default sees."""
    raw = CORPUS[case]
    ours: list[tuple[str, object]] = []
    for part in parse_message(raw).walk():
        content = (
            None if part.is_multipart or part.type.startswith("message/") else part.content()[0]
        )
        ours.append((part.type, content))
    theirs: list[tuple[str, object]] = []
    stack: list[Any] = [email.message_from_bytes(raw, policy=email.policy.default)]
    while stack:
        message = stack.pop(0)
        type_ = message.get_content_type()
        if message.is_multipart() and not type_.startswith("message/"):
            theirs.append((type_, None))
            stack[0:0] = list(message.iter_parts())
        else:
            payload = None if type_.startswith("message/") else message.get_payload(decode=True)
            theirs.append((type_, payload))
    assert ours == theirs


# --- hostile input stays linear ---------------------------------------------------------------

_N = 20_000
HOSTILE: dict[str, bytes] = {
    "date white space": b"Date: 1" + b" " * _N + b"Jan\r\n\r\n",
    "subject blobs": b"Subject: " + b"[a]" * _N + b"x\r\n\r\n",
    "subject fwd trailers": b"Subject: x" + b"(fwd)" * _N + b"\r\n\r\n",
    "address brackets": b"From: " + b"<" * _N + b"\r\nTo: " + b"(" * _N + b"\r\n\r\n",
    "address quotes": b'Cc: "' + b'\\"' * _N + b"\r\nBcc: " + b"a:b," * _N + b"\r\n\r\n",
    "encoded words": b"Subject: " + b"=?utf-8?q?a?= " * _N + b"\r\n\r\n",
    "many parts": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n" * _N,
    "many headers": b"X-A: x\r\n" * _N + b"\r\n",
    "html scripts": b"Content-Type: text/html\r\n\r\n" + b"<script>" * _N,
    "html comments": b"Content-Type: text/html\r\n\r\n" + b"<!--<p>" * _N,
    "rfc2231 segments": b"Content-Type: text/plain; "
    + b"".join(b"name*%d*=%%C3%%A9; " % i for i in range(999)) * 20
    + b"\r\n\r\nx",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_fast(case: str) -> None:
    started = time.perf_counter()
    props = _all_properties(HOSTILE[case])
    base_subject(str(props.get("subject")))
    assert time.perf_counter() - started < 10.0  # linear: well under a second each
