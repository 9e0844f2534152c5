"""A big API response is encoded in parts (``jmap.wire.encode_in_parts``): the same bytes as
one ``json.dumps``, and between the parts the event loop serves other requests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from imapjmap.http import views
from imapjmap.jmap.wire import EncodedObject, encode_in_parts
from imapjmap.store.db import Store

EMAIL = {
    "id": "Mf0e1d2c3b4a5968778695a4b",
    "mailboxIds": {"Mabc": True},
    "keywords": {"$seen": True},
    "from": [{"name": 'Zoë \u2028 "Q"', "email": "z@example.com"}],
    "subject": "\ud83d\udce7 tab\tnewline\n",
    "size": 12345,
    "preview": None,
    "hasAttachment": False,
}


def _get_response(count: int) -> dict[str, Any]:
    args = {"accountId": "A1", "state": "s", "list": [EMAIL] * count, "notFound": []}
    return {"methodResponses": [["Email/get", args, "g"]], "sessionState": "x"}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="empty-object"),
        pytest.param([], id="empty-list"),
        pytest.param("text", id="string"),
        pytest.param([1.5, None, True], id="scalars"),
        pytest.param(_get_response(0), id="no-emails"),
        pytest.param(_get_response(50), id="a-page"),
        pytest.param(_get_response(1000), id="maxObjectsInGet"),
        pytest.param(list(range(201)), id="two-slices-and-one"),
        pytest.param({"a": [[[[list(range(300))]]]]}, id="deeper-than-opened"),
        pytest.param({1: "a", "b": [2] * 150}, id="non-string-key"),
    ],
)
def test_the_parts_are_one_json_dumps(value: Any) -> None:
    assert b"".join(encode_in_parts(value)) == json.dumps(value).encode()


KEPT = EncodedObject(EMAIL)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(KEPT, id="alone"),
        pytest.param(_get_response(0) | {"x": [KEPT]}, id="one-in-a-list"),
        pytest.param([KEPT, 1, KEPT, KEPT, {"a": KEPT}, KEPT], id="runs-and-plain-items"),
        pytest.param([1] * 150 + [KEPT] * 3 + [2] * 250, id="between-slices"),
        pytest.param({"a": [[[[[KEPT]]]]]}, id="deeper-than-opened"),
        pytest.param(
            {"methodResponses": [["Email/get", {"list": [KEPT] * 50 + [EMAIL]}, "g"]]},
            id="a-page-kept-and-not",
        ),
    ],
)
def test_encoded_objects_are_spliced_as_one_json_dumps(value: Any) -> None:
    assert b"".join(encode_in_parts(value)) == json.dumps(value).encode()


def test_an_encoded_object_is_copied_not_encoded_again() -> None:
    parts = list(encode_in_parts({"list": [KEPT] * 50}))
    assert b", ".join([KEPT.json] * 50) in parts  # one part for the run


def test_a_thousand_emails_come_in_slices_of_a_hundred() -> None:
    body = _get_response(1000)
    parts = list(encode_in_parts(body))
    one_email = len(json.dumps(EMAIL))
    assert max(len(part) for part in parts) < 101 * (one_email + 2)
    assert sum(len(part) > 50 * one_email for part in parts) == 10


async def test_the_event_loop_runs_while_a_big_response_encodes() -> None:
    """Another account used the cache just now: the big answer's encoding pauses."""
    store = await Store.open(":memory:")
    app = web.Application()
    app[views.SERVICES] = type("Services", (), {"store": store})()  # only .store is used
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    body = {"methodResponses": [["Email/get", {"list": [EMAIL] * 20_000}, "g"]]}
    ticker = asyncio.create_task(tick())
    try:
        await store.read(lambda tx: 1, account="other")
        response = await views._paced_json(app, "heavy", body)
    finally:
        ticker.cancel()
        await store.aclose()
    assert response.body == json.dumps(body).encode()
    assert ticks > 2  # in one call, the ticker would run once before and once after
