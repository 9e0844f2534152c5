"""``imapjmap serve`` as a process, in front of the real Dovecot through a relay that can
stall: SIGTERM ends it within seconds whatever runs, and a request whose client went away
is cancelled, without a server error in the log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imapjmap.config import CacheConfig, Config, ImapConfig, LimitsConfig, ServerConfig
from tests.conftest import ImapUser, SeededUser
from tests.integration.clusterkit import spawn_serve
from tests.integration.conftest import USING
from tests.integration.relay import Relay

pytestmark = pytest.mark.dovecot

START_TIMEOUT = 60.0  # a deadline: at a load of 20 on two cores a start took over 20 s
STOP_LIMIT = 5.0  # seconds from SIGTERM to exit, whatever runs


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    process: asyncio.subprocess.Process
    base_url: str
    log_path: Path
    cache_path: Path
    user: ImapUser

    @property
    def auth(self) -> dict[str, str]:
        raw = f"{self.user.username}:{self.user.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            await asyncio.sleep(0.05)
        return False

    def api_body(self, account_id: str, args: dict[str, Any]) -> bytes:
        call = ["Email/query", {"accountId": account_id, **args}, "q"]
        return json.dumps({"using": USING, "methodCalls": [call]}).encode()


@contextlib.asynccontextmanager
async def served(
    user: ImapUser,
    imap_port: int,
    tmp_path: Path,
    limits: LimitsConfig | None = None,
    cache: CacheConfig | None = None,
    log_format: str = "text",
) -> AsyncIterator[Served]:
    port = _free_port()
    cache_path = tmp_path / "cache.sqlite3"
    cfg = Config(
        imap=ImapConfig(host=user.host, port=imap_port, security="none", command_timeout=120.0),
        server=ServerConfig(
            listen=f"127.0.0.1:{port}",
            base_url=f"http://127.0.0.1:{port}",
            log_level="info",
            log_format=log_format,
        ),
        cache=dataclasses.replace(cache or CacheConfig(), path=str(cache_path)),
        limits=limits or LimitsConfig(),
    )
    log_path = tmp_path / "proxy.log"
    process = await spawn_serve(cfg, tmp_path / "imapjmap.toml", log_path)
    it = Served(process, f"http://127.0.0.1:{port}", log_path, cache_path, user)
    try:
        await _wait_serving(it)
        yield it
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _wait_serving(it: Served) -> None:
    # "listening" is logged before the socket is bound: wait for an answer
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and it.process.returncode is None:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"{it.base_url}/.well-known/jmap"):
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"the proxy did not start:\n{it.log()}")


async def _account_id(http: aiohttp.ClientSession, it: Served) -> str:
    async with http.get(f"{it.base_url}/.well-known/jmap", headers=it.auth) as resp:
        assert resp.status == 200, await resp.text()
        session = await resp.json()
    account_id: str = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    return account_id


async def _query(http: aiohttp.ClientSession, it: Served, account_id: str, args: Any) -> Any:
    headers = {**it.auth, "Content-Type": "application/json"}
    body = io.BytesIO(it.api_body(account_id, args))
    async with http.post(f"{it.base_url}/jmap/api/", data=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["methodResponses"][0]


def _server_errors(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if " ERROR " in line or "Traceback" in line or " 500 " in line
    ]


async def _stop_within_limit(it: Served) -> float:
    """SIGTERM; the seconds until the process exited (the test fails past STOP_LIMIT)."""
    started = time.monotonic()
    it.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(it.process.wait(), STOP_LIMIT)
    except TimeoutError:
        pytest.fail(f"still running {STOP_LIMIT} s after SIGTERM:\n{it.log()}")
    return time.monotonic() - started


async def _assert_clean_exit(it: Served) -> None:
    assert it.process.returncode == 0, it.log()
    assert not _server_errors(it.log()), it.log()
    # an operator reading the log sees why and when it stopped
    assert "imapjmap stopping (SIGTERM)" in it.log() and it.log().rstrip().endswith("stopped")
    # the next instance can use the cache at once (no "database is locked"): the child's
    # SQLite file whatever --cache-backend says (the fixtures' redirection of cache paths
    # to PostgreSQL reaches no child process), its write lock free
    with contextlib.closing(sqlite3.connect(it.cache_path, timeout=0.5)) as db:
        db.execute("BEGIN IMMEDIATE")
        assert db.execute("SELECT count(*) FROM accounts").fetchone() == (1,)
        db.rollback()


async def test_sigterm_ends_the_process_within_seconds_during_a_stalled_request(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    async with (
        Relay(imap_user.host, imap_user.port) as relay,
        served(imap_user, relay.port, tmp_path) as it,
        aiohttp.ClientSession() as http,
    ):
        account_id = await _account_id(http, it)
        await _query(http, it, account_id, {})  # synced: the next refresh is one LIST
        relay.stall()  # the upstream stops answering mid-request
        stuck = asyncio.create_task(_query(http, it, account_id, {"filter": {"text": "x"}}))
        await asyncio.sleep(0.5)
        assert not stuck.done()
        await _stop_within_limit(it)
        with contextlib.suppress(Exception):
            await stuck
    await _assert_clean_exit(it)


async def test_sigterm_ends_the_process_within_seconds_during_a_long_cache_read(
    seeded_user: SeededUser, tmp_path: Path
) -> None:
    # limits raised far beyond the defaults so that one query keeps a cache reader busy
    # (every condition evaluated on every email, in the reader's thread) for many seconds
    limits = LimitsConfig(max_filter_conditions=300_000)
    cache = CacheConfig(max_transaction_seconds=300.0)
    async with (
        served(seeded_user, seeded_user.port, tmp_path, limits, cache) as it,
        aiohttp.ClientSession() as http,
    ):
        account_id = await _account_id(http, it)
        await _query(http, it, account_id, {})
        conditions = [{"subject": f"no such subject {i}"} for i in range(200_000)]
        heavy = {"filter": {"operator": "OR", "conditions": conditions}}
        running = asyncio.create_task(_query(http, it, account_id, heavy))
        # the first query's log line (it may come late on a loaded machine)
        assert await it.wait_log("/jmap/api/ 200", 10.0)
        # decoded (5 MB: about a second, in a thread), then 10 million conditions to
        # evaluate in the cache reader: stop while they run
        await asyncio.sleep(3.0)
        assert not running.done()
        await _stop_within_limit(it)
        with contextlib.suppress(Exception):
            await running
    await _assert_clean_exit(it)


async def test_json_logs_are_one_object_a_line_from_start_to_stop(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    async with served(imap_user, imap_user.port, tmp_path, log_format="json") as it:
        async with aiohttp.ClientSession() as http:
            account_id = await _account_id(http, it)
            await _query(http, it, account_id, {})
        await _stop_within_limit(it)
    assert it.process.returncode == 0, it.log()
    records = [json.loads(line) for line in it.log().splitlines()]
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("imapjmap listening on") for m in messages)
    assert any(m.startswith("POST /jmap/api/ 200") for m in messages)  # the access log
    assert messages[-2:] == ["imapjmap stopping (SIGTERM)", "imapjmap stopped"]
    assert imap_user.password not in it.log()


async def _send_and_leave(it: Served, body: bytes) -> None:
    """POST the API request on a raw connection, then hang up without reading."""
    _, writer = await asyncio.open_connection("127.0.0.1", int(it.base_url.rsplit(":", 1)[1]))
    head = (
        "POST /jmap/api/ HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        f"Authorization: {it.auth['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    await asyncio.sleep(0.5)  # the proxy is now waiting for the stalled upstream
    writer.close()
    await writer.wait_closed()


async def test_a_request_whose_client_left_is_cancelled_and_the_shared_refresh_goes_on(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    async with (
        Relay(imap_user.host, imap_user.port) as relay,
        served(imap_user, relay.port, tmp_path) as it,
        aiohttp.ClientSession() as http,
    ):
        account_id = await _account_id(http, it)
        await _query(http, it, account_id, {})
        relay.stall()
        # another client's request waits for the same refresh
        staying = asyncio.create_task(_query(http, it, account_id, {}))
        await _send_and_leave(it, it.api_body(account_id, {"filter": {"subject": "x"}}))
        assert await it.wait_log("POST /jmap/api/ cancelled", 3.0), it.log()
        assert not staying.done()
        relay.resume()
        name, args, _ = await asyncio.wait_for(staying, 10)
        assert name == "Email/query" and args["ids"] == []
        assert (await _query(http, it, account_id, {"filter": {"subject": "x"}}))[0] == (
            "Email/query"
        )
        await _stop_within_limit(it)
    await _assert_clean_exit(it)
