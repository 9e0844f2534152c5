"""The nginx recipe in ``deploy/nginx/imapjmap.conf``, run as written in front of the proxy.

Debian's nginx serves the recipe with only its addresses and certificate paths replaced
(a free loopback port instead of 443, a certificate from a private CA): then a third-party
client (jmapc) works through it, an EventSource event and a WebSocket push arrive through it,
an upload the size of a real attachment passes, plain http only redirects, and the access log
keeps no push token.  A recipe that drops the Upgrade header or keeps nginx's 1 MB body limit
fails here.  (The event stream would pass even a buffering nginx: the proxy sends it with
``X-Accel-Buffering: no``.)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import imaplib
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jmapc
import pytest
from aiohttp import web
from jmapc.methods import EmailQuery, EmailQueryResponse, MailboxGet, MailboxGetResponse

from devservers._host import free_port
from devservers.nginx import Front, recipe_front
from imapjmap.config import ServerConfig
from imapjmap.http.app import make_app
from tests.conftest import SeededUser
from tests.integration.conftest import MAIL, USING, proxy_config
from tests.integration.pushkit import EventReader, message

pytestmark = pytest.mark.dovecot


@pytest.fixture
async def front(seeded_user: SeededUser, tmp_path: Path) -> AsyncIterator[Front]:
    proxy_port, https_port = free_port(), free_port()
    server = ServerConfig(
        listen=f"127.0.0.1:{proxy_port}",
        base_url=f"https://127.0.0.1:{https_port}",
        trusted_proxies=("127.0.0.1",),
    )
    cfg = dataclasses.replace(proxy_config(seeded_user, tmp_path), server=server)
    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", proxy_port).start()
        with recipe_front(tmp_path, [proxy_port], https_port) as front:
            yield front
    finally:
        await runner.cleanup()


def _jmapc(front: Front, user: SeededUser) -> jmapc.Client:
    client = jmapc.Client.create_with_password(
        host=front.host, user=user.username, password=user.password
    )
    client.requests_session.verify = front.ca_file
    client.requests_session.trust_env = False
    return client


def _auth(user: SeededUser) -> dict[str, str]:
    raw = f"{user.username}:{user.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def _session(http: aiohttp.ClientSession, front: Front) -> dict[str, Any]:
    async with http.get(f"https://{front.host}/.well-known/jmap", ssl=front.tls()) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _append(user: SeededUser, subject: str) -> None:
    """APPEND by another IMAP client: the proxy learns of it only from the upstream."""

    def append() -> None:
        client: imaplib.IMAP4 = user.connect()
        try:
            typ, data = client.append("INBOX", None, None, message(subject))
            assert typ == "OK", data
        finally:
            client.logout()

    await asyncio.to_thread(append)


async def test_a_third_party_client_works_through_the_recipe(
    front: Front, seeded_user: SeededUser
) -> None:
    def talk() -> tuple[Any, Any, Any]:
        client = _jmapc(front, seeded_user)
        mailboxes = client.request(MailboxGet(ids=None), raise_errors=True, single_response=True)
        emails = client.request(EmailQuery(limit=5), raise_errors=True, single_response=True)
        return client.jmap_session, mailboxes, emails

    session, mailboxes, emails = await asyncio.to_thread(talk)
    # the session names the public address, so every URL a client follows goes through nginx
    assert session.api_url == f"https://{front.host}/jmap/api/"
    assert isinstance(mailboxes, MailboxGetResponse) and mailboxes.data
    assert isinstance(emails, EmailQueryResponse) and isinstance(emails.ids, list)
    assert len(emails.ids) == 5


async def test_an_event_source_event_passes_the_recipe_at_once(
    front: Front, seeded_user: SeededUser
) -> None:
    """PUSH-ES: a state change made upstream reaches a client listening through nginx."""
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        session = await _session(http, front)
        url = session["eventSourceUrl"].format(types="*", closeafter="no", ping="0")
        assert url.startswith(f"https://{front.host}/")
        async with http.get(url, ssl=front.tls(), timeout=aiohttp.ClientTimeout(total=60)) as resp:
            assert resp.status == 200, await resp.text()
            events = EventReader(resp)
            first = await events.next(timeout=10)  # the current state, sent on connect
            account = session["primaryAccounts"][MAIL]
            before = first.data["changed"][account]["Email"]
            await _append(seeded_user, "through nginx")
            # each event is written by the proxy as soon as the watcher sees the APPEND;
            # a buffering front would hold it back until its buffer filled
            while True:
                event = await events.next(timeout=10)
                if event.data["changed"].get(account, {}).get("Email", before) != before:
                    break


async def test_a_websocket_answers_and_pushes_through_the_recipe(
    front: Front, seeded_user: SeededUser
) -> None:
    """WS-01..: the Upgrade passes nginx; requests are answered and a push arrives."""
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        session = await _session(http, front)
        ws_url = session["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
        assert ws_url.startswith(f"wss://{front.host}/jmap/ws/")
        account = session["primaryAccounts"][MAIL]
        async with http.ws_connect(ws_url, protocols=("jmap",), ssl=front.tls()) as ws:

            async def receive() -> dict[str, Any]:
                got = await ws.receive(timeout=10)
                assert got.type == aiohttp.WSMsgType.TEXT, got
                body: dict[str, Any] = json.loads(got.data)
                return body

            await ws.send_json(
                {
                    "@type": "Request",
                    "id": "r1",
                    "using": USING,
                    "methodCalls": [["Email/get", {"accountId": account, "ids": []}, "c1"]],
                }
            )
            answer = await receive()
            assert answer["@type"] == "Response" and answer["requestId"] == "r1"
            before = answer["methodResponses"][0][1]["state"]
            await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
            await _append(seeded_user, "through nginx over a websocket")
            while True:
                pushed = await receive()
                if pushed.get("@type") != "StateChange":
                    continue
                if pushed["changed"].get(account, {}).get("Email", before) != before:
                    break
    # nginx logs a WebSocket when its connection ends, a moment after the client closes
    logged = await _logged(front, "/jmap/ws/")
    # the browser push token in the URL is a credential: the recipe's log leaves it out
    assert "/jmap/ws/" in logged and "push_token" not in logged


async def _logged(front: Front, expected: str, within: float = 5.0) -> str:
    """The access log once it holds `expected`, or as it is after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        logged = front.access_log.read_text()
        if expected in logged or asyncio.get_running_loop().time() > deadline:
            return logged
        await asyncio.sleep(0.05)


async def test_an_attachment_sized_upload_passes_the_recipe(
    front: Front, seeded_user: SeededUser
) -> None:
    """BLOB upload of 5 MB: more than nginx's default 1 MB body limit."""
    blob = os.urandom(5_000_000)
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        session = await _session(http, front)
        account = session["primaryAccounts"][MAIL]
        url = session["uploadUrl"].format(accountId=account)
        async with http.post(
            url,
            data=io.BytesIO(blob),
            headers={"Content-Type": "application/octet-stream"},
            ssl=front.tls(),
        ) as resp:
            assert resp.status == 201, await resp.text()
            uploaded = await resp.json()
        assert uploaded["size"] == len(blob)
        download = session["downloadUrl"].format(
            accountId=account, blobId=uploaded["blobId"], name="x.bin", type="application/x"
        )
        async with http.get(download, ssl=front.tls()) as resp:
            assert resp.status == 200
            assert await resp.read() == blob


async def test_plain_http_is_only_a_redirect(front: Front, seeded_user: SeededUser) -> None:
    """Credentials never travel unencrypted: the recipe's port 80 answers with a redirect
    to https and never reaches the proxy."""
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        url = f"http://127.0.0.1:{front.http_port}/jmap/api/"
        async with http.post(url, json={}, allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "https://127.0.0.1/jmap/api/"
    assert "emerg" not in front.error_log.read_text()


async def test_metrics_stay_off_the_public_site(front: Front, seeded_user: SeededUser) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"https://{front.host}/metrics"
        async with http.get(url, ssl=front.tls()) as resp:
            assert resp.status == 403
