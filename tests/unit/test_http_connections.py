"""Slow, greedy and malformed HTTP clients (imapjmap.http.connections), over raw sockets.

A real aiohttp server (the proxy's runner and middlewares around a small echo handler)
listens on a free loopback port; the clients are plain sockets that send exactly the bytes
each test wants, as slowly as it wants.  Timeouts are a fraction of a second here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web

from imapjmap.http import middleware
from imapjmap.http.connections import Guard, GuardedRunner

TIMEOUT = 0.3
SLACK = 3.0  # the most any answer below may take beyond its timeout


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body)


@dataclass
class Server:
    port: int
    guard: Guard

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    app = web.Application(
        middlewares=[middleware.access, middleware.cors, middleware.problem_details]
    )
    app.router.add_route("*", "/echo", _echo)
    guard = Guard(header_timeout=TIMEOUT, body_timeout=TIMEOUT, max_per_address=3)
    runner = GuardedRunner(app, guard, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(port, guard)
    finally:
        await runner.cleanup()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole response (status, lower-cased headers, body) read within SLACK seconds."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SLACK)
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), SLACK)
    return int(status_line.split()[1]), headers, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), SLACK) == b""
    except ConnectionError:
        return True


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SLACK
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def _statuses(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split()[2] for r in caplog.records if r.name == "imapjmap.access"]


# --- Rule 1: headers -------------------------------------------------------------------------


async def test_half_sent_headers_get_408_and_the_connection_closes(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reader, writer = await server.connect()
    started = time.monotonic()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    status, headers, body = await _response(reader)
    assert status == 408
    assert headers["connection"] == "close"
    assert "headers not complete within 0.3 seconds" in json.loads(body)["detail"]
    assert await _closed(reader)
    assert time.monotonic() - started < TIMEOUT + SLACK
    writer.close()
    await _until(lambda: not server.guard.open)  # the closed connection no longer counts
    _no_errors(caplog)


async def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    reader, writer = await server.connect()
    status, _, _ = await _response(reader)
    assert status == 408
    assert await _closed(reader)
    writer.close()


async def test_headers_trickled_byte_by_byte_do_not_reset_the_clock(server: Server) -> None:
    reader, writer = await server.connect()
    request = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100

    async def trickle() -> None:  # one byte per eighth of the timeout, until the server hangs up
        for i in range(len(request)):
            writer.write(request[i : i + 1])
            await asyncio.sleep(TIMEOUT / 8)

    sending = asyncio.create_task(trickle())
    status, _, _ = await _response(reader)
    assert status == 408
    assert not sending.done()  # cut off in the middle of the headers
    sending.cancel()
    writer.close()


async def test_an_idle_keep_alive_connection_is_not_a_slow_request(server: Server) -> None:
    reader, writer = await server.connect()
    for _ in range(2):
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await _response(reader)
        assert status == 200
        await asyncio.sleep(TIMEOUT * 2)  # idle longer than header_timeout between requests
    writer.close()


# --- Rule 2: bodies --------------------------------------------------------------------------


async def test_a_stalled_body_gets_408_not_500(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    status, headers, body = await _response(reader)
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body)["detail"].startswith("the request body stalled")
    assert await _closed(reader)
    assert _statuses(caplog) == ["408"]
    _no_errors(caplog)
    writer.close()


async def test_a_client_leaving_mid_body_is_no_server_error(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    await asyncio.sleep(0.05)  # the handler is reading
    writer.close()
    for _ in range(100):
        if _statuses(caplog):
            break
        await asyncio.sleep(0.02)
    assert _statuses(caplog) == ["400"]
    assert any("went away" in r.getMessage() for r in caplog.records)
    _no_errors(caplog)


async def test_a_slow_but_steady_body_is_accepted(server: Server) -> None:
    reader, writer = await server.connect()
    chunks = [b"x" * 10] * 6  # 6 pauses of half the timeout: longer in total than the timeout
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
    for chunk in chunks:
        await asyncio.sleep(TIMEOUT / 2)
        writer.write(chunk)
    status, _, body = await _response(reader)
    assert (status, body) == (200, b"".join(chunks))
    writer.close()


# --- Rule 3: connections per address ---------------------------------------------------------


async def test_connections_per_address_are_bounded(server: Server) -> None:
    held = [await server.connect() for _ in range(3)]
    for reader, writer in held:  # each is served
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[0] == 200
    # A plain socket that connects and sends before the server even accepts it: the
    # request is still unread when the server hangs up, and closing a socket with unread
    # data resets the connection (a client reading to the end gets an error, not the
    # answer); the server ends its side cleanly and lingers instead.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setblocking(False)
        await asyncio.sleep(0.3)
        answer = sock.recv(4096)
        assert sock.recv(4096) == b""  # a clean end, no reset
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"too many connections" in answer
    held[0][1].close()
    await held[0][1].wait_closed()
    await _until(lambda: server.guard.open["127.0.0.1"] < 3)  # seen a moment later
    reader, writer = await server.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _response(reader))[0] == 200
    for _, w in [*held[1:], (reader, writer)]:
        w.close()


# --- Rule 4: malformed HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /echo HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /echo HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / echo HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_http_is_one_info_line_and_a_400(
    server: Server, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await server.connect()
    writer.write(request_bytes)
    status, headers, body = await _response(reader)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 400
    _no_errors(caplog)
    lines = [r for r in caplog.records if "malformed request from 127.0.0.1" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    writer.close()
