"""Push latency: an APPEND by another IMAP client until the EventSource ``state`` event.

Run by hand (about a minute)::

    python3 bench/push_latency.py --samples 100

It starts a private Dovecot and the proxy (the real aiohttp app on a loopback port), opens
one EventSource stream (``types=Email``), waits until the account's watcher has NOTIFY set
up, then ``--samples`` times: APPENDs a message to INBOX through a plain IMAP connection of
its own (``imaplib``, in a thread, timed from just before the command is sent) and waits for
the ``state`` event whose Email state is new.  The latency is from the APPEND command until
that event was read; it spans Dovecot's NOTIFY, the watcher's debounce (50 ms), the refresh
of the cache (LIST-STATUS + a fetch of the new message), the hub and the HTTP stream.

Prints the median, p95 and max and the target (p95 <= 1 s).  Exit status 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import imaplib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp.test_utils import TestServer

from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig
from imapjmap.demo.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.http import views
from imapjmap.http.app import make_app

USERNAME: Final = "pushbench"
PASSWORD: Final = "bench-password"
TARGET_P95: Final = 1.0  # seconds


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def message(n: int) -> bytes:
    return (
        f"From: Bench <bench@example.org>\r\nTo: {USERNAME}@example.org\r\n"
        f"Subject: push sample {n}\r\nMessage-ID: <push-{n}-{time.time_ns()}@example.org>\r\n"
        "Date: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


class Events:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next_state(self, timeout: float) -> dict[str, Any]:
        data: list[str] = []
        name = ""
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.resp.content.readline()).decode().rstrip("\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    if name == "state":
                        changed: dict[str, Any] = json.loads("".join(data))["changed"]
                        return changed
                    data, name = [], ""


async def run(dovecot: DovecotServer, workdir: Path, samples: int) -> list[float]:
    cfg = Config(
        imap=ImapConfig(host=dovecot.host, port=dovecot.port, security="none"),
        server=ServerConfig(listen="127.0.0.1:0", base_url="http://127.0.0.1:8080"),
        cache=CacheConfig(path=str(workdir / "cache.sqlite3")),
    )
    app = make_app(cfg)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    auth = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    oracle = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=30)
    oracle.login(USERNAME, PASSWORD)
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
            url = server.make_url("/jmap/eventsource/?types=Email&closeafter=no&ping=0")
            resp = await http.get(url, timeout=aiohttp.ClientTimeout(total=None))
            assert resp.status == 200, await resp.text()
            events = Events(resp)
            current = (await events.next_state(10)).popitem()[1]["Email"]
            push = app[views.SERVICES].push
            while not any(w.mode == "notify" for w in push.watchers.values()):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # the watcher's first refresh
            for n in range(samples):
                started = time.perf_counter()
                typ, _ = await asyncio.to_thread(oracle.append, "INBOX", None, None, message(n))
                assert typ == "OK"
                while True:
                    changed = (await events.next_state(10)).popitem()[1]
                    if changed.get("Email", current) != current:
                        current = changed["Email"]
                        break
                latencies.append(time.perf_counter() - started)
                if (n + 1) % 20 == 0:
                    print(f"  {n + 1} samples, median so far {statistics.median(latencies):.3f}s")
            resp.close()
    finally:
        oracle.logout()
        await server.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    ensure_dovecot_installed()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-pushbench-"))
    dovecot = DovecotServer.start(workdir / "dovecot")
    try:
        dovecot.add_user(USERNAME, PASSWORD)
        latencies = asyncio.run(run(dovecot, workdir, args.samples))
    finally:
        dovecot.stop()
    median, high, worst = statistics.median(latencies), p95(latencies), max(latencies)
    verdict = "pass" if high <= TARGET_P95 else "MISS"
    print(f"APPEND -> EventSource state event, {len(latencies)} samples")
    print(f"  median {median * 1000:.0f} ms   p95 {high * 1000:.0f} ms   max {worst * 1000:.0f} ms")
    print(f"  target p95 <= {TARGET_P95 * 1000:.0f} ms: {verdict}")
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
