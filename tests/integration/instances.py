"""The proxy under test as one instance, or as two that the client alternates between.

With ``--instances=2`` (or ``IMAPJMAP_TEST_INSTANCES=2``, only with
``--cache-backend=postgresql``) every proxy a test builds through :func:`proxy_client` is
two apps from one config: one cache (the same path opens the same PostgreSQL schema within a
test, tests/conftest.py), one coordinator (``[cluster] url``, a fresh database of the test
PostgreSQL) and one push token key.  The test gets one :class:`Alternating` client that sends
each request to the other app in turn, as a round-robin load balancer would: any request on
any instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from yarl import URL

from imapjmap.config import ClusterConfig, Config
from imapjmap.http.app import make_app


class ProxyClient(Protocol):
    """:func:`serve` with the test's ``request`` and ``tmp_path`` given (the fixture)."""

    def __call__(
        self, cfg: Config, *, count: int | None = None, server: type[TestServer] = ...
    ) -> contextlib.AbstractAsyncContextManager[TestClient[Any, Any]]: ...


class Alternating(TestClient[Any, Any]):
    """A TestClient over several servers: each request (and each URL made for one) goes to
    the next server in turn.  One cookie jar for all, as behind a load balancer.

    ``app`` and ``server`` are the first instance's; ``served`` counts the responses each
    app prepared, from inside the apps, so that a test can see the alternation happen."""

    def __init__(self, servers: list[TestServer]) -> None:
        super().__init__(servers[0])
        self.servers = servers
        self.served = [0] * len(servers)
        self._turn = 0
        for number, server in enumerate(servers):
            server.app.on_response_prepare.append(self._counter(number))

    def _counter(self, number: int) -> Callable[[web.Request, web.StreamResponse], Any]:
        async def count(request: web.Request, response: web.StreamResponse) -> None:
            self.served[number] += 1

        return count

    def make_url(self, path: Any) -> URL:
        server: BaseTestServer = self.servers[self._turn]
        self._turn = (self._turn + 1) % len(self.servers)
        return server.make_url(path)

    async def start_server(self) -> None:
        # one after the other: the first creates the cache, as a rolling deployment would
        for server in self.servers:
            await server.start_server()

    async def close(self) -> None:
        await super().close()
        for server in self.servers[1:]:
            await server.close()


class ProxyServer(TestServer):
    """A TestServer that serves the app as ``imapjmap serve`` does: without aiohttp's own
    access log, whose lines hold the query strings (push tokens) that the proxy's own
    access line (``imapjmap.access``) leaves out."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return await super()._make_runner(access_log=None, **kwargs)


def instances_option(config: pytest.Config) -> int:
    count: int = config.getoption("--instances")
    return count


def cluster_config(cfg: Config, cluster_url: str, key_file: Path) -> Config:
    """``cfg`` as one of several instances: coordinated through ``cluster_url``, signing
    push tokens with the key all instances share."""
    if not key_file.exists():
        key_file.write_bytes(secrets.token_bytes(32))
    return dataclasses.replace(
        cfg,
        cluster=ClusterConfig(url=cluster_url),
        auth=dataclasses.replace(cfg.auth, push_token_key_file=str(key_file)),
    )


@contextlib.asynccontextmanager
async def serve(
    cfg: Config,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    count: int | None = None,
    server: type[TestServer] = ProxyServer,
) -> AsyncIterator[TestClient[Any, Any]]:
    """The test client of the proxy built from ``cfg``: ``count`` instances, by default
    as many as ``--instances`` says (two or more alternated), each served by a
    ``server`` (a subclass for another runner)."""
    count = count or instances_option(request.config)
    if count == 1:
        async with TestClient(server(make_app(cfg))) as client:
            yield client
        return
    cluster_url: str = request.getfixturevalue("cluster_url")
    cfg = cluster_config(cfg, cluster_url, tmp_path / "push-token.key")
    alternating = Alternating([server(make_app(cfg)) for _ in range(count)])
    try:
        await alternating.start_server()
        yield alternating
    finally:
        await alternating.close()


def apps_of(http: TestClient[Any, Any]) -> list[web.Application]:
    """Every app behind a test client: for a setting each instance must have."""
    servers = http.servers if isinstance(http, Alternating) else [http.server]
    return [server.app for server in servers if isinstance(server, TestServer)]
