"""Limits that protect the service, over HTTP against the real servers: costly queries are
refused with the RFC's errors before any work (CORE-QRY-04), and a search the upstream
refuses as too long is the client's error, not a server failure."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient


def any_of(conditions: list[Any]) -> dict[str, Any]:
    return {"operator": "OR", "conditions": conditions}


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"subject": "x"}
    for _ in range(depth):
        node = {"operator": "NOT", "conditions": [node]}
    return node


HEAVY = {  # each took 20 s to minutes of cache time before the limits
    "5000 subjects": ({"filter": any_of([{"subject": f"s{i}"} for i in range(5_000)])}, 100),
    "100000 conditions": ({"filter": any_of([{"subject": str(i)} for i in range(100_000)])}, 100),
    "2000 inMailbox": (
        {"filter": {"operator": "AND", "conditions": [{"inMailbox": "M1"}] * 2_000}},
        100,
    ),
    "10000 comparators": ({"sort": [{"property": "subject"}] * 10_000}, 10),
    "nested 200 deep": ({"filter": nested(200)}, 10),
    "1 MB text": ({"filter": {"text": "x" * 1_000_000}}, 1000),
}


@pytest.mark.parametrize("case", sorted(HEAVY))
async def test_a_costly_query_is_refused_and_the_next_call_runs_core_qry_04(
    jmap: Jmap, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    args, value = HEAVY[case]
    caplog.set_level(logging.INFO)
    body = await jmap.request(
        [
            ["Email/query", {"accountId": jmap.account_id, **args}, "q"],
            ["Mailbox/get", {"accountId": jmap.account_id, "ids": None}, "m"],
        ]
    )
    (name, error, _), (next_name, _, _) = body["methodResponses"]
    assert name == "error" and next_name == "Mailbox/get"
    assert error["type"] == ("unsupportedSort" if "sort" in args else "unsupportedFilter")
    assert f"is {value}" in error["description"] and "max_" in error["description"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_filter_too_deep_for_json_is_not_json_core_err_02(jmap: Jmap) -> None:
    body = {
        "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
        "methodCalls": [["Email/query", {"accountId": jmap.account_id, "filter": None}, "q"]],
    }
    raw = json.dumps(body).replace('"filter": null', '"filter": ' + _deep_json(100_000))
    resp = await jmap.post(None, raw=raw.encode())
    assert resp.status == 400
    problem = await resp.json()
    assert problem["type"] == "urn:ietf:params:jmap:error:notJSON"


def _deep_json(depth: int) -> str:
    # json.dumps of the nested object would itself recurse too deep: write the text
    return '{"operator": "NOT", "conditions": [' * depth + '{"subject": "x"}' + "]}" * depth


# --- what the upstream refuses as too long ------------------------------------------------


@pytest.fixture
async def roomy_jmap(
    imap_user: Any, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    """A proxy whose own string limit lets a 1 MB search through to the upstream."""
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(
        cfg, limits=dataclasses.replace(cfg.limits, max_filter_string_length=2_000_000)
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        yield client


@pytest.mark.parametrize("key", ["text", "body", "subject"])
async def test_a_search_the_upstream_refuses_as_too_long_is_the_clients_error(
    roomy_jmap: Jmap, imap_oracle: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    jmap = roomy_jmap
    imap_oracle.append("INBOX", None, None, b"Subject: hello\r\n\r\nbody text\r\n")
    caplog.set_level(logging.INFO)
    long = {"text": "x" * 1_000_000} if key != "body" else {"body": "y" * 1_000_000}
    if key == "subject":
        long = {"subject": "z" * 1_000_000, "text": "w" * 1_000_000}
    name, error = await jmap.call("Email/query", {"filter": long})
    assert name == "error", error
    assert error["type"] == "unsupportedFilter"
    assert "too long" in error["description"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # the connection the upstream gave up on is not reused: the next searches work
    for _ in range(3):
        found = await jmap.ok("Email/query", {"filter": {"text": "hello"}})
        assert len(found["ids"]) == 1
