"""What a webmail in a browser needs from the HTTP layer, against the real Dovecot: CORS
as browsers check it (preflights, exposed headers, credentialed origins)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imapjmap.http.app import make_app
from tests.integration.conftest import CORE, Jmap, proxy_config

# the HTTP layer is the same in front of every upstream
pytestmark = pytest.mark.dovecot

WEBMAIL = "http://127.0.0.1:8081"  # a webmail's origin, other than the proxy's


@pytest.fixture
async def credentialed(imap_user: Any, tmp_path: Path) -> AsyncIterator[Jmap]:
    """The proxy with ``server.cors_origins = [WEBMAIL]``."""
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, cors_origins=(WEBMAIL,)))
    async with TestClient(TestServer(make_app(cfg))) as http:
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
