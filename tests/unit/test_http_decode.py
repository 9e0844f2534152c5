"""A large API request body is decoded off the event loop: other requests (and a SIGTERM)
are served meanwhile."""

from __future__ import annotations

import asyncio
import json

import pytest

from imapjmap.http.views import decode_json
from imapjmap.jmap.errors import RequestError

BIG = json.dumps({"conditions": [{"subject": f"s{i}"} for i in range(100_000)]}).encode()


async def test_the_event_loop_runs_while_a_large_body_decodes() -> None:
    ticks = 0
    decoding = asyncio.create_task(decode_json(BIG))
    while not decoding.done():
        ticks += 1
        await asyncio.sleep(0.001)
    assert len((await decoding)["conditions"]) == 100_000
    assert ticks > 1  # decoded on the loop, the first tick would come after the whole body


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1, "a": 2}', b'{"a": ' + b"1" * 300_000 + b"}"],
    ids=["duplicate-member", "huge-integer"],
)
async def test_large_or_small_the_rules_are_the_same(body: bytes) -> None:
    with pytest.raises(RequestError) as err:
        await decode_json(body)
    assert err.value.type.value.endswith("notJSON")
