"""A cheap closed-loop HTTP load generator, run as a process of its own.

``bench/throughput.py`` runs it once per cell: it reads a JSON spec on stdin, keeps
``clients`` keep-alive connections each sending the same prebuilt request bytes again as soon
as the answer is read, and writes a JSON result on stdout: the answered requests' latencies,
the refused and failed ones, and the CPU seconds this process used.  It is plain
``asyncio.Protocol`` code with no HTTP library: an aiohttp client in the benchmark's own
process cost about as much CPU per request as the proxy it measured, on the same two cores,
so the proxy's figures were as much the client's.  What it does not do: TLS, redirects,
anything but HTTP/1.1 answers with ``Content-Length`` or chunked bodies.

Spec::

    {"clients": 20, "warm_up": 1.0, "seconds": 6.0, "expect": 50,
     "targets": [{"host": "127.0.0.1", "port": 8080, "request": "<the raw request, latin-1>"}]}

Client *i* uses target *i* mod the number of targets.  An answer is good when its status is
200, it holds no ``"error"`` in its first 200 bytes and ``"threadId"`` ``expect`` times.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    start: float
    stop: float
    expect: int
    latencies: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # every answer, warm-up included (for the servers' CPU per request)


class Client(asyncio.Protocol):
    """One closed-loop client on one keep-alive connection."""

    def __init__(self, request: bytes, run: Run, done: asyncio.Future[None]) -> None:
        self.request = request
        self.run = run
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.buffer = bytearray()
        self.head: bytes | None = None
        self.body_at = 0
        self.length = -1  # Content-Length, or -1 while chunked
        self.chunked = False
        self.closing = False  # closed by this side: not a failure

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if not self.closing and time.perf_counter() < self.run.stop:
                self.run.failed["connection closed"] += 1
            self.done.set_result(None)

    def send(self) -> None:
        now = time.perf_counter()
        if now >= self.run.stop:
            assert self.transport is not None
            self.transport.close()
            return
        self.buffer.clear()
        self.head = None
        self.sent = now
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = bytes(self.buffer[:end]).lower()
            self.body_at = end + 4
            self.chunked = b"transfer-encoding: chunked" in self.head
            at = self.head.find(b"content-length:")
            self.length = -1 if at < 0 else int(self.head[at + 15 :].split(b"\r\n", 1)[0])
        body = self._body()
        if body is not None:
            self._answered(body)

    def _body(self) -> bytes | None:
        """The whole body once it is in, else None."""
        if not self.chunked:
            if len(self.buffer) - self.body_at < max(self.length, 0):
                return None
            return bytes(self.buffer[self.body_at : self.body_at + max(self.length, 0)])
        if not self.buffer.endswith(b"0\r\n\r\n"):
            return None
        parts: list[bytes] = []
        at = self.body_at
        while True:
            line_end = self.buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            size = int(bytes(self.buffer[at:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                return b"".join(parts)
            start = line_end + 2
            if len(self.buffer) < start + size + 2:
                return None
            parts.append(bytes(self.buffer[start : start + size]))
            at = start + size + 2

    def _answered(self, body: bytes) -> None:
        assert self.head is not None
        done = time.perf_counter()
        run, head = self.run, self.head
        run.requests += 1
        pause = 0.0
        if self.sent >= run.start:
            status = int(head[9:12])
            if status != 200:
                run.refused[f"HTTP {status}"] += 1
                at = head.find(b"retry-after:")
                if at >= 0:  # as a well-behaved client does (RFC 9110 §10.2.3)
                    value = head[at + 12 :].split(b"\r\n", 1)[0].strip()
                    pause = float(value) if value.isdigit() else 0.0
            elif b'"error"' in body[:200] or body.count(b'"threadId"') != run.expect:
                run.failed["method error or not the expected emails"] += 1
            else:
                run.latencies.append(done - self.sent)
        if b"connection: close" in head:
            assert self.transport is not None
            self.closing = True
            self.transport.close()
            return
        if pause:
            asyncio.get_running_loop().call_later(min(pause, max(run.stop - done, 0)), self.send)
        else:
            self.send()


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    run = Run(now + spec["warm_up"], now + spec["warm_up"] + spec["seconds"], spec["expect"])
    targets = spec["targets"]
    cpu = time.process_time()

    async def client(n: int) -> None:
        target = targets[n % len(targets)]
        request = target["request"].encode("latin-1")
        while time.perf_counter() < run.stop:  # a closed connection is opened again
            done: asyncio.Future[None] = loop.create_future()
            try:
                await loop.create_connection(
                    functools.partial(Client, request, run, done), target["host"], target["port"]
                )
            except OSError as error:
                run.failed[type(error).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            await done

    await asyncio.gather(*(client(n) for n in range(spec["clients"])))
    return {
        "latencies": run.latencies,
        "refused": run.refused,
        "failed": run.failed,
        "requests": run.requests,
        "cpu": time.process_time() - cpu,
    }


if __name__ == "__main__":
    json.dump(asyncio.run(main(json.load(sys.stdin))), sys.stdout)
