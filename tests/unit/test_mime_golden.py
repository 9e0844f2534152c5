"""Golden files for the MIME → JMAP Email conversion (architecture T2, Stalwart-style).

Each ``tests/data/mime/<case>.eml`` has a ``<case>.json`` holding the Email/parse default
properties plus ``bodyStructure`` and ``headers``, with ``fetchAllBodyValues`` and blob prefix
``Gtest``.  Every JSON file was reviewed by hand against RFC 8621.  After a deliberate change,
regenerate with ``python -m pytest tests/unit/test_mime_golden.py --update-golden`` and review
the diff before committing it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from imapjmap.mime.body import part_content
from imapjmap.mime.email import (
    DEFAULT_BODY_PROPERTIES,
    DEFAULT_PARSE_PROPERTIES,
    email_properties,
)
from imapjmap.mime.tree import parse_message

DATA = Path(__file__).resolve().parent.parent / "data" / "mime"
CASES = sorted(path.stem for path in DATA.glob("*.eml"))

PROPERTIES = [*DEFAULT_PARSE_PROPERTIES, "bodyStructure", "headers"]
BODY_PROPERTIES = [*DEFAULT_BODY_PROPERTIES, "subParts"]


def convert(raw: bytes) -> dict[str, object]:
    return email_properties(
        raw,
        properties=PROPERTIES,
        body_properties=BODY_PROPERTIES,
        fetch_text=False,
        fetch_html=False,
        fetch_all=True,
        max_body_value_bytes=0,
        blob_prefix="Gtest",
    )


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 22
    for case in CASES:
        assert (DATA / f"{case}.json").exists(), f"{case}.eml has no golden JSON"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, request: pytest.FixtureRequest) -> None:
    raw = (DATA / f"{case}.eml").read_bytes()
    actual = convert(raw)
    golden = DATA / f"{case}.json"
    if request.config.getoption("--update-golden", default=False):
        text = json.dumps(actual, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
        golden.write_text(text, encoding="utf-8")
    expected = json.loads(golden.read_text(encoding="utf-8"))
    assert actual == expected
    # JSON round trip: every value is JSON (no bytes, no surrogates)
    assert json.loads(json.dumps(actual)) == actual


@pytest.mark.parametrize("case", CASES)
def test_blobs_are_served_back(case: str) -> None:
    """Every leaf blobId can be downloaded and has the advertised size and type."""
    raw = (DATA / f"{case}.eml").read_bytes()
    props = convert(raw)
    stack = [props["bodyStructure"]]
    while stack:
        part = stack.pop()
        assert isinstance(part, dict)
        if part["subParts"] is not None:
            assert part["partId"] is None and part["blobId"] is None
            stack.extend(part["subParts"])
            continue
        assert part["blobId"] == f"Gtest_{part['partId']}"
        content, type_, name = part_content(raw, part["partId"])
        assert (len(content), type_, name) == (part["size"], part["type"], part["name"])


def test_attached_message_blob_is_the_original_octets() -> None:
    raw = (DATA / "attached_message.eml").read_bytes()
    content, type_, _ = part_content(raw, "2")
    assert type_ == "message/rfc822"
    start = raw.index(b"Message-ID: <inv.117@")
    end = raw.index(b"\r\n--fwd-outer--")
    assert content == raw[start:end]


def test_part_ids_are_imap_sections() -> None:
    """partIds follow RFC 3501 §6.4.5 section numbering (spot check on the RFC example)."""
    root = parse_message((DATA / "nested_alternative.eml").read_bytes())
    leaves = [p.part_id for p in root.walk() if not p.is_multipart]
    assert leaves == [
        *("1", "2.1.1.1", "2.1.1.2", "2.1.1.3", "2.1.2.1", "2.1.2.2"),
        *("2.2", "2.3", "2.4", "3"),
    ]
    sections = [p.section for p in root.walk() if p.is_multipart]
    assert sections == ["", "2", "2.1", "2.1.1", "2.1.2"]


def test_corpus_timing(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a benchmark gate: reports the cost of default properties + bodyValues ×100."""
    corpus = [(DATA / f"{case}.eml").read_bytes() for case in CASES]
    started = time.perf_counter()
    for _ in range(100):
        for raw in corpus:
            email_properties(
                raw,
                properties=DEFAULT_PARSE_PROPERTIES,
                body_properties=DEFAULT_BODY_PROPERTIES,
                fetch_text=True,
                fetch_html=True,
                fetch_all=False,
                max_body_value_bytes=0,
                blob_prefix="G",
            )
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nemail_properties: {len(corpus)} messages ×100 in {elapsed:.3f}s")
    assert elapsed < 60
