"""What a webmail in a browser needs from the HTTP layer, against the real Dovecot: CORS
as browsers check it (preflights, exposed headers, credentialed origins), and push streams
opened with the session URLs' push tokens, as a browser's EventSource and WebSocket do
without an Authorization header."""

from __future__ import annotations

import dataclasses
import imaplib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imapjmap.http import push_token, views
from imapjmap.http.app import make_app
from imapjmap.jmap.wire import WEBSOCKET
from tests.integration.conftest import CORE, Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of
from tests.integration.pushkit import EventReader, external_append, wait_watching

# the HTTP layer is the same in front of every upstream
pytestmark = pytest.mark.dovecot

WEBMAIL = "http://127.0.0.1:8081"  # a webmail's origin, other than the proxy's


@pytest.fixture
async def credentialed(
    imap_user: Any, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    """The proxy with ``server.cors_origins = [WEBMAIL]``."""
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, cors_origins=(WEBMAIL,)))
    async with proxy_client(cfg) as http:
        yield Jmap(http, imap_user.username, imap_user.password)


def exposed(resp: Any) -> set[str]:
    return {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}


async def test_preflight_allows_any_requested_header(jmap: Jmap) -> None:
    """A webmail's fetch wrapper adds X-Requested-With: the preflight must allow it."""
    resp = await jmap.http.options(
        "/jmap/api/",
        headers={
            "Origin": WEBMAIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-requested-with",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-requested-with"} <= allowed
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_scripts_can_read_www_authenticate_of_a_401(jmap: Jmap) -> None:
    resp = await jmap.http.get("/.well-known/jmap", headers={"Origin": WEBMAIL})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert {"www-authenticate", "retry-after", "location"} <= exposed(resp)


async def test_scripts_can_read_content_disposition_of_a_download(jmap: Jmap) -> None:
    upload = await jmap.http.post(
        f"/jmap/upload/{jmap.account_id}/",
        data=b"hello",
        headers={**jmap.auth(), "Content-Type": "text/plain"},
    )
    assert upload.status == 201, await upload.text()
    blob_id = (await upload.json())["blobId"]
    resp = await jmap.http.get(
        f"/jmap/download/{jmap.account_id}/{blob_id}/a.txt?type=text/plain",
        headers={**jmap.auth(), "Origin": WEBMAIL},
    )
    assert resp.status == 200
    assert "content-disposition" in exposed(resp)


async def test_without_a_list_no_origin_gets_credentials(jmap: Jmap) -> None:
    resp = await jmap.http.get("/.well-known/jmap", headers={**jmap.auth(), "Origin": WEBMAIL})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_listed_origin_gets_credentialed_cors(credentialed: Jmap) -> None:
    http = credentialed.http
    preflight = await http.options(
        "/jmap/api/",
        headers={
            "Origin": WEBMAIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == WEBMAIL
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in preflight.headers["Vary"]
    resp = await http.post(
        "/jmap/api/",
        json={"using": [CORE], "methodCalls": [["Core/echo", {}, "0"]]},
        headers={**credentialed.auth(), "Origin": WEBMAIL},
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == WEBMAIL
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in resp.headers["Vary"]
    other = await http.get("/.well-known/jmap", headers={"Origin": "http://127.0.0.1:9"})
    assert other.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in other.headers
    assert "Origin" in other.headers["Vary"]


async def test_event_stream_carries_the_cors_headers(credentialed: Jmap) -> None:
    resp = await credentialed.http.get(
        "/jmap/eventsource/?types=*&closeafter=state&ping=0",
        headers={**credentialed.auth(), "Origin": WEBMAIL},
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == WEBMAIL
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    await resp.read()


# -- push tokens: EventSource and WebSocket without Authorization -----------------------------


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _token_of(url: str) -> str:
    [token] = parse_qs(urlsplit(url).query)["push_token"]
    return token


async def _event_url(jmap: Jmap, **variables: str) -> str:
    template = (await jmap.session())["eventSourceUrl"]
    values = {"types": "*", "closeafter": "no", "ping": "0", **variables}
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return _path_and_query(template)


async def _ws_url(jmap: Jmap) -> str:
    return _path_and_query((await jmap.session())["capabilities"][WEBSOCKET]["url"])


async def test_session_urls_carry_a_fresh_push_token_and_a_stable_state(jmap: Jmap) -> None:
    first, second = await jmap.session(), await jmap.session()
    for session in (first, second):
        assert "push_token=" in session["eventSourceUrl"]
        assert "push_token=" in session["capabilities"][WEBSOCKET]["url"]
    assert _token_of(first["eventSourceUrl"]) != _token_of(second["eventSourceUrl"])
    # rotating the token is no change of the session: clients need not refetch it
    assert first["state"] == second["state"]
    calls = [["Core/echo", {}, "0"]]
    assert (await jmap.request(calls, using=[CORE]))["sessionState"] == first["state"]


async def test_an_event_source_with_only_the_token_gets_the_stream_core_push_03(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """What a browser's native EventSource does: GET the URL, no Authorization header."""
    url = await _event_url(jmap)
    resp = await jmap.http.get(url, headers={"Origin": WEBMAIL, "Accept": "text/event-stream"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    events = EventReader(resp)
    first = await events.next()
    assert first.name == "state"
    assert list(first.data["changed"]) == [jmap.account_id]
    await wait_watching(jmap)
    await external_append(imap_oracle, "pushed to a browser")
    while True:  # the APPEND is pushed: some event names Email
        event = await events.next(timeout=10)
        if "Email" in event.data["changed"][jmap.account_id]:
            break
    resp.close()


async def test_a_token_opens_nothing_but_its_stream(jmap: Jmap, imap_backend: Any) -> None:
    url = await _event_url(jmap, closeafter="state")
    token = _token_of(url)
    query = {"push_token": token}
    # not the API, the session, a download, an upload, nor a WebSocket
    api = await jmap.http.post(
        "/jmap/api/", params=query, json={"using": [CORE], "methodCalls": []}
    )
    assert api.status == 401
    for path in ("/.well-known/jmap", f"/jmap/download/{jmap.account_id}/Gx/a.txt"):
        resp = await jmap.http.get(path, params=query)
        assert resp.status == 401, path
    upload = await jmap.http.post(f"/jmap/upload/{jmap.account_id}/", params=query, data=b"x")
    assert upload.status == 401
    ws = await jmap.http.get("/jmap/ws/", params=query)
    assert ws.status == 401
    # as a Bearer or Basic credential it is nothing either
    bearer = await jmap.http.get("/.well-known/jmap", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status == 401
    # another account's stream: its id put in the token
    other_name, other_password = f"bob-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    imap_backend.add_user(other_name, other_password)
    bob = Jmap(jmap.http, other_name, other_password)
    await bob.session()
    version, _, expires, nonce, mac = token.split(".")
    stolen = url.replace(token, f"{version}.{bob.account_id}.{expires}.{nonce}.{mac}")
    assert (await jmap.http.get(stolen)).status == 401
    # and the token itself still works for its own stream
    own = await jmap.http.get(url)
    assert own.status == 200
    await own.read()


async def test_forged_expired_and_orphaned_tokens_are_401(
    imap_user: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy_client: ProxyClient
) -> None:
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(cfg, auth=dataclasses.replace(cfg.auth, push_token_seconds=60.0))
    async with proxy_client(cfg) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        url = await _event_url(jmap, closeafter="state")
        token = _token_of(url)
        head, _, mac = token.rpartition(".")
        forged = url.replace(token, f"{head}.{mac[::-1]}")
        resp = await http.get(forged)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
        assert "fetch the session again" in (await resp.json())["detail"]
        # a minute later the same URL is refused (the clock moved, not the test)
        later = time.time() + 61
        monkeypatch.setattr(push_token.time, "time", lambda: later)
        assert (await http.get(url)).status == 401
        monkeypatch.undo()
        assert (await http.get(url)).status == 200
        # the upstream refused the login's password since (changed): the token dies with it,
        # on every instance that holds the login (one at least) and on those it vouches to
        pools = [app[views.SERVICES].pools.get(jmap.account_id) for app in apps_of(http)]
        assert any(pools)
        for pool in pools:
            if pool is not None:
                pool.refused = True
        for _ in pools:
            assert (await http.get(url)).status == 401


async def test_a_websocket_with_only_the_token_pushes_but_runs_no_requests(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    ws = await jmap.http.ws_connect(await _ws_url(jmap), protocols=("jmap",))
    assert ws.protocol == "jmap"
    await ws.send_json(
        {"@type": "Request", "id": "r1", "using": [CORE], "methodCalls": [["Core/echo", {}, "0"]]}
    )
    refused = await ws.receive_json(timeout=10)
    assert refused["@type"] == "RequestError" and refused["requestId"] == "r1"
    assert refused["status"] == 403
    await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
    await wait_watching(jmap)
    await external_append(imap_oracle, "pushed over a browser websocket")
    change = await ws.receive_json(timeout=10)
    assert change["@type"] == "StateChange"
    assert list(change["changed"]) == [jmap.account_id]
    await ws.close()
    # the EventSource's token does not open a WebSocket, nor the other way round
    event_token = _token_of(await _event_url(jmap))
    resp = await jmap.http.get("/jmap/ws/", params={"push_token": event_token})
    assert resp.status == 401
    ws_token = _token_of(await _ws_url(jmap))
    resp = await jmap.http.get("/jmap/eventsource/", params={"push_token": ws_token})
    assert resp.status == 401


async def test_push_tokens_never_reach_a_log(jmap: Jmap, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    session = await jmap.session()
    tokens = [
        _token_of(session["eventSourceUrl"]),
        _token_of(session["capabilities"][WEBSOCKET]["url"]),
    ]
    url = await _event_url(jmap, closeafter="state")
    tokens.append(_token_of(url))
    assert (await jmap.http.get(url)).status == 200
    assert (await jmap.http.get(url.replace(tokens[-1], tokens[-1][:-2] + "xx"))).status == 401
    ws = await jmap.http.ws_connect(await _ws_url(jmap), protocols=("jmap",))
    await ws.close()
    access = [r for r in caplog.records if r.name == "imapjmap.access"]
    assert any("/jmap/eventsource/" in r.getMessage() for r in access)
    for record in caplog.records:
        message = record.getMessage()
        assert not any(token in message for token in tokens), message
        assert not any(token.rpartition(".")[2] in message for token in tokens), message


async def test_instances_sharing_a_key_file_take_each_others_tokens(
    imap_user: Any, tmp_path: Path
) -> None:
    """Behind a load balancer the EventSource may reach another instance than the session
    fetch: with one auth.push_token_key_file it opens there, once that instance holds the
    login too; an instance with a key of its own refuses it."""
    key = tmp_path / "push.key"
    key.write_text(secrets.token_urlsafe(48))

    def instance(name: str, key_file: Path | None) -> TestClient[Any, Any]:
        cfg = proxy_config(imap_user, tmp_path / name)
        auth = dataclasses.replace(
            cfg.auth, push_token_key_file=str(key_file) if key_file else None
        )
        return TestClient(TestServer(make_app(dataclasses.replace(cfg, auth=auth))))

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    async with instance("a", key) as a, instance("b", key) as b, instance("c", None) as c:
        url = await _event_url(Jmap(a, imap_user.username, imap_user.password), closeafter="state")
        assert (await b.get(url)).status == 401  # b does not hold the login yet
        await Jmap(b, imap_user.username, imap_user.password).session()
        await Jmap(c, imap_user.username, imap_user.password).session()
        resp = await b.get(url)
        assert resp.status == 200
        await resp.read()
        assert (await c.get(url)).status == 401
