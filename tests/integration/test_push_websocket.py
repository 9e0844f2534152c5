"""JMAP over WebSocket (RFC 8887, checklist §8) against the real Dovecot."""

from __future__ import annotations

import asyncio
import imaplib
import json
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import CORE, MAIL, Jmap
from tests.integration.pushkit import (
    current_states,
    external_append,
    listeners,
    wait_for,
    wait_watching,
    watcher_of,
)

pytestmark = pytest.mark.dovecot

WEBSOCKET = "urn:ietf:params:jmap:websocket"


async def _connect(jmap: Jmap) -> aiohttp.ClientWebSocketResponse:
    ws = await jmap.http.ws_connect("/jmap/ws/", protocols=("jmap",), headers=jmap.auth())
    assert ws.protocol == "jmap"  # echoed (RFC 8887 §4.2)
    return ws


async def _receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    body: dict[str, Any] = json.loads(message.data)
    return body


async def _nothing_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> bool:
    try:
        await ws.receive(timeout=seconds)
    except TimeoutError:
        return True
    return False


def _request(request_id: str, calls: list[list[Any]]) -> dict[str, Any]:
    return {"@type": "Request", "id": request_id, "using": [CORE, MAIL], "methodCalls": calls}


async def test_session_advertises_the_websocket_url(jmap: Jmap) -> None:
    session = await jmap.session()
    capability = session["capabilities"][WEBSOCKET]
    url, _, token = capability["url"].partition("?push_token=")  # for browsers
    assert {**capability, "url": url} == {
        "url": "ws://127.0.0.1:8080/jmap/ws/",
        "supportsPush": True,
    }
    assert token


async def test_request_response_round_trip(jmap: Jmap) -> None:
    ws = await _connect(jmap)
    session = await jmap.session()
    await ws.send_json(_request("r1", [["Core/echo", {"hello": True}, "c1"]]))
    response = await _receive(ws)
    assert response == {
        "@type": "Response",
        "requestId": "r1",
        "methodResponses": [["Core/echo", {"hello": True}, "c1"]],
        "sessionState": session["state"],
    }
    # several requests in flight at once, each answered with its own requestId
    for n in range(3):
        args = {"accountId": jmap.account_id, "ids": None}
        await ws.send_json(_request(f"q{n}", [["Mailbox/get", args, "m"]]))
    answers = {(await _receive(ws))["requestId"] for _ in range(3)}
    assert answers == {"q0", "q1", "q2"}
    await ws.close()


async def test_garbage_gets_request_errors_and_the_socket_stays_open(jmap: Jmap) -> None:
    ws = await _connect(jmap)
    await ws.send_str("{not json")
    error = await _receive(ws)
    assert error["@type"] == "RequestError"
    assert error["type"] == "urn:ietf:params:jmap:error:notJSON"
    assert error["status"] == 400 and "requestId" not in error
    await ws.send_json({"@type": "Bogus"})
    assert (await _receive(ws))["type"] == "urn:ietf:params:jmap:error:notRequest"
    await ws.send_json({"@type": "Request", "id": "bad", "methodCalls": []})
    error = await _receive(ws)
    assert error["type"] == "urn:ietf:params:jmap:error:notRequest"
    assert error["requestId"] == "bad"
    await ws.send_json({"@type": "Request", "id": "cap", "using": ["urn:x"], "methodCalls": []})
    assert (await _receive(ws))["type"] == "urn:ietf:params:jmap:error:unknownCapability"
    await ws.send_bytes(b"{}")
    assert (await _receive(ws))["type"] == "urn:ietf:params:jmap:error:notJSON"
    await ws.send_json(_request("ok", [["Core/echo", {}, "c"]]))
    assert (await _receive(ws))["@type"] == "Response"
    await ws.close()


async def test_push_enable_and_disable(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    await current_states(jmap)
    ws = await _connect(jmap)
    await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
    assert await _nothing_within(ws, 0.5)  # no pushState: only later changes are pushed
    await wait_watching(jmap)
    await external_append(imap_oracle, "over the websocket")
    seen: dict[str, str] = {}
    while "Email" not in seen:
        change = await _receive(ws)
        assert change["@type"] == "StateChange"
        assert change["pushState"]
        seen.update(change["changed"][jmap.account_id])
    assert seen["Email"] == (await current_states(jmap))["Email"]
    await ws.send_json({"@type": "WebSocketPushDisable"})
    await wait_for(lambda: watcher_of(jmap) is None, what="the watcher to stop")
    await jmap.ok("Mailbox/set", {"create": {"n": {"name": "Quiet"}}})
    assert await _nothing_within(ws, 1.0)
    await ws.close()


async def test_push_state_catch_up(jmap: Jmap) -> None:
    ws = await _connect(jmap)
    await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": ["Mailbox"]})
    await wait_watching(jmap)
    await jmap.ok("Mailbox/set", {"create": {"a": {"name": "First"}}})
    change = await _receive(ws)
    assert set(change["changed"][jmap.account_id]) == {"Mailbox"}
    push_state = change["pushState"]
    await ws.close()
    await jmap.ok("Mailbox/set", {"create": {"b": {"name": "While away"}}})
    mailbox_state = (await current_states(jmap))["Mailbox"]
    again = await _connect(jmap)
    await again.send_json(
        {"@type": "WebSocketPushEnable", "dataTypes": ["Mailbox"], "pushState": push_state}
    )
    catch_up = await _receive(again, timeout=5)
    assert catch_up["changed"][jmap.account_id] == {"Mailbox": mailbox_state}
    assert catch_up["pushState"] != push_state
    await again.close()


async def test_missing_subprotocol_or_credentials_is_refused(jmap: Jmap) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await jmap.http.ws_connect("/jmap/ws/", headers=jmap.auth())
    assert refused.value.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as unauthenticated:
        await jmap.http.ws_connect("/jmap/ws/", protocols=("jmap",))
    assert unauthenticated.value.status == 401
    resp = await jmap.http.get("/jmap/ws/", headers=jmap.auth())  # not an upgrade
    assert resp.status == 400


async def test_closing_the_socket_drops_its_listener(jmap: Jmap) -> None:
    ws = await _connect(jmap)
    await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
    await wait_for(lambda: listeners(jmap, jmap.account_id) == 1, what="the listener")
    await ws.close()
    await wait_for(lambda: watcher_of(jmap) is None, what="the watcher to stop")
    assert listeners(jmap, jmap.account_id) == 0
    await asyncio.sleep(0)
