"""``/healthz`` and ``/readyz`` against the real IMAP server, a dead one and a hung one."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from imapjmap import cli
from imapjmap.config import Config, to_toml
from imapjmap.http import views
from imapjmap.http.app import make_app
from tests.conftest import ImapUser
from tests.integration.conftest import proxy_config
from tests.integration.instances import ProxyClient, apps_of
from tests.integration.relay import Relay


def _with_imap(cfg: Config, **changes: Any) -> Config:
    return dataclasses.replace(cfg, imap=dataclasses.replace(cfg.imap, **changes))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once it is closed


async def test_healthz_answers_without_credentials(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    async with proxy_client(proxy_config(imap_user, tmp_path)) as http:
        resp = await http.get("/healthz")
        assert resp.status == 200
        assert await resp.text() == "ok\n"
        assert resp.headers["Cache-Control"] == "no-store"


async def test_readyz_is_ready_when_the_cache_and_the_imap_server_answer(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imapjmap")
    async with proxy_client(proxy_config(imap_user, tmp_path)) as http:
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 200, body
        assert body["status"] == "ready"
        assert body["checks"]["cache"]["ok"] and body["checks"]["imap"]["ok"]
        assert body["checks"]["imap"]["detail"] == "ok"
        # no user name, no host: nothing an anonymous caller should learn
        assert imap_user.username not in await resp.text()
    # a monitor's polling does not fill the access log
    assert not [r for r in caplog.records if "/readyz" in r.getMessage()]


async def test_readyz_says_which_upstream_is_down(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    cfg = _with_imap(proxy_config(imap_user, tmp_path), port=_closed_port(), connect_timeout=2.0)
    async with proxy_client(cfg) as http:
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["status"] == "not ready"
        assert body["checks"]["cache"]["ok"]
        imap = body["checks"]["imap"]
        assert not imap["ok"] and "cannot connect" in imap["detail"]
        # /healthz still says the process serves: a dead upstream is no reason to restart
        assert (await http.get("/healthz")).status == 200


async def test_readyz_gives_up_on_a_hung_imap_server(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    async with Relay(imap_user.host, imap_user.port) as relay:
        relay.stall()  # the server's greeting never arrives
        cfg = _with_imap(proxy_config(imap_user, tmp_path), port=relay.port, connect_timeout=1.0)
        async with proxy_client(cfg) as http:
            resp = await http.get("/readyz")
            body = await resp.json()
            assert resp.status == 503
            assert not body["checks"]["imap"]["ok"]
            assert body["checks"]["imap"]["ms"] < 5_000


async def test_readyz_reuses_the_upstream_answer_for_a_few_seconds(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    async with Relay(imap_user.host, imap_user.port) as relay:
        cfg = _with_imap(proxy_config(imap_user, tmp_path), port=relay.port)
        async with proxy_client(cfg) as http:
            for _ in range(5):
                assert (await http.get("/readyz")).status == 200
            assert relay.accepted == len(apps_of(http))  # once per instance


async def test_readyz_fails_when_the_cache_cannot_be_read(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    async with proxy_client(proxy_config(imap_user, tmp_path)) as http:
        for app in apps_of(http):
            await app[views.SERVICES].store.aclose()
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert not body["checks"]["cache"]["ok"] and body["checks"]["imap"]["ok"]
        assert "closed" in body["checks"]["cache"]["detail"]


@asynccontextmanager
async def listening(cfg: Config, tmp_path: Path) -> AsyncIterator[str]:
    """The proxy served on a real port, as ``imapjmap serve`` would; yields its config file."""
    port = _closed_port()
    server = dataclasses.replace(cfg.server, listen=f"127.0.0.1:{port}")
    cfg = dataclasses.replace(cfg, server=server)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield str(path)
    finally:
        await runner.cleanup()


async def test_the_health_command_asks_the_configured_address(
    imap_user: ImapUser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the Dockerfile's HEALTHCHECK runs: exit 0 while healthy, 1 otherwise."""
    down = _with_imap(proxy_config(imap_user, tmp_path), port=_closed_port(), connect_timeout=2.0)
    async with listening(down, tmp_path) as config:
        assert await asyncio.to_thread(cli.main, ["health", "--config", config]) == 0
        assert "/healthz 200: ok" in capsys.readouterr().out
        ready = await asyncio.to_thread(cli.main, ["health", "--config", config, "--ready"])
        assert ready == 1
        assert '"not ready"' in capsys.readouterr().out
    # nothing listens any more
    assert await asyncio.to_thread(cli.main, ["health", "--config", config]) == 1
    assert "/healthz at 127.0.0.1:" in capsys.readouterr().err
