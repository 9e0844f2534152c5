"""SearchSnippet/get (RFC 8621 §5; checklist SNP-*): highlighting, escaping, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from imapjmap.config import Config
from imapjmap.jmap.errors import MethodError
from imapjmap.methods.email import snippet
from imapjmap.store.db import Store
from tests.unit.email_world import A, World, call

RAW = (
    b"From: a@example.org\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    + b"Filler words. " * 40
    + b"The <secret> meeting is on Tuesday & lasts an hour.\r\n"
)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = await Store.open(":memory:")
    w = World(store, Config())
    await w.setup()
    await w.give_message("e5", RAW)
    yield w
    await store.aclose()


async def snippets(world: World, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return await snippet.search_snippet_get(world.context(**kw), call("SearchSnippet/get", args))


@pytest.mark.parametrize(
    ("value", "terms"),
    [
        ("hello", ["hello"]),
        ("hello world", ["hello", "world"]),
        ('"hello world" again', ["hello world", "again"]),
        ('  "" x ', ["x"]),
    ],
)
def test_terms_of(value: str, terms: list[str]) -> None:
    assert snippet.terms_of(value) == terms


@pytest.mark.parametrize(
    ("text", "terms", "marked"),
    [
        ("Hello world", ["hello"], "<mark>Hello</mark> world"),
        ("Invoice <2024> & co", ["2024"], "Invoice &lt;<mark>2024</mark>&gt; &amp; co"),
        ("a <b> c", ["<b>"], "a <mark>&lt;b&gt;</mark> c"),
        ("Hello world", ["hello world", "hello"], "<mark>Hello world</mark>"),
        ("Hello world", ["nothing"], None),
        ("", ["x"], None),
    ],
)
def test_mark_escapes_and_highlights(text: str, terms: list[str], marked: str | None) -> None:
    assert snippet.mark(text, snippet.pattern_of(terms)) == marked


async def test_subject_and_preview_snp(world: World) -> None:
    result = await snippets(
        world,
        {
            "filter": {
                "operator": "AND",
                "conditions": [
                    {"text": "hello"},
                    {"body": "preview"},
                    {"operator": "NOT", "conditions": [{"subject": "world"}]},
                ],
            },
            "emailIds": ["e1", "e4", "nope"],
        },
    )
    assert result["accountId"] == A and result["notFound"] == ["nope"]
    e1, e4 = result["list"]
    assert e1 == {
        "emailId": "e1",
        "subject": "<mark>Hello</mark> world",
        "preview": "<mark>preview</mark> text",
    }
    assert e4 == {"emailId": "e4", "subject": None, "preview": None}


async def test_preview_from_the_body_when_the_cached_one_does_not_match(world: World) -> None:
    result = await snippets(world, {"filter": {"body": '"secret> meeting"'}, "emailIds": ["e5"]})
    (e5,) = result["list"]
    assert e5["subject"] is None
    assert "The &lt;<mark>secret&gt; meeting</mark> is on Tuesday &amp; lasts" in e5["preview"]
    assert e5["preview"].count("Filler") <= 3  # cut around the match, not the start


async def test_no_filter_gives_nulls(world: World) -> None:
    result = await snippets(world, {"filter": None, "emailIds": ["e1"]})
    assert result["list"] == [{"emailId": "e1", "subject": None, "preview": None}]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"filter": {"nope": 1}, "emailIds": ["e1"]}, "unsupportedFilter"),
        ({"filter": None}, "invalidArguments"),
        ({"filter": None, "emailIds": "e1"}, "invalidArguments"),
        ({"filter": None, "emailIds": ["e1"], "extra": 1}, "invalidArguments"),
        ({"filter": None, "emailIds": ["e1", "e2", "e3"]}, "requestTooLarge"),
    ],
)
async def test_errors(world: World, args: dict[str, Any], error: str) -> None:
    with pytest.raises(MethodError) as err:
        await snippets(world, args, max_objects_in_get=2)
    assert err.value.type == error
