"""The pure parts of blobs: the id scheme of uploads and parts of parts, the upload type,
Blob/get entries, the message check (checklist CORE-BIN-*, RFC 9404 §4.2)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap.blobs import content as blob_store
from imapjmap.http.blobs import normalise_type
from imapjmap.jmap.wire import is_id
from imapjmap.methods.blob.methods import _GetArgs, blob_json
from imapjmap.methods.email.parse import looks_like_message


def test_upload_id_is_the_content_digest_core_bin_02() -> None:
    blob_id = blob_store.upload_blob_id(b"hello")
    assert blob_id == blob_store.upload_blob_id(b"hello") != blob_store.upload_blob_id(b"hell")
    digest = base64.b32encode(hashlib.sha256(b"hello").digest()).decode().rstrip("=").lower()
    assert blob_id == "U" + digest
    assert is_id(blob_id) and len(blob_id) == 53


@given(st.binary(max_size=64))
def test_upload_ids_are_valid_ids(data: bytes) -> None:
    assert is_id(blob_store.upload_blob_id(data))


@pytest.mark.parametrize(
    ("base", "part", "expected"),
    [
        ("Uabc", "1", "BUabc_1"),
        ("Uabc", "2.1.3", "BUabc_2-1-3"),
        ("GMx_y", "1", "PMx_y_1"),  # a part of a message blob is written as a P id
        ("PMx_2", "1.2", "BPMx_2_1-2"),
        ("BUabc_2", "1", "BBUabc_2_1"),
    ],
)
def test_sub_blob_ids_round_trip(base: str, part: str, expected: str) -> None:
    blob_id = blob_store.sub_blob_id(base, part)
    assert blob_id == expected
    if blob_id.startswith("B"):
        assert blob_store.split_sub_blob_id(blob_id) == (base, part)


def test_sub_blob_id_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError):
        blob_store.sub_blob_id("Uabc", "1.x")
    with pytest.raises(ValueError):
        blob_store.sub_blob_id("U" + "a" * 252, "1")  # over 255 octets


@pytest.mark.parametrize("blob_id", ["B", "BUabc", "BUabc_", "B_1", "BUabc_1.2", "Uabc", "G1"])
def test_not_sub_blob_ids(blob_id: str) -> None:
    assert blob_store.split_sub_blob_id(blob_id) is None


@pytest.mark.parametrize(
    ("blob_id", "email_id"),
    [
        ("GMe1", "Me1"),
        ("PMe1_2-1", "Me1"),
        ("BPMe1_2_1", "Me1"),
        ("BBGMe1_1_2", "Me1"),
        ("Uabc", None),
        ("BUabc_1", None),
        ("Zzz", None),
    ],
)
def test_email_of(blob_id: str, email_id: str | None) -> None:
    assert blob_store.email_of(blob_id) == email_id


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("  ", "application/octet-stream"),
        ("image/png", "image/png"),
        ("Image/PNG", "image/png"),
        ("text/plain;charset=UTF-8", "text/plain; charset=UTF-8"),
        ("text/plain ;  charset=UTF-8 ; ", "text/plain; charset=UTF-8"),
        ("application/x-whatever", "application/x-whatever"),
        ("text/plain\x00", "application/octet-stream"),
        ("tëxt/plain", "application/octet-stream"),
        ("%%%/;;;", "application/octet-stream"),  # not RFC 2045 type "/" subtype
        ("text/", "application/octet-stream"),
        ("/plain", "application/octet-stream"),
        ("text plain", "application/octet-stream"),
        ("text/plain/x", "application/octet-stream"),
        ("text/plain; junk; format=flowed", "text/plain; format=flowed"),
        ('text/plain; name="a b.txt"', 'text/plain; name="a b.txt"'),
        ("application/vnd.a+json", "application/vnd.a+json"),
    ],
)
def test_upload_type_is_normalised_never_sniffed_core_bin_01(sent: str | None, kept: str) -> None:
    assert normalise_type(sent) == kept


def _args(props: tuple[str, ...], offset: int = 0, length: int | None = None) -> _GetArgs:
    return _GetArgs(["x"], props, offset, length)


def test_blob_json_data_text_or_base64() -> None:
    assert blob_json("x", b"abc", _args(("data",))) == {
        "id": "x",
        "data:asText": "abc",
        "isEncodingProblem": False,
        "isTruncated": False,
    }
    binary = blob_json("x", b"\xff\x00", _args(("data", "size")))
    assert binary == {
        "id": "x",
        "data:asBase64": "/wA=",
        "size": 2,
        "isEncodingProblem": True,
        "isTruncated": False,
    }
    assert blob_json("x", b"\xff", _args(("data:asBase64",)))["isEncodingProblem"] is False


def test_blob_json_range_and_digest() -> None:
    got = blob_json("x", b"0123456789", _args(("data:asText", "digest:sha", "size"), 8, 5))
    assert got["data:asText"] == "89" and got["isTruncated"] is True and got["size"] == 10
    assert got["digest:sha"] == base64.b64encode(hashlib.sha1(b"89").digest()).decode()
    empty = blob_json("x", b"01", _args(("data:asText",), 5))
    assert empty["data:asText"] == "" and empty["isTruncated"] is True
    assert set(blob_json("x", b"01", _args(("size",)))) == {"id", "size"}


@pytest.mark.parametrize(
    ("data", "is_message"),
    [
        (b"Subject: hi\r\n\r\nbody", True),
        (b"From: a@example.org\r\n", True),
        (b"", False),
        (b"\x89PNG\r\n\x1a\n\x00\x00", False),
        (b"just some text\r\nover two lines\r\n", False),
    ],
)
def test_looks_like_message(data: bytes, is_message: bool) -> None:
    assert looks_like_message(data) is is_message
