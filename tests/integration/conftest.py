"""The proxy under test, in front of the real Dovecot from ``tests/conftest.py``."""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import json
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jmapc
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient

from devservers.postgres import PostgresServer
from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig
from imapjmap.http.app import make_app
from tests.conftest import SeededUser
from tests.integration.instances import ProxyClient, serve

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
USING = [CORE, MAIL]


@dataclasses.dataclass
class Jmap:
    """A tiny JMAP client: raw HTTP so that every request-level detail can be checked."""

    http: TestClient[Any, Any]
    username: str
    password: str
    account_id: str = ""

    def auth(self, username: str | None = None, password: str | None = None) -> dict[str, str]:
        raw = f"{username or self.username}:{password if password is not None else self.password}"
        return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}

    async def session(self) -> dict[str, Any]:
        resp = await self.http.get("/.well-known/jmap", headers=self.auth())
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        self.account_id = body["primaryAccounts"][MAIL]
        return body

    async def post(
        self, body: Any, *, raw: bytes | None = None, content_type: str = "application/json"
    ) -> Any:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {**self.auth(), "Content-Type": content_type}
        return await self.http.post("/jmap/api/", data=io.BytesIO(data), headers=headers)

    async def request(
        self, calls: list[list[Any]], using: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        if not self.account_id:
            await self.session()
        resp = await self.post({"using": using or USING, "methodCalls": calls, **extra})
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    async def call(self, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if not self.account_id:
            await self.session()
        args = {"accountId": self.account_id, **args}
        body = await self.request([[name, args, "c0"]])
        response_name, response_args, call_id = body["methodResponses"][0]
        assert call_id == "c0"
        return response_name, response_args

    async def ok(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        response_name, response_args = await self.call(name, args)
        assert response_name == name, response_args
        return response_args


def proxy_config(user: Any, tmp_path: Path) -> Config:
    return Config(
        imap=ImapConfig(
            host=user.host, port=user.port, security="none", pool_size=3, command_timeout=30.0
        ),
        server=ServerConfig(listen="127.0.0.1:0", base_url="http://127.0.0.1:8080"),
        cache=CacheConfig(path=str(tmp_path / "cache.sqlite3")),
    )


@pytest.fixture
def proxy_client(request: pytest.FixtureRequest, tmp_path: Path) -> ProxyClient:
    """``async with proxy_client(cfg) as http``: the proxy built from ``cfg``, one
    instance or (``--instances=2``) two that ``http`` alternates between."""
    return functools.partial(serve, request=request, tmp_path=tmp_path)


@pytest.fixture
async def proxy_http(
    imap_user: Any, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[TestClient[Any, Any]]:
    async with proxy_client(proxy_config(imap_user, tmp_path)) as client:
        yield client


@pytest.fixture
async def jmap(proxy_http: TestClient[Any, Any], imap_user: Any) -> Jmap:
    client = Jmap(proxy_http, imap_user.username, imap_user.password)
    await client.session()
    return client


# -- the proxy over https, for clients that speak nothing else (jmapc) --------------------------


@dataclasses.dataclass(frozen=True)
class HttpsProxy:
    host: str  # "127.0.0.1:port", what jmapc wants
    ca_file: str

    def client(self, username: str, password: str) -> jmapc.Client:
        client = jmapc.Client.create_with_password(host=self.host, user=username, password=password)
        client.requests_session.verify = self.ca_file
        client.requests_session.trust_env = False  # no proxy from the environment for loopback
        return client


@pytest.fixture
async def https_proxy(seeded_user: SeededUser, tmp_path: Path) -> AsyncIterator[HttpsProxy]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = ServerConfig(listen=f"127.0.0.1:{port}", base_url=f"https://127.0.0.1:{port}")
    cfg = dataclasses.replace(proxy_config(seeded_user, tmp_path), server=server)
    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, ssl_context=tls).start()
        yield HttpsProxy(f"127.0.0.1:{port}", str(ca_file))
    finally:
        await runner.cleanup()


# -- several instances: their coordinator, on the throw-away PostgreSQL -----------------------


@pytest.fixture
def cluster_url(postgres: PostgresServer) -> str:
    """A fresh database of the throw-away PostgreSQL: the coordinator of one test (advisory
    locks and LISTEN channels are per database)."""
    return postgres.create_database("cluster_" + secrets.token_hex(6))
