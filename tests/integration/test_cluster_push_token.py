"""A browser's push stream on an instance that never served the user (CORE-PUSH-01, CORE-PUSH-03).

Behind a round-robin balancer a browser fetches the session from one instance and its
EventSource or WebSocket reaches another, with the push token of the session's URL and no
credentials.  That instance holds no login of the account: the instances that do vouch for
the token (``imapjmap.http.push_token`` Rule 6), and the stream gets its states from the
cache and the cluster, its changes from the watcher on an instance that holds the login.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imapjmap.http.push_token import PushTokens, signing_key
from tests.conftest import ImapUser
from tests.integration.clusterkit import Instance, instances
from tests.integration.conftest import USING
from tests.integration.pushkit import EventReader, external_append

pytestmark = pytest.mark.dovecot

WEBSOCKET = "urn:ietf:params:jmap:websocket"


def _basic(user: ImapUser) -> dict[str, str]:
    raw = f"{user.username}:{user.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def _session(http: aiohttp.ClientSession, user: ImapUser, it: Instance) -> dict[str, Any]:
    async with http.get(f"{it.base_url}/.well-known/jmap", headers=_basic(user)) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def _token(url: str) -> str:
    found = re.search(r"[?&]push_token=([^&]+)", url)
    assert found is not None, url
    return found.group(1)


def _eventsource_url(it: Instance, token: str) -> str:
    return f"{it.base_url}/jmap/eventsource/?types=*&closeafter=no&ping=0&push_token={token}"


async def _write(
    http: aiohttp.ClientSession, user: ImapUser, it: Instance, account: str, name: str
) -> None:
    """A mailbox created through ``it``."""
    calls = [["Mailbox/set", {"accountId": account, "create": {"m": {"name": name}}}, "c"]]
    sent = json.dumps({"using": USING, "methodCalls": calls})
    headers = {**_basic(user), "Content-Type": "application/json"}
    async with http.post(f"{it.base_url}/jmap/api/", data=sent, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        [(_, result, _)] = (await resp.json())["methodResponses"]
        assert "m" in result["created"], result


async def _changed(events: EventReader, account: str, data_type: str, timeout: float) -> float:
    """Seconds until a StateChange names ``data_type`` of ``account``."""
    started = time.monotonic()
    while (left := timeout - (time.monotonic() - started)) > 0:
        try:
            event = await events.next(timeout=left)
        except TimeoutError:
            break
        if data_type in event.data.get("changed", {}).get(account, {}):
            return time.monotonic() - started
    pytest.fail(f"no {data_type} change within {timeout} s")


async def _quiet(events: EventReader) -> None:
    while not await events.none_within(0.3):
        pass


async def test_an_eventsource_token_from_one_instance_opens_on_another_core_push_03(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """The session's EventSource URL, signed on A, opens on B, which never served the
    user: 200, and within 1 s a change written through A and one another IMAP client made
    (heard by the watcher on A, the instance holding the login)."""
    async with (
        instances(imap_user, tmp_path, cluster_url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        session = await _session(http, imap_user, a)
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        token = _token(session["eventSourceUrl"])
        resp = await http.get(_eventsource_url(b, token))
        assert resp.status == 200, await resp.text()
        events = EventReader(resp)
        first = (await events.next()).data["changed"][account]
        assert {"Mailbox", "Email"} <= set(first)
        assert "logged in" not in b.log()  # no IMAP login of the user on B
        assert await a.wait_log("push: watching account", 5)  # B's listener needs a watcher

        await _write(http, imap_user, a, account, "Made on A")
        assert await _changed(events, account, "Mailbox", 1.0) < 1.0

        await _quiet(events)
        await external_append(imap_oracle, "seen by the watcher on A")
        assert await _changed(events, account, "Email", 1.0) < 1.0
        assert "logged in" not in b.log()
        resp.close()


async def test_a_websocket_token_from_one_instance_pushes_on_another_core_push_01(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """The WebSocket capability's URL, signed on A, opens a pushing WebSocket on B (RFC
    8887 §4.3.5); a request over it is refused, as over any token's WebSocket."""
    async with (
        instances(imap_user, tmp_path, cluster_url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        session = await _session(http, imap_user, a)
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        token = _token(session["capabilities"][WEBSOCKET]["url"])
        ws = await http.ws_connect(f"{b.base_url}/jmap/ws/?push_token={token}", protocols=("jmap",))
        await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
        assert await a.wait_log("push: watching account", 5)

        async def change_of(data_type: str) -> float:
            started = time.monotonic()
            async with asyncio.timeout(1.0):
                while True:
                    body = await ws.receive_json()
                    if data_type in body.get("changed", {}).get(account, {}):
                        return time.monotonic() - started

        await _write(http, imap_user, a, account, "Made on A")
        assert await change_of("Mailbox") < 1.0
        await asyncio.sleep(0.3)
        await external_append(imap_oracle, "seen by the watcher on A")
        assert await change_of("Email") < 1.0

        await ws.send_json({"@type": "Request", "id": "r", "using": USING, "methodCalls": []})
        async with asyncio.timeout(5):
            while (body := await ws.receive_json()).get("@type") == "StateChange":
                pass
        assert body["status"] == 403, body
        assert "logged in" not in b.log()
        await ws.close()


async def test_a_token_no_holder_vouches_for_is_refused_on_the_other_instance(
    imap_user: ImapUser, tmp_path: Path, cluster_url: str
) -> None:
    """On B, without the login: the session's token opens the stream, but one signed with
    the shared key over another password (as after a password change: the login on A holds
    the new one), one of another account, an expired one, and an EventSource token on the
    WebSocket are 401, none a 500."""
    async with (
        instances(imap_user, tmp_path, cluster_url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        session = await _session(http, imap_user, a)
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        good = _token(session["eventSourceUrl"])
        async with http.get(_eventsource_url(b, good)) as resp:
            assert resp.status == 200, await resp.text()
            await EventReader(resp).next()

        key = signing_key(str(tmp_path / "push-token.key"))
        tokens = PushTokens(key, 3600)
        expired = PushTokens(key, -1).issue("eventsource", account, imap_user.password)
        refused = {
            "another password": tokens.issue("eventsource", account, imap_user.password + "x"),
            "another account": tokens.issue("eventsource", "Aanother", imap_user.password),
            "expired": expired,
            "forged": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        }
        for what, token in refused.items():
            async with http.get(_eventsource_url(b, token)) as resp:
                assert resp.status == 401, (what, resp.status, await resp.text())
                assert "WWW-Authenticate" in resp.headers, what
        with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
            await http.ws_connect(f"{b.base_url}/jmap/ws/?push_token={good}", protocols=("jmap",))
        assert refusal.value.status == 401
        assert "logged in" not in b.log()


async def test_the_watcher_stays_where_the_login_is_while_another_instance_listens(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """A's own EventSource leaves while B's token stream stays: A keeps watching (B has no
    login to watch with), and another IMAP client's change still reaches B within 1 s."""
    async with (
        instances(imap_user, tmp_path, cluster_url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        session = await _session(http, imap_user, a)
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        url = f"{a.base_url}/jmap/eventsource/?types=*&closeafter=no&ping=0"
        own = await http.get(url, headers=_basic(imap_user))
        assert own.status == 200, await own.text()
        await EventReader(own).next()
        assert await a.wait_log("push: watching account", 5)
        resp = await http.get(_eventsource_url(b, _token(session["eventSourceUrl"])))
        assert resp.status == 200, await resp.text()
        events = EventReader(resp)
        await events.next()
        own.close()
        await asyncio.sleep(1.0)  # A has seen its listener go
        assert "push: stopped watching" not in a.log()

        await external_append(imap_oracle, "seen by the watcher on A")
        assert await _changed(events, account, "Email", 1.0) < 1.0
        resp.close()
