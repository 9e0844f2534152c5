"""The read path at scale: first sync, "open inbox", no-change requests and memory.

Run by hand (about 15 minutes at 100,000 messages on a 2-core machine, most of it the
proxy's three first syncs of 100,000 messages)::

    python3 bench/read_path.py --sizes 1000,100000

It starts a private Dovecot, seeds one user per size with generated mail (``mailgen``),
and measures, side by side in one run:

1. first sync: the proxy's first sync of INBOX (from the first JMAP request until
   ``AccountSync.wait_filled()``; a fresh cache each time) against a raw
   ``UID FETCH 1:* (...)`` of the same items by a plain socket client, both warm, alternated;
   the ratio of the medians, and the time until the first request returned (newest batch
   usable).  A first sync that takes longer than ``--sync-limit`` is given up, its progress
   reported, and the warm measurements of that size are skipped.  ``--compare-rev REV``
   alternates these with the first syncs of the ``imapjmap`` package at git revision REV
   (each in a process of its own, on the same Dovecot), for before/after figures of one run,
   and then times the warm requests of 2. and 3. side by side: REV's ``imapjmap serve`` and
   this tree's, each in a process of its own with its own synced cache of the same account,
   the requests alternated between the two, new/old of the medians (REV's dependencies that
   this environment lacks are installed beside its package with pip);
   ``--compare-pure`` alternates this tree's first syncs (the parsing modules compiled by
   ``python3 -m imapjmap.build_ext``) with the same tree's as pure Python, both in processes
   of their own (first syncs only);
   ``--first-sync-only`` stops after this part;
2. warm "open inbox": ``Email/query`` (INBOX, receivedAt desc, limit 50) + ``Email/get`` of
   those 50 with list properties in one request, median and p95;
3. a request when nothing changed upstream (``Mailbox/get`` with no ids): its median latency
   at the largest size over the smallest, the IMAP commands it sent (``ImapSession.execute``
   is wrapped to count them), the same LIST-STATUS sent by the plain client (what the
   server alone costs), and the same request while an EventSource is open (the push
   watcher then answers for freshness);
4. peak RSS (VmHWM) of ``imapjmap serve`` in its own process, after the first sync of the
   largest account.

The in-process measurements drive the real aiohttp app over loopback HTTP.  Every number is
a median of several samples (the machine is shared: compare ratios, not absolute numbers).
A compact table with value, target and pass/miss ends the output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
from aiohttp.test_utils import TestServer
from mailgen import SeedStats, seed_inbox

from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig
from imapjmap.http import views
from imapjmap.http.app import make_app
from imapjmap.imap.commands import Command
from imapjmap.imap.models import Reply
from imapjmap.imap.session import ImapSession
from imapjmap.methods import REGISTRY
from imapjmap.sync.records import HEADER_FIELDS

CORE: Final = "urn:ietf:params:jmap:core"
MAIL: Final = "urn:ietf:params:jmap:mail"
# what the proxy's first sync fetches from Dovecot (upstream.imap_sync.list_items), in its order
RAW_ITEMS: Final = (
    "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
    f"BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})] MODSEQ X-GUID)"
)
LIST_PROPERTIES: Final = (
    "id", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "from", "subject",
    "hasAttachment", "preview",
)  # fmt: skip
# what a refresh sends when nothing changed (ImapSession.list_mailboxes on Dovecot)
RAW_LIST: Final = (
    'LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN '
    "STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ X-GUID))"
)
EMAIL_METHODS: Final = ("Email/query", "Email/get")
PASSWORD: Final = "bench-password"
PUSH_SETTLE: Final = 3.0  # seconds for the push watchers to connect
PROGRESS_EVERY: Final = 15.0  # seconds between progress samples of a long first sync

SIDE_KINDS: Final = ("open inbox", "no-change")  # the warm requests --compare-rev times too
OLD: Final = "old"  # the --compare-rev package
NEW: Final = "new"  # this tree's

# targets (README "Performance")
FIRST_SYNC_RATIO: Final = 1.3
OPEN_INBOX_MS: Final = 50.0
NO_CHANGE_RATIO: Final = 1.2
NO_CHANGE_ROUND_TRIPS: Final = 1
PEAK_RSS_MB: Final = 150.0
SIDE_RATIO: Final = 1.10  # new / old of the medians, side by side (issue 13)


def say(text: str) -> None:
    print(text, flush=True)


def p95(samples: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def email_methods_missing() -> list[str]:
    return [m for m in EMAIL_METHODS if m not in REGISTRY]


# -- a plain IMAP client -----------------------------------------------------------------------


class RawImap:
    """A blocking socket IMAP client that reads every byte of a reply and parses nothing.

    The end of a reply is the tagged line (``\\r\\nR0003 OK``), found with ``bytes.find`` as the
    data arrives; literals are not interpreted (no message holds these tags).  This is the
    floor any client pays to receive the data, not a full parser.
    """

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tag = 0
        greeting = self.sock.recv(4096)
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"unexpected greeting {greeting[:80]!r}")

    def command(self, text: str) -> bytearray:
        """Send one command and return the whole reply (untagged lines and the tagged one)."""
        self._tag += 1
        tag = b"R%04d" % self._tag
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        reply = bytearray(b"\r\n")  # so that a tagged-only reply is found like any other
        marker = b"\r\n" + tag + b" "
        searched = 0
        found = -1
        while True:
            chunk = self.sock.recv(1 << 22)
            if not chunk:
                raise ConnectionError(f"connection closed during {text[:40]!r}")
            reply += chunk
            if found < 0:
                found = reply.find(marker, max(searched - len(marker), 0))
                searched = len(reply)
            if found >= 0 and reply.find(b"\r\n", found + 2) >= 0:
                break
        status = bytes(reply[found + len(marker) : found + len(marker) + 2])
        if status != b"OK":
            end = reply.find(b"\r\n", found + 2)
            raise RuntimeError(f"{text[:40]!r}: {bytes(reply[found + 2 : end])!r}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command("LOGOUT")
        self.sock.close()


def raw_fetch(server: DovecotServer, username: str) -> tuple[float, int, int]:
    """Seconds for the full UID FETCH, the FETCH responses seen, the octets read."""
    client = RawImap(server.host, server.port)
    try:
        client.command(f'LOGIN "{username}" "{PASSWORD}"')
        client.command("ENABLE CONDSTORE QRESYNC")
        client.command("EXAMINE INBOX")
        started = time.perf_counter()
        reply = client.command(f"UID FETCH 1:* {RAW_ITEMS}")
        elapsed = time.perf_counter() - started
        return elapsed, reply.count(b" FETCH ("), len(reply)
    finally:
        client.close()


# -- the proxy, in process ---------------------------------------------------------------------


@dataclass
class CommandLog:
    """Every IMAP command the proxy sends (``ImapSession.execute`` wrapped, bench only), with
    the user whose session sent it: the proxies of every size share this process, and one
    account's background work must not be counted against another's request."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def install(self) -> None:
        original = ImapSession.execute
        sent = self.sent

        async def execute(
            session: ImapSession, command: Command, *, what: str = "", **kw: Any
        ) -> Reply:
            # one entry per round trip: a NOOP pipelined behind a command shares its trip
            name = what or command.parts[0].split(" ", 1)[0]
            sent.append((session.username, name + ("+NOOP" if kw.get("noop_after") else "")))
            return await original(session, command, what=what, **kw)

        ImapSession.execute = execute  # type: ignore[method-assign,assignment]

    def take(self, username: str | None = None) -> list[str]:
        """The commands sent since the last take (by ``username``'s sessions only, if given)."""
        out = [name for user, name in self.sent if username is None or user == username]
        self.sent.clear()
        return out


def open_inbox_calls(account_id: str, inbox_id: str) -> list[list[Any]]:
    """What a client sends to open its inbox: Email/query of the newest 50 ("q") and
    Email/get of their list properties ("g")."""
    query = {
        "accountId": account_id,
        "filter": {"inMailbox": inbox_id},
        "sort": [{"property": "receivedAt", "isAscending": False}],
        "limit": 50,
    }
    get = {
        "accountId": account_id,
        "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
        "properties": list(LIST_PROPERTIES),
    }
    return [["Email/query", query, "q"], ["Email/get", get, "g"]]


class JmapError(RuntimeError):
    pass


@dataclass
class Jmap:
    """A small JMAP client over HTTP."""

    http: aiohttp.ClientSession
    base: str
    username: str
    account_id: str = ""
    inbox_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.username}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    async def session(self) -> None:
        async with self.http.get(f"{self.base}/.well-known/jmap", headers=self.headers) as resp:
            if resp.status != 200:
                raise JmapError(f"session: HTTP {resp.status}: {await resp.text()}")
            body = await resp.json()
        self.account_id = body["primaryAccounts"][MAIL]

    async def request(self, calls: list[list[Any]]) -> list[list[Any]]:
        """The method responses; a method error raises."""
        responses = await self.responses(calls)
        for name, args, _ in responses:
            if name == "error":
                raise JmapError(f"method error: {args}")
        return responses

    async def responses(self, calls: list[list[Any]]) -> list[list[Any]]:
        """The method responses (errors included); an HTTP error raises."""
        payload = {"using": [CORE, MAIL], "methodCalls": calls}
        async with self.http.post(
            f"{self.base}/jmap/api/", json=payload, headers=self.headers
        ) as resp:
            if resp.status != 200:
                raise JmapError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
            body = await resp.json()
        responses: list[list[Any]] = body["methodResponses"]
        return responses

    async def mailbox_get(self, ids: list[str] | None, props: list[str]) -> list[dict[str, Any]]:
        args = {"accountId": self.account_id, "ids": ids, "properties": props}
        got = await self.request([["Mailbox/get", args, "m"]])
        result: list[dict[str, Any]] = got[0][1]["list"]
        return result

    async def find_inbox(self) -> None:
        boxes = await self.mailbox_get(None, ["id", "role"])
        self.inbox_id = next(b["id"] for b in boxes if b["role"] == "inbox")

    async def no_change(self) -> None:
        await self.mailbox_get([], ["id"])

    async def open_event_source(self) -> aiohttp.ClientResponse:
        """An EventSource push stream (RFC 8620 §7.3), left open; the caller closes it."""
        headers = {**self.headers, "Accept": "text/event-stream"}
        url = f"{self.base}/jmap/eventsource/?types=*&closeafter=no&ping=0"
        resp = await self.http.get(url, headers=headers)
        if resp.status != 200:
            text = await resp.text()
            resp.close()
            raise JmapError(f"EventSource: HTTP {resp.status}: {text[:200]}")
        return resp

    async def query_one(self) -> None:
        args = {"accountId": self.account_id, "filter": {"inMailbox": self.inbox_id}, "limit": 1}
        await self.request([["Email/query", args, "q"]])

    async def open_inbox(self) -> int:
        """Email/query + Email/get of the newest 50 in one request; the Emails returned."""
        got = await self.request(open_inbox_calls(self.account_id, self.inbox_id))
        return len(got[1][1]["list"])


class Reachable(Protocol):
    """An IMAP server the proxy can reach: the Dovecot and Cyrus of devservers alike."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Address:
    host: str
    port: int


@dataclass
class InProcessProxy:
    """The real aiohttp app on a loopback port, its services reachable for wait_filled()."""

    server: TestServer
    http: aiohttp.ClientSession
    jmap: Jmap
    cache: Path

    @classmethod
    async def start(cls, upstream: Reachable, username: str, cache: Path) -> InProcessProxy:
        cfg = Config(
            imap=ImapConfig(host=upstream.host, port=upstream.port, security="none"),
            server=ServerConfig(listen="127.0.0.1:0"),
            cache=CacheConfig(path=str(cache)),
        )
        server = TestServer(make_app(cfg), host="127.0.0.1")
        await server.start_server()
        http = aiohttp.ClientSession()
        base = str(server.make_url("")).rstrip("/")
        return cls(server, http, Jmap(http, base, username), cache)

    async def wait_filled(self) -> None:
        services = self.server.app[views.SERVICES]
        await services.sync_for(self.jmap.account_id).wait_filled()

    async def close(self) -> None:
        await self.http.close()
        await self.server.close()


Progress = list[tuple[float, int]]  # (seconds since the first request, messages cached)


@dataclass(frozen=True)
class FirstSync:
    first_batch: float  # seconds until the first JMAP request returned
    total: float | None  # seconds until the whole mailbox was synced; None: not within the limit
    progress: Progress  # sampled every PROGRESS_EVERY seconds


def cached_messages(cache: Path, account_id: str) -> int:
    """Messages the proxy's cache holds for the account, read beside the proxy (WAL)."""
    uri = f"file:{cache}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM locations WHERE account_id = ?", (account_id,)
        ).fetchone()
    return int(row[0])


async def wait_with_progress(
    done: Awaitable[None], cache: Path, account_id: str, size: int, started: float, limit: float
) -> tuple[bool, Progress]:
    """Await ``done`` for at most ``limit`` seconds after ``started``, sampling the progress."""
    task = asyncio.ensure_future(done)
    progress: Progress = []
    while True:
        remaining = started + limit - time.perf_counter()
        finished, _ = await asyncio.wait({task}, timeout=max(min(PROGRESS_EVERY, remaining), 0))
        if finished:
            task.result()
            return True, progress
        count = await asyncio.to_thread(cached_messages, cache, account_id)
        progress.append((time.perf_counter() - started, count))
        say(f"    ... {progress[-1][0]:.0f} s: {count:,} of {size:,} messages cached")
        if remaining <= PROGRESS_EVERY:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False, progress


def _cpu_seconds(stat: Path) -> float:
    """utime + stime of a /proc ``stat`` file (0 when it is gone)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(stat.parent.name))
    return found


def cpu_by_part(dovecot: DovecotServer) -> dict[str, float]:
    """CPU seconds so far of this process's threads (the event loop, the cache writer, the
    rest), of the first sync's parsing workers, and of Dovecot's imap processes: where a
    first sync's time goes, read before and after it (Linux /proc only)."""
    from imapjmap.sync import parsing  # here: the child of --compare-rev may import an older
    # package, which has no such module (the parent alone reads the CPU)

    names = {t.native_id: t.name for t in threading.enumerate()}
    parts: dict[str, float] = {"event loop": 0.0, "cache writer": 0.0, "other threads": 0.0}
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        name = names.get(int(task.name), "")
        part = {"MainThread": "event loop", "imapjmap-store-writer": "cache writer"}.get(name)
        parts[part or "other threads"] += _cpu_seconds(task / "stat")
    pool = parsing.Parser._pool  # kept from one first sync to the next: read the difference
    workers = list(getattr(pool, "_processes", None) or {})
    parts["parsing workers"] = sum(_cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in workers)
    master = getattr(getattr(dovecot, "_process", None), "pid", None)  # its imap processes
    imap = [
        pid
        for pid in (_children(master) if master else [])
        if Path(f"/proc/{pid}/comm").read_text().strip() == "imap"
    ]
    parts["Dovecot imap"] = sum(_cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in imap)
    return parts


def say_cpu(before: dict[str, float], after: dict[str, float], wall: float, size: int) -> None:
    """The CPU each part spent during a first sync, in seconds and microseconds a message."""
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    total = sum(spent.values())
    say(
        f"    CPU during it: {total:.1f} s for {wall:.1f} s wall ("
        + ", ".join(f"{k} {v:.1f} s = {v / size * 1e6:.0f} us/msg" for k, v in spent.items())
        + ")"
    )


async def first_sync(proxy: InProcessProxy, size: int, limit: float) -> FirstSync:
    started = time.perf_counter()
    await proxy.jmap.session()
    await proxy.jmap.find_inbox()  # the first request: the newest batch is synced in it
    first = time.perf_counter() - started
    finished, progress = await wait_with_progress(
        proxy.wait_filled(), proxy.cache, proxy.jmap.account_id, size, started, limit
    )
    return FirstSync(first, time.perf_counter() - started if finished else None, progress)


# -- the proxy, as its own process -------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    start_mb: float  # VmRSS after start-up, before any request
    peak_mb: float  # VmHWM once the account is synced (and opened, where possible)
    now_mb: float  # VmRSS at the end
    sync: FirstSync
    synced: int  # messages in the cache at the end


def _proc_status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_config(dovecot: DovecotServer, port: int, cache: Path) -> str:
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\nlog_level = "warning"\n\n'
        f'[imap]\nhost = "{dovecot.host}"\nport = {dovecot.port}\nsecurity = "none"\n\n'
        f'[cache]\npath = "{cache}"\n'
    )


async def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"imapjmap serve exited ({process.returncode}):\n{log.read_text()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("imapjmap serve did not listen within 30 s")


async def _synced_through_http(jmap: Jmap, count: int) -> None:
    while True:  # the count reaches `count` with the last batch of the fill
        got = await jmap.mailbox_get([jmap.inbox_id], ["totalEmails"])
        if got[0]["totalEmails"] >= count:
            return
        await asyncio.sleep(0.5)


async def measure_memory(
    dovecot: DovecotServer, username: str, count: int, workdir: Path, limit: float
) -> Memory:
    """Run ``imapjmap serve``, sync ``username`` through it, read its VmHWM."""
    port = _free_port()
    config = workdir / "serve.toml"
    cache = workdir / "serve-cache.sqlite3"
    config.write_text(_serve_config(dovecot, port, cache))
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "imapjmap", "serve", "--config", str(config)],
            stdout=out,
            stderr=out,
        )
    try:
        await _wait_listening(port, process, log)
        start_mb = _proc_status_mb(process.pid, "VmRSS")
        async with aiohttp.ClientSession() as http:
            jmap = Jmap(http, f"http://127.0.0.1:{port}", username)
            started = time.perf_counter()
            await jmap.session()
            await jmap.find_inbox()
            first = time.perf_counter() - started
            finished, progress = await wait_with_progress(
                _synced_through_http(jmap, count), cache, jmap.account_id, count, started, limit
            )
            sync = FirstSync(first, time.perf_counter() - started if finished else None, progress)
            if finished:  # a few requests of a client using the synced account
                for _ in range(10):
                    await jmap.no_change()
                    if not email_methods_missing():
                        await jmap.open_inbox()
            synced = await asyncio.to_thread(cached_messages, cache, jmap.account_id)
        return Memory(
            start_mb,
            _proc_status_mb(process.pid, "VmHWM"),
            _proc_status_mb(process.pid, "VmRSS"),
            sync,
            synced,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the measurements --------------------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    seed: SeedStats
    raw_cold: float = 0.0
    raw: list[float] = field(default_factory=list)
    proxy: list[FirstSync] = field(default_factory=list)
    compared: list[FirstSync] = field(default_factory=list)  # --compare-rev's first syncs
    open_inbox: list[float] = field(default_factory=list)
    warm_note: str = ""  # why the warm requests were not measured
    no_change: list[float] = field(default_factory=list)
    no_change_commands: list[list[str]] = field(default_factory=list)
    query_one: list[float] = field(default_factory=list)
    raw_list: list[float] = field(default_factory=list)  # the no-change request's LIST, raw
    pushed: list[float] = field(default_factory=list)  # no-change with an EventSource open
    pushed_commands: list[list[str]] = field(default_factory=list)
    pushed_open_inbox: list[float] = field(default_factory=list)
    pushed_note: str = ""
    # --compare-rev's warm requests side by side, both out of process: (kind, OLD/NEW) -> s
    side: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: {(k, w): [] for k in SIDE_KINDS for w in (OLD, NEW)}
    )
    side_note: str = ""

    @property
    def synced(self) -> bool:
        return all(s.total is not None for s in self.proxy)


async def measure_first_sync(
    dovecot: DovecotServer,
    result: SizeResult,
    username: str,
    args: argparse.Namespace,
    workdir: Path,
) -> InProcessProxy | None:
    """Alternate raw FETCH and proxy first sync; returns the last proxy, synced and open
    (None when the first sync did not finish within ``--sync-limit``)."""
    cold, seen, octets = raw_fetch(dovecot, username)
    result.raw_cold = cold
    if seen < result.size:
        raise RuntimeError(f"raw FETCH returned {seen} messages, expected {result.size}")
    say(f"  raw FETCH, first (cold): {cold:.2f} s, {octets / 2**20:.0f} MiB")
    repeat = args.repeat if result.size > 10_000 else 3 * args.repeat
    proxy: InProcessProxy | None = None
    for rep in range(repeat):
        elapsed, _, _ = raw_fetch(dovecot, username)
        result.raw.append(elapsed)
        if proxy is not None:
            await proxy.close()
        for old in workdir.glob(f"cache-{result.size}-*"):
            old.unlink()
        cache = workdir / f"cache-{result.size}-{rep}.sqlite3"
        if args.compare_rev and rep % 2 == 0:  # the two revisions take turns going first
            await _compare(dovecot, result, username, args, workdir)
        if args.compare_pure:  # this tree in a process of its own too, as its pure twin
            proxy = None
            sync = await _child_sync(dovecot, result.size, username, args, workdir, {})
        else:
            proxy = await InProcessProxy.start(dovecot, username, cache)
            before = cpu_by_part(dovecot)
            sync = await first_sync(proxy, result.size, args.sync_limit)
            if sync.total is not None:
                say_cpu(before, cpu_by_part(dovecot), sync.total, result.size)
        result.proxy.append(sync)
        total = f"{sync.total:.3f} s" if sync.total is not None else "NOT FINISHED"
        say(
            f"  #{rep + 1}: raw FETCH {elapsed:.3f} s | proxy first sync {total} "
            f"(first batch {sync.first_batch:.3f} s)"
        )
        if args.compare_rev and rep % 2 == 1:
            await _compare(dovecot, result, username, args, workdir)
        if sync.total is None:
            say(f"  the first sync did not finish within --sync-limit {args.sync_limit:g} s")
            if proxy is not None:
                await proxy.close()
            return None
    return proxy


async def _compare(
    dovecot: DovecotServer,
    result: SizeResult,
    username: str,
    args: argparse.Namespace,
    workdir: Path,
) -> None:
    """The first sync of the ``--compare-rev`` package, in a process of its own (this script
    with that revision's ``imapjmap`` first on the path), on the same Dovecot and mail; with
    ``--compare-pure``, of this tree's package run as pure Python."""
    from imapjmap import compiled  # not at the top: see cpu_by_part

    env = {compiled.PURE_ENV: "1"} if args.compare_pure else {}
    sync = await _child_sync(dovecot, result.size, username, args, workdir, env)
    result.compared.append(sync)
    total = f"{sync.total:.3f} s" if sync.total is not None else "NOT FINISHED"
    say(f"      at {args.compare_rev}: first sync {total} (first batch {sync.first_batch:.3f} s)")


async def _child_sync(
    dovecot: DovecotServer,
    size: int,
    username: str,
    args: argparse.Namespace,
    workdir: Path,
    env: dict[str, str],
) -> FirstSync:
    """One first sync in a process of its own (``--child-first-sync``), with ``env`` added."""
    cache = workdir / f"compare-{size}.sqlite3"
    cache.unlink(missing_ok=True)
    job = {"host": dovecot.host, "port": dovecot.port, "user": username, "cache": str(cache),
           "size": size, "limit": args.sync_limit}  # fmt: skip
    tree = str(Path(__file__).resolve().parent.parent)
    path = tree if args.compare_pure else os.pathsep.join([*compare_path(workdir), tree])
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child-first-sync", json.dumps(job),
        env={**os.environ, **env, "PYTHONPATH": path}, stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await child.communicate()
    cache.unlink(missing_ok=True)
    if child.returncode != 0:
        raise RuntimeError(f"the first sync at {compare_rev} failed ({child.returncode})")
    got = json.loads(out.decode().strip().splitlines()[-1])
    return FirstSync(got["first"], got["total"], [])


async def child_first_sync(spec: str) -> None:
    """``--child-first-sync``: one first sync by the ``imapjmap`` this process imports."""
    job = json.loads(spec)
    upstream = Address(job["host"], job["port"])
    proxy = await InProcessProxy.start(upstream, job["user"], Path(job["cache"]))
    try:
        sync = await first_sync(proxy, job["size"], job["limit"])
    finally:
        await proxy.close()
    print(json.dumps({"first": sync.first_batch, "total": sync.total}), flush=True)


# -- warm requests of --compare-rev and this tree, both as `imapjmap serve` ---------------------


@dataclass
class ServeProcess:
    """``imapjmap serve`` in a process of its own, importing the package found on ``path``,
    with a cache of its own; run from the work directory, so that ``python -m`` does not put
    a checkout's package first."""

    process: subprocess.Popen[bytes]
    jmap: Jmap
    cache: Path
    log: Path

    @classmethod
    async def start(
        cls,
        name: str,
        dovecot: DovecotServer,
        path: list[str],
        username: str,
        workdir: Path,
        http: aiohttp.ClientSession,
    ) -> ServeProcess:
        port = _free_port()
        config, cache, log = (workdir / f"{name}{ext}" for ext in (".toml", ".sqlite3", ".log"))
        config.write_text(_serve_config(dovecot, port, cache))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        where = subprocess.run(
            [sys.executable, "-c", "import imapjmap; print(imapjmap.__file__)"],
            env=env, cwd=workdir, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        say(f"  {name}: imapjmap serve of {Path(where).parent}")
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "imapjmap", "serve", "--config", str(config)],
                stdout=out, stderr=out, env=env, cwd=workdir,
            )  # fmt: skip
        serve = cls(process, Jmap(http, f"http://127.0.0.1:{port}", username), cache, log)
        try:
            await _wait_listening(port, process, log)
        except BaseException:
            serve.stop()
            raise
        return serve

    async def fill(self, size: int, limit: float) -> FirstSync:
        """The account's first sync, through HTTP: until INBOX counts every message."""
        started = time.perf_counter()
        await self.jmap.session()
        await self.jmap.find_inbox()
        first = time.perf_counter() - started
        finished, progress = await wait_with_progress(
            _synced_through_http(self.jmap, size),
            self.cache, self.jmap.account_id, size, started, limit,
        )  # fmt: skip
        return FirstSync(first, time.perf_counter() - started if finished else None, progress)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for leftover in self.cache.parent.glob(self.cache.name + "*"):  # -wal, -shm
            leftover.unlink(missing_ok=True)


async def measure_side_by_side(
    dovecot: DovecotServer,
    result: SizeResult,
    args: argparse.Namespace,
    workdir: Path,
) -> None:
    """Open inbox and no-change requests of the ``--compare-rev`` package and of this tree,
    each an ``imapjmap serve`` of its own with its own warm cache of the same account on the
    same Dovecot, the requests alternated between the two (which goes first alternates too)."""
    size, username = result.size, f"u{result.size}"
    tree = str(Path(__file__).resolve().parent.parent)
    paths = {OLD: compare_path(workdir), NEW: [tree]}
    async with aiohttp.ClientSession() as http:
        serves: dict[str, ServeProcess] = {}
        try:
            for who, path in paths.items():
                name = f"serve-{who}-{size}"
                serves[who] = await ServeProcess.start(name, dovecot, path, username, workdir, http)
                sync = await serves[who].fill(size, args.sync_limit)
                if sync.total is None:
                    result.side_note = f"not measured: the first sync of {who} did not finish"
                    return
                say(f"  {who}: synced through HTTP in {sync.total:.1f} s")
            for serve in serves.values():  # warm-up: caches, connections, the examined INBOX
                for _ in range(5):
                    await serve.jmap.no_change()
                    await serve.jmap.open_inbox()
            for i in range(args.requests):
                order = (OLD, NEW) if i % 2 == 0 else (NEW, OLD)
                for who in order:
                    jmap = serves[who].jmap
                    started = time.perf_counter()
                    got = await jmap.open_inbox()
                    result.side[("open inbox", who)].append(time.perf_counter() - started)
                    if got != min(50, size):
                        raise RuntimeError(f"open inbox of {who} returned {got} at {size}")
                    result.side[("no-change", who)].append(await timed(jmap.no_change))
        finally:
            for serve in serves.values():
                serve.stop()


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


def raw_list_client(server: DovecotServer, username: str) -> RawImap:
    client = RawImap(server.host, server.port)
    client.command(f'LOGIN "{username}" "{PASSWORD}"')
    client.command("ENABLE CONDSTORE QRESYNC")
    client.command(RAW_LIST)
    return client


async def measure_warm(
    dovecot: DovecotServer,
    proxies: dict[int, InProcessProxy],
    results: dict[int, SizeResult],
    commands: CommandLog,
    requests: int,
) -> None:
    """Open inbox and no-change requests, and the raw LIST-STATUS that a no-change request
    costs upstream, the sizes interleaved request by request."""
    missing = email_methods_missing()
    raw = {size: raw_list_client(dovecot, f"u{size}") for size in proxies}
    for proxy in proxies.values():
        await proxy.jmap.no_change()  # warm-up
        if not missing:
            await proxy.jmap.open_inbox()
            await proxy.jmap.query_one()
    try:
        for _ in range(requests):
            for size, proxy in proxies.items():
                await _warm_round(proxy, results[size], raw[size], commands, missing)
    finally:
        for client in raw.values():
            client.close()
    await measure_with_push(proxies, results, commands, requests)


async def measure_with_push(
    proxies: dict[int, InProcessProxy],
    results: dict[int, SizeResult],
    commands: CommandLog,
    requests: int,
) -> None:
    """No-change and open-inbox requests while each account has an EventSource open: the
    proxy's upstream watcher then reports changes, and a request need not ask the server
    (docs/design.md, "Freshness")."""
    missing = email_methods_missing()
    streams: list[aiohttp.ClientResponse] = []
    try:
        for proxy in proxies.values():
            streams.append(await proxy.jmap.open_event_source())
    except (JmapError, aiohttp.ClientError) as exc:
        for result in results.values():
            result.pushed_note = f"not measured: {exc}"
        for stream in streams:
            stream.close()
        return
    try:
        await asyncio.sleep(PUSH_SETTLE)  # the watchers connect
        for proxy in proxies.values():
            for _ in range(3):
                await proxy.jmap.no_change()
        for _ in range(requests):
            for size, proxy in proxies.items():
                commands.take()
                results[size].pushed.append(await timed(proxy.jmap.no_change))
                results[size].pushed_commands.append(commands.take(proxy.jmap.username))
                if not missing:
                    results[size].pushed_open_inbox.append(await timed(proxy.jmap.open_inbox))
    finally:
        for stream in streams:
            stream.close()


async def _warm_round(
    proxy: InProcessProxy,
    result: SizeResult,
    raw: RawImap,
    commands: CommandLog,
    missing: list[str],
) -> None:
    started = time.perf_counter()
    raw.command(RAW_LIST)
    result.raw_list.append(time.perf_counter() - started)
    commands.take()
    result.no_change.append(await timed(proxy.jmap.no_change))
    result.no_change_commands.append(commands.take(proxy.jmap.username))
    if len(result.no_change_commands[-1]) > NO_CHANGE_ROUND_TRIPS:
        say(f"  no-change request at {result.size:,} sent {result.no_change_commands[-1]}")
    if not missing:
        size = result.size
        result.query_one.append(await timed(proxy.jmap.query_one))
        started = time.perf_counter()
        got = await proxy.jmap.open_inbox()
        result.open_inbox.append(time.perf_counter() - started)
        if got != min(50, size):
            raise RuntimeError(f"open inbox returned {got} Emails at {size}")


# -- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    value: str
    target: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("pass" if self.ok else "MISS")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _judge(judged: bool, target: str, ok: bool) -> dict[str, Any]:
    return {"target": target, "ok": ok} if judged else {}


def _sync_rows(r: SizeResult, judged: bool, limit: float) -> list[Row]:
    n = f"{r.size:,}"
    raw = statistics.median(r.raw)
    first = statistics.median(s.first_batch for s in r.proxy)
    target = f"<= {FIRST_SYNC_RATIO}"
    rows = [Row(f"raw UID FETCH 1:*, {n} (median, warm)", f"{raw:.3f} s")]
    if r.synced:
        sync = statistics.median(s.total for s in r.proxy if s.total is not None)
        ratio = sync / raw
        rows += [
            Row(f"proxy first sync, {n} (median)", f"{sync:.3f} s"),
            Row(
                f"first sync / raw FETCH, {n}",
                f"{ratio:.2f}x",
                **_judge(judged, target, ratio <= FIRST_SYNC_RATIO),
            ),
        ]
    else:
        cached = r.proxy[-1].progress[-1][1] if r.proxy[-1].progress else 0
        rows += [
            Row(f"proxy first sync, {n}", f"> {limit:g} s ({cached:,} cached by then)"),
            Row(
                f"first sync / raw FETCH, {n}",
                f"> {limit / raw:.0f}x (unfinished)",
                **_judge(judged, target, False),
            ),
        ]
    rows.append(Row(f"time to first batch, {n} (median)", f"{first:.3f} s"))
    done = [s.total for s in r.compared if s.total is not None]
    if r.compared and len(done) == len(r.compared):
        rev = f"at {compare_rev}"
        before = statistics.median(done)
        rows += [
            Row(f"proxy first sync {rev}, {n} (median)", f"{before:.3f} s"),
            Row(f"first sync / raw FETCH {rev}, {n}", f"{before / raw:.2f}x"),
            Row(
                f"time to first batch {rev}, {n} (median)",
                f"{statistics.median(s.first_batch for s in r.compared):.3f} s",
            ),
        ]
    return rows


def _warm_rows(r: SizeResult, judged: bool) -> list[Row]:
    n = f"{r.size:,}"
    if not r.no_change:
        return [Row(f"warm requests, {n}", r.warm_note or "not measured")]
    rows: list[Row] = []
    if r.open_inbox:
        median, high = statistics.median(r.open_inbox), p95(r.open_inbox)
        target = f"<= {OPEN_INBOX_MS:.0f} ms"
        rows += [
            Row(
                f"open inbox median, {n}",
                _ms(median),
                **_judge(judged, target, median * 1000 <= OPEN_INBOX_MS),
            ),
            Row(
                f"open inbox p95, {n}",
                _ms(high),
                **_judge(judged, target, high * 1000 <= OPEN_INBOX_MS),
            ),
        ]
    else:
        rows.append(Row(f"open inbox, {n}", r.warm_note or "not measured"))
    rows.append(Row(f"no-change Mailbox/get median, {n}", _ms(statistics.median(r.no_change))))
    rows.append(Row(f"  its LIST-STATUS sent raw, {n}", _ms(statistics.median(r.raw_list))))
    if r.query_one:
        rows.append(Row(f"no-change Email/query limit 1, {n}", _ms(statistics.median(r.query_one))))
    if r.pushed:
        trips = [len(c) for c in r.pushed_commands]
        rows.append(
            Row(
                f"no-change Mailbox/get, EventSource open, {n}",
                f"{_ms(statistics.median(r.pushed))}, {max(trips)} IMAP round trips (max; "
                f"{sum(1 for t in trips if t)} of {len(trips)} made any)",
            )
        )
    elif r.pushed_note:
        rows.append(Row(f"no-change, EventSource open, {n}", r.pushed_note))
    if r.pushed_open_inbox:
        median, high = statistics.median(r.pushed_open_inbox), p95(r.pushed_open_inbox)
        rows.append(Row(f"open inbox, EventSource open, {n}", f"{_ms(median)}, p95 {_ms(high)}"))
    return rows


def _side_rows(r: SizeResult, judged: bool) -> list[Row]:
    """--compare-rev's warm requests: old -> new medians (p95), and new / old of the medians."""
    n = f"{r.size:,}"
    if r.side_note:
        return [Row(f"warm requests at {compare_rev} side by side, {n}", r.side_note)]
    rows: list[Row] = []
    for kind in SIDE_KINDS:
        old, new = r.side[(kind, OLD)], r.side[(kind, NEW)]
        if not old or not new:
            continue
        ratio = statistics.median(new) / statistics.median(old)
        rows.append(
            Row(
                f"{kind} at {compare_rev} -> now, both serve, {n} (median, p95; {len(new)} each)",
                f"{_ms(statistics.median(old))} -> {_ms(statistics.median(new))} "
                f"(p95 {_ms(p95(old))} -> {_ms(p95(new))}): {ratio:.2f}x",
                **_judge(judged, f"<= {SIDE_RATIO:.2f}x", ratio <= SIDE_RATIO),
            )
        )
    return rows


def _no_change_rows(results: list[SizeResult]) -> list[Row]:
    measured = [r for r in results if r.no_change]
    rows: list[Row] = []
    largest, smallest = results[-1], results[0]
    if largest is not smallest and largest.no_change and smallest.no_change:
        ratio = statistics.median(largest.no_change) / statistics.median(smallest.no_change)
        rows.append(
            Row(
                f"no-change request {largest.size:,} / {smallest.size:,}",
                f"{ratio:.2f}x",
                f"<= {NO_CHANGE_RATIO}",
                ratio <= NO_CHANGE_RATIO,
            )
        )
        if largest.query_one and smallest.query_one:
            q_ratio = statistics.median(largest.query_one) / statistics.median(smallest.query_one)
            rows.append(
                Row(
                    f"no-change Email/query {largest.size:,} / {smallest.size:,}", f"{q_ratio:.2f}x"
                )
            )
    elif largest is not smallest:
        rows.append(
            Row(
                f"no-change request {largest.size:,} / {smallest.size:,}",
                "not measured (no synced account)",
                f"<= {NO_CHANGE_RATIO}",
                False,
            )
        )
    if largest is not smallest and largest.pushed and smallest.pushed:
        ratio = statistics.median(largest.pushed) / statistics.median(smallest.pushed)
        rows.append(
            Row(
                f"no-change, EventSource open, {largest.size:,} / {smallest.size:,}",
                f"{ratio:.2f}x",
            )
        )
    if measured:
        lists = [c for r in measured for c in r.no_change_commands]
        trips = [len(c) for c in lists]
        over = [c for c in lists if len(c) > NO_CHANGE_ROUND_TRIPS]
        worst = max(lists, key=len)
        rows.append(
            Row(
                "IMAP round trips per no-change request (max)",
                f"{max(trips)} (median {statistics.median(trips):g}; {len(over)} of "
                f"{len(lists)} over {NO_CHANGE_ROUND_TRIPS}; the most: {' '.join(worst)})",
                f"<= {NO_CHANGE_ROUND_TRIPS}",
                max(trips) <= NO_CHANGE_ROUND_TRIPS,
            )
        )
    return rows


def _memory_rows(memory: Memory, size: int) -> list[Row]:
    target = f"<= {PEAK_RSS_MB:.0f} MB"
    if memory.sync.total is not None:
        peak = Row(
            f"peak RSS (VmHWM) of imapjmap serve, {size:,} synced",
            f"{memory.peak_mb:.0f} MB",
            target,
            memory.peak_mb <= PEAK_RSS_MB,
        )
        took = f"{memory.sync.total:.1f} s"
    else:  # a lower bound: it only counts when it is over the target already
        peak = Row(
            f"peak RSS (VmHWM) of imapjmap serve, {memory.synced:,} of {size:,} synced",
            f">= {memory.peak_mb:.0f} MB",
            target,
            False if memory.peak_mb > PEAK_RSS_MB else None,
        )
        took = f"not finished in {memory.sync.progress[-1][0]:.0f} s"
    return [
        peak,
        Row("  RSS after start-up / at the end", f"{memory.start_mb:.0f} / {memory.now_mb:.0f} MB"),
        Row("  first sync in that process", took),
    ]


def report(results: list[SizeResult], memory: Memory | None, limit: float) -> list[Row]:
    largest = results[-1]
    rows: list[Row] = []
    for r in results:
        rows += _sync_rows(r, r is largest, limit) + _warm_rows(r, r is largest)
        rows += _side_rows(r, r is largest)
    rows += _no_change_rows(results)
    if memory is not None:
        rows += _memory_rows(memory, largest.size)
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    value_width = max(len(r.value) for r in rows)
    say("")
    say(f"{'measurement':<{width}}  {'value':<{value_width}}  {'target':<10}  result")
    say("-" * (width + value_width + 22))
    for r in rows:
        say(f"{r.name:<{width}}  {r.value:<{value_width}}  {r.target:<10}  {r.verdict}")


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    dovecot = subprocess.run(
        ["dovecot", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    here = Path(__file__).resolve().parent
    git = subprocess.run(
        ["git", "-C", str(here), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()}; Dovecot {dovecot or '?'}; code {git or '?'}"
    )


# -- main --------------------------------------------------------------------------------------


async def run(
    dovecot: DovecotServer,
    sizes: list[int],
    args: argparse.Namespace,
    seeds: dict[int, SeedStats],
    workdir: Path,
) -> list[Row]:
    commands = CommandLog()
    commands.install()
    results = {n: SizeResult(n, seeds[n]) for n in sizes}
    proxies: dict[int, InProcessProxy] = {}
    try:
        for n in sizes:
            say(f"first sync at {n:,} messages (alternating with the raw FETCH):")
            proxy = await measure_first_sync(dovecot, results[n], f"u{n}", args, workdir)
            if args.compare_pure:
                results[n].warm_note = "not measured (--compare-pure)"
            elif proxy is None:
                results[n].warm_note = "not measured: the first sync did not finish"
            else:
                proxies[n] = proxy
        if args.first_sync_only or args.compare_pure:  # no proxy of this process to ask
            return report([results[n] for n in sizes], None, args.sync_limit)
        missing = email_methods_missing()
        if missing:
            say(f"NOTE: {', '.join(missing)} not registered yet: open inbox is NOT measured")
            for result in results.values():
                result.warm_note = f"not measured: {', '.join(missing)} not registered"
        say(f"warm requests: {args.requests} of each kind per size, interleaved")
        await measure_warm(dovecot, proxies, results, commands, args.requests)
    finally:
        for proxy in proxies.values():
            await proxy.close()
    if args.compare_rev:
        for n in proxies:  # the sizes whose first sync finished in this process
            say(f"warm requests at {n:,}, {compare_rev} and this tree side by side, both serve:")
            await measure_side_by_side(dovecot, results[n], args, workdir)
    memory = None
    if not args.skip_memory:
        n = sizes[-1]
        say(f"peak RSS: imapjmap serve as its own process, first sync of {n:,} messages")
        memory = await measure_memory(dovecot, f"u{n}", n, workdir, args.sync_limit)
    return report([results[n] for n in sizes], memory, args.sync_limit)


compare_rev = ""  # the short commit of --compare-rev, once extracted


def extract_package(rev: str, target: Path) -> str:
    """The ``imapjmap`` package at git revision ``rev`` under ``target``, and beside it (in
    ``target``-deps) what that revision depends on and this environment lacks (aioimaplib,
    before 09c27cd); its short commit."""
    repo = Path(__file__).resolve().parent.parent
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", rev],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", sha, "imapjmap"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    pyproject = subprocess.run(
        ["git", "-C", str(repo), "show", f"{sha}:pyproject.toml"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    needed = tomllib.loads(pyproject.decode())["project"]["dependencies"]
    missing = [spec for spec in needed if not _installed(spec)]
    if missing:
        say(f"installing what {sha} needs and this environment lacks: {', '.join(missing)}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", f"{target}-deps", *missing],
            check=True,
        )  # fmt: skip
    return sha


def _installed(spec: str) -> bool:
    name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def compare_path(workdir: Path) -> list[str]:
    """Where the ``--compare-rev`` package and its extra dependencies are, first on the path."""
    return [str(workdir / "compare"), str(workdir / "compare-deps")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="INBOX sizes (default %(default)s)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="first syncs per size above 10,000 (3x that below)"
    )
    parser.add_argument("--requests", type=int, default=50, help="warm requests of each kind")
    parser.add_argument(
        "--sync-limit",
        type=float,
        default=300.0,
        help="give up a first sync after this many seconds (%(default)g)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="no separate-process RSS run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--first-sync-only", action="store_true", help="no warm requests, no RSS run"
    )
    parser.add_argument(
        "--compare-rev",
        metavar="REV",
        help="also time the first syncs of the imapjmap package at this git revision, "
        "alternating with this tree's",
    )
    parser.add_argument(
        "--compare-pure",
        action="store_true",
        help="compare this tree's compiled parsing modules (python3 -m imapjmap.build_ext) "
        "with the same tree as pure Python, each first sync in a process of its own",
    )
    parser.add_argument("--child-first-sync", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_first_sync:
        asyncio.run(child_first_sync(args.child_first_sync))
        return 0
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",")})
    say(f"read path benchmark: {describe_machine()}")
    say(f"command: python3 bench/read_path.py {' '.join(sys.argv[1:])}")
    ensure_dovecot_installed()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-bench-"))
    global compare_rev
    if args.compare_pure:
        args.compare_rev = compare_rev = "IMAPJMAP_PURE=1"
        from imapjmap import compiled  # not at the top: see cpu_by_part

        say(f"this tree: {compiled.describe()}; compared with itself as pure Python")
    elif args.compare_rev:
        compare_rev = extract_package(args.compare_rev, workdir / "compare")
        say(f"compared with the imapjmap package at {compare_rev}")
    dovecot = DovecotServer.start(workdir / "dovecot")
    try:
        seeds: dict[int, SeedStats] = {}
        for n in sizes:
            dovecot.add_user(f"u{n}", PASSWORD)
            stats = seed_inbox(dovecot, f"u{n}", n)
            seeds[n] = stats
            say(
                f"seeded {n:,} messages in {stats.seconds:.1f} s: mean {stats.mean_kb:.1f} KB, "
                f"largest {stats.largest / 2**20:.1f} MB, {stats.with_attachment:,} with "
                f"attachments, {stats.replies:,} replies"
            )
        rows = asyncio.run(run(dovecot, sizes, args, seeds, workdir))
    finally:
        dovecot.stop()
        if args.keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
