"""A million messages beside 100,000: what a user of a very big INBOX gets.

Run by hand (the first sync of 1,000,000 messages takes many minutes of CPU; on a shared
2-core machine plan for about an hour)::

    python3 bench/million.py --sizes 100000,1000000

It starts a private Dovecot, seeds one user per size (``mailgen``, the mail of
``read_path.py``, written by one process per core), and runs one ``imapjmap serve`` process
per size, each with a fresh cache.  Then, side by side in one run:

1. the newest 1,000 usable: seconds from the first request (session, ``Mailbox/get``) until
   an "open inbox" request (``read_path.open_inbox_calls``) returned its 50 Emails;
2. the whole first sync, until ``Mailbox/get`` counts every message;
3. warm "open inbox" median and p95, and the no-change request (``Mailbox/get`` with no
   ids), the sizes interleaved request by request;
4. push latency (``push_latency.Bench``): an APPEND, a flag change and an expunge by another
   client until the EventSource ``state`` event;
5. the cache on disk (the SQLite file with its WAL) and the peak RSS (VmHWM) of each
   ``imapjmap serve`` process, and of its parsing workers;
6. last, ``Email/query`` with a text filter (``inMailbox`` + ``text``), answered by the
   upstream's ``UID SEARCH``: Dovecot without a full-text index reads every message for it,
   so a query not answered within ``--text-timeout`` is given up.  Twice, interleaved: with
   ``calculateTotal`` (the whole search) and without (the first page, which the proxy finds
   by searching the newest messages first); the page must be the whole search's first 50.

``--workdir DIR`` keeps the Dovecot and its mail in DIR and reuses a user already seeded
there (seeding 1,000,000 messages writes about 17 GB), so a second run starts at the sync.
With it the run can go in parts: ``--seed-only``; ``--newest-only`` (1. alone);
``--sync-only`` (1. and 2., the caches kept) then ``--reuse-cache`` (3. to 6. on them,
or 6. alone with ``--text-only``, or without 6. with ``--no-text``;
with ``--trace``, push alone in this process, with the IMAP commands the proxy sent); and
``--dovecot-costs``: what Dovecot itself takes for the commands of a first request and of
a push refresh, and until a watcher hears a change, from plain clients.

Dovecot runs with ``maildir_very_dirty_syncs = yes``, as the README advises for a Maildir
folder this big; ``--dovecot-conf ''`` measures Dovecot's default instead (the same
directory and mail, so the two can alternate on one seeding).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
from mailgen import seed_inbox
from push_latency import KINDS, Bench, SizeRun, Trace
from push_latency import message as push_message
from read_path import (
    PASSWORD,
    InProcessProxy,
    Jmap,
    JmapError,
    _free_port,
    _proc_status_mb,
    _serve_config,
    _synced_through_http,
    _wait_listening,
    describe_machine,
    open_inbox_calls,
    p95,
    say,
    wait_with_progress,
)

from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.http import views
from imapjmap.upstream.imap_watch import NOTIFY_SET

_BIG_MAILDIR_CONF: Final = "service imap {\n  vsz_limit = 4G\n}\n"
# what the README advises for a Maildir folder of this size: cur/ is read again only when it
# changed in a way Dovecot did not cause (without it, a million-message INBOX was read
# again at nearly every command: 133 messages a second filled, and 2.6-4.2 s for a
# listing after a flag change)
_MAILDIR_SYNCS: Final = "maildir_very_dirty_syncs = yes"
TEXT: Final = "invoice"  # a subject word of about one thread in twenty (mailgen._TOPICS)
PEAK_RSS_MB: Final = 300.0
NEWEST_USABLE_S: Final = 1.0
PUSH_P95_S: Final = 1.0
_HEARD_WITHIN: Final = 60.0  # a plain watcher given up on a change after this


@dataclass
class Serve:
    """One ``imapjmap serve`` process with one account."""

    size: int
    process: subprocess.Popen[bytes]
    http: aiohttp.ClientSession
    jmap: Jmap
    cache: Path
    started_mb: float
    newest: float = 0.0  # seconds until the newest 50 were served
    sync: float | None = None  # seconds of the whole first sync; None: not within the limit
    synced: int = 0
    open_inbox: list[float] = field(default_factory=list)
    no_change: list[float] = field(default_factory=list)
    text: list[float] = field(default_factory=list)
    text_note: str = ""
    text_hits: int = 0
    text_ids: list[str] = field(default_factory=list)  # the whole search's first 50
    page: list[float] = field(default_factory=list)  # the same without calculateTotal
    page_note: str = ""
    raw_text: list[float] = field(default_factory=list)  # a plain client's UID SEARCH TEXT
    push: SizeRun | None = None
    cache_mb: float = 0.0
    peak_mb: float = 0.0
    worker_peak_mb: float = 0.0
    reused: bool = False  # on a kept cache (--reuse-cache)

    @classmethod
    async def start(
        cls, dovecot: DovecotServer, size: int, workdir: Path, *, fresh: bool = True
    ) -> Serve:
        port = _free_port()
        cache = workdir / f"serve-{size}.sqlite3"
        for old in workdir.glob(f"serve-{size}.sqlite3*") if fresh else ():
            old.unlink()
        config = workdir / f"serve-{size}.toml"
        config.write_text(_serve_config(dovecot, port, cache))
        log = workdir / f"serve-{size}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "imapjmap", "serve", "--config", str(config)],
                stdout=out,
                stderr=out,
            )
        await _wait_listening(port, process, log)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        jmap = Jmap(http, f"http://127.0.0.1:{port}", f"u{size}")
        return cls(size, process, http, jmap, cache, _proc_status_mb(process.pid, "VmRSS"))

    async def open_inbox_once(self) -> float:
        started = time.perf_counter()
        got = await self.jmap.request(open_inbox_calls(self.jmap.account_id, self.jmap.inbox_id))
        if len(got[1][1]["list"]) != 50:
            raise RuntimeError(f"open inbox at {self.size:,}: {len(got[1][1]['list'])} Emails")
        return time.perf_counter() - started

    async def first_sync(self, limit: float) -> None:
        started = time.perf_counter()
        await self.jmap.session()
        await self.jmap.find_inbox()
        await self.open_inbox_once()
        self.newest = time.perf_counter() - started
        say(f"  {self.size:,}: the newest 50 served after {self.newest:.2f} s")
        if limit <= 0:
            return
        finished, _ = await wait_with_progress(
            _synced_through_http(self.jmap, self.size),
            self.cache,
            self.jmap.account_id,
            self.size,
            started,
            limit,
        )
        self.sync = time.perf_counter() - started if finished else None
        say(f"  {self.size:,}: first sync " + (f"{self.sync:.0f} s" if finished else "unfinished"))

    async def reopen(self) -> None:
        """On a kept cache: the session and INBOX, and the first sync said done."""
        started = time.perf_counter()
        await self.jmap.session()
        await self.jmap.find_inbox()
        self.newest = time.perf_counter() - started
        got = await self.jmap.mailbox_get([self.jmap.inbox_id], ["totalEmails"])
        if got[0]["totalEmails"] < self.size:
            raise RuntimeError(f"the kept cache of {self.size:,} is not synced: {got}")
        self.sync = 0.0
        self.reused = True  # the first request and sync are not this run's

    async def text_query(self, timeout: float, *, total: bool = True) -> None:
        """The text query, with ``calculateTotal`` (the whole search) or without (a page)."""
        args = {
            "accountId": self.jmap.account_id,
            "filter": {"inMailbox": self.jmap.inbox_id, "text": TEXT},
            "sort": [{"property": "receivedAt", "isAscending": False}],
            "limit": 50,
            "calculateTotal": total,
        }
        started = time.perf_counter()
        note = ""
        try:
            async with asyncio.timeout(timeout):
                got = await self.jmap.responses([["Email/query", args, "t"]])
        except TimeoutError:
            note = f"no answer within {timeout:g} s"
        elapsed = time.perf_counter() - started
        if not note and got[0][0] == "error":
            note = f"{got[0][1].get('type')} after {elapsed:.1f} s"
        if note:
            if total:
                self.text_note = note
            else:
                self.page_note = note
            return
        body = got[0][1]
        if total:
            self.text.append(elapsed)
            self.text_hits = int(body.get("total", 0))
            self.text_ids = list(body["ids"])
            return
        self.page.append(elapsed)
        if self.text_ids and body["ids"] != self.text_ids:
            self.page_note = "its ids are not the whole search's first 50"

    def measure_disk_and_memory(self) -> None:
        self.cache_mb = sum(p.stat().st_size for p in self.cache.parent.glob(self.cache.name + "*"))
        self.cache_mb /= 2**20
        self.peak_mb = _proc_status_mb(self.process.pid, "VmHWM")
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                with contextlib.suppress(OSError, RuntimeError):
                    self.worker_peak_mb = max(
                        self.worker_peak_mb, _proc_status_mb(int(pid), "VmHWM")
                    )

    async def close(self) -> None:
        await self.http.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def seeded(dovecot: DovecotServer, username: str, size: int) -> bool:
    """Whether a kept work directory holds the user's mail already (push samples may have
    left a message more)."""
    if username not in dovecot.users():
        return False
    status = dovecot.doveadm("-f", "tab", "mailbox", "status", "-u", username, "messages", "INBOX")
    return int(status.splitlines()[-1].rpartition("\t")[2]) >= size


def seed(dovecot: DovecotServer, size: int) -> None:
    username = f"u{size}"
    if seeded(dovecot, username, size):
        say(f"{size:,}: already seeded")
        return
    if username not in dovecot.users():
        dovecot.add_user(username, PASSWORD)
    stats = seed_inbox(dovecot, username, size)
    say(
        f"{size:,}: seeded in {stats.seconds:.0f} s, mean {stats.mean_kb:.1f} KB, "
        f"{stats.total_bytes / 2**30:.1f} GiB"
    )


async def run(dovecot: DovecotServer, sizes: list[int], args: argparse.Namespace) -> list[Serve]:
    workdir = Path(args.workdir)
    serves: list[Serve] = []
    try:
        for size in sizes:
            await start_serve(dovecot, size, workdir, args, serves)
        if args.trace:
            for serve in serves:
                await serve.close()
            for size in sizes:
                await trace_push(dovecot, size, workdir, args.samples)
            serves.clear()
        elif not args.newest_only and not args.sync_only:
            ready = [s for s in serves if s.sync is not None]
            if not args.text_only:
                await measure_warm(ready, args)
                await measure_push(dovecot, ready, args.samples)
                for serve in serves:
                    serve.measure_disk_and_memory()
            if args.no_text:
                return serves
            # last: without a full-text index Dovecot reads every message for it
            say(
                f"Email/query with text {TEXT!r}: {args.text_queries} per size and way, interleaved"
            )
            for _ in range(args.text_queries):
                for serve in ready:
                    await serve.text_query(args.text_timeout)
                    await serve.text_query(args.text_timeout, total=False)
                    serve.raw_text.append(
                        await asyncio.to_thread(raw_text_search, dovecot, serve.size)
                    )
    finally:
        for serve in serves:
            await serve.close()
    return serves


async def start_serve(
    dovecot: DovecotServer,
    size: int,
    workdir: Path,
    args: argparse.Namespace,
    serves: list[Serve],
) -> None:
    """One size's serve, appended to ``serves``: synced first, or on the kept cache."""
    if args.reuse_cache:
        say(f"{size:,}: imapjmap serve on the cache a first sync left")
        serve = await Serve.start(dovecot, size, workdir, fresh=False)
        serves.append(serve)
        await serve.reopen()
        return
    say(f"first sync of {size:,} in its own imapjmap serve:")
    serve = await Serve.start(dovecot, size, workdir)
    serves.append(serve)
    await serve.first_sync(0 if args.newest_only else args.sync_limit)
    if args.sync_only:
        serve.measure_disk_and_memory()
    if args.newest_only or args.sync_only:
        await serve.close()


async def measure_warm(ready: list[Serve], args: argparse.Namespace) -> None:
    """Open inbox and no-change requests, the sizes interleaved."""
    for serve in ready:
        serve.synced = serve.size
        await serve.jmap.no_change()  # warm-up
        await serve.open_inbox_once()
    say(f"warm requests: {args.requests} of each kind per size, interleaved")
    for _ in range(args.requests):
        for serve in ready:
            serve.open_inbox.append(await serve.open_inbox_once())
            started = time.perf_counter()
            await serve.jmap.no_change()
            serve.no_change.append(time.perf_counter() - started)


async def measure_push(dovecot: DovecotServer, ready: list[Serve], samples: int) -> None:
    for serve in ready:
        say(f"push latency at {serve.size:,}: {samples} samples of each kind")
        try:
            bench = Bench(dovecot, serve.jmap, serve.size, Trace())
            serve.push = await bench.measure(samples)
        except (JmapError, aiohttp.ClientError, TimeoutError, AssertionError) as exc:
            say(f"  not measured: {exc!r}")


async def trace_newest(dovecot: DovecotServer, size: int, workdir: Path) -> None:
    """The first request on a fresh cache, in this process, with the IMAP commands the
    proxy sent and when; the fill behind it is stopped once the newest 50 are served."""
    cache = workdir / f"trace-{size}.sqlite3"
    _remove_cache(cache)
    say(f"the first request at {size:,} with the proxy's IMAP commands, on a fresh cache")
    trace = Trace(on=True)
    trace.install()
    proxy = await InProcessProxy.start(dovecot, f"u{size}", cache)
    try:
        started = time.perf_counter()
        await proxy.jmap.session()
        await proxy.jmap.find_inbox()
        steps = [("session and Mailbox/get", time.perf_counter() - started)]
        got = await proxy.jmap.request(open_inbox_calls(proxy.jmap.account_id, proxy.jmap.inbox_id))
        steps.append(("open inbox", time.perf_counter() - started))
        if len(got[1][1]["list"]) != 50:
            raise RuntimeError(f"open inbox at {size:,}: {len(got[1][1]['list'])} Emails")
        trace.show(started)
        for name, at in steps:
            say(f"  {name} done after {at:.2f} s")
    finally:
        await proxy.close()
        _remove_cache(cache)


def _remove_cache(cache: Path) -> None:
    for old in cache.parent.glob(cache.name + "*"):  # with its -wal and -shm
        old.unlink(missing_ok=True)


async def trace_push(dovecot: DovecotServer, size: int, workdir: Path, samples: int) -> None:
    """Push samples on the kept cache in this process, each with the IMAP commands the
    proxy sent and when (``push_latency.Trace``)."""
    say(f"push at {size:,} with the proxy's IMAP commands: {samples} samples of each kind")
    proxy = await InProcessProxy.start(dovecot, f"u{size}", workdir / f"serve-{size}.sqlite3")
    try:
        await proxy.jmap.session()
        await proxy.jmap.find_inbox()
        push = proxy.server.app[views.SERVICES].push

        def watching() -> bool:
            return any(w.mode in ("notify", "idle") for w in push.watchers.values())

        trace = Trace(on=True)
        trace.install()
        bench = Bench(dovecot, proxy.jmap, size, trace, watching)
        run = await bench.measure(samples)
        for kind in KINDS:
            say(f"  {kind}: median (p95) {_median_p95(run.latencies[kind])}")
            split = run.split[kind]
            if split:
                say(
                    "    until heard "
                    + _median_p95([u for u, _ in split])
                    + ", then until the event "
                    + _median_p95([r for _, r in split])
                )
    finally:
        await proxy.close()


def raw_text_search(dovecot: DovecotServer, size: int) -> float:
    """Seconds of a plain client's ``UID SEARCH TEXT`` of the text query's word in INBOX,
    already examined: what Dovecot itself takes for the proxy's whole search."""
    client = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=3600)
    try:
        client.login(f"u{size}", PASSWORD)
        client.select("INBOX", readonly=True)
        started = time.perf_counter()
        typ, data = client.uid("SEARCH", "TEXT", TEXT)
        if typ != "OK":
            raise RuntimeError(f"UID SEARCH TEXT {TEXT}: {typ} {data}")
        return time.perf_counter() - started
    finally:
        client.logout()


def _timed(client: imaplib.IMAP4, what: str, *args: str) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    typ, data = client._simple_command(what, *args)
    took = time.perf_counter() - started
    if typ != "OK":
        raise RuntimeError(f"{what} {args}: {typ} {data}")
    if what in ("EXAMINE", "UNSELECT"):  # imaplib follows only its own select()
        client.state = "SELECTED" if what == "EXAMINE" else "AUTH"
    return took, [*data, *client.untagged_responses.get("ESEARCH", [])]


def dovecot_costs(dovecot: DovecotServer, size: int) -> None:
    """What Dovecot itself takes for the commands of a first request and of a refresh,
    from a plain client (``imaplib``), each command timed alone."""
    say(f"Dovecot's own cost at {size:,}, plain client (load {load()}):")
    client = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=600)
    try:
        client.login(f"u{size}", PASSWORD)
        client._simple_command("ENABLE", "CONDSTORE QRESYNC")
        items = "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ X-GUID)"
        listing = f'"" "*" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN STATUS {items})'
        steps = [
            ("STATUS INBOX (X-GUID)", "STATUS", "INBOX", "(X-GUID)"),
            ("STATUS INBOX (all the refresh's items)", "STATUS", "INBOX", items),
            ("LIST-STATUS, nothing selected", "LIST", listing),
            ("EXAMINE INBOX", "EXAMINE", "INBOX"),
            ("LIST-STATUS, INBOX selected", "LIST", listing),
            ("NOOP", "NOOP"),
            ("UID SEARCH RETURN (ALL) ALL", "UID", "SEARCH", "RETURN", "(ALL)", "ALL"),
            (
                "UID SEARCH RETURN (ALL) of the newest 1,000 by number",
                "UID",
                "SEARCH",
                "RETURN",
                "(ALL)",
                f"{max(size - 999, 1)}:*",
            ),
            ("UID SEARCH RETURN (ALL) UID 1:*", "UID", "SEARCH", "RETURN", "(ALL)", "UID", "1:*"),
            ("UNSELECT", "UNSELECT"),
            ("EXAMINE INBOX again", "EXAMINE", "INBOX"),
            ("UID FETCH 1:* (FLAGS) (CHANGEDSINCE highest)", "UID", "FETCH", "1:*", "(FLAGS)"),
        ]
        highest: list[str] = []
        for name, verb, *args in steps:
            if name.startswith("UID FETCH"):
                modseq = int(highest[-1]) if highest else 1
                args = [*args, f"(CHANGEDSINCE {modseq} VANISHED)"]
            client.untagged_responses.clear()
            took, _ = _timed(client, verb, *args)
            if verb == "EXAMINE":
                highest = [
                    str(r).split("HIGHESTMODSEQ ")[1].split("]")[0]
                    for r in client.untagged_responses.get("OK", [])
                    if b"HIGHESTMODSEQ" in r
                ]
            say(f"  {took * 1000:9.1f} ms  {name}")
    finally:
        client.logout()


class _Watcher:
    """A plain client doing what the proxy's watcher does: INBOX examined, NOTIFY set,
    IDLE; ``heard()`` waits for the next untagged EXISTS or FETCH."""

    def __init__(self, dovecot: DovecotServer, username: str) -> None:
        self.sock = socket.create_connection((dovecot.host, dovecot.port), timeout=600)
        self.buf = b""
        self._line()  # greeting
        for command in (
            f"a LOGIN {username} {PASSWORD}",
            "b ENABLE CONDSTORE QRESYNC",
            "c EXAMINE INBOX",
            f"d {NOTIFY_SET}",
            "e IDLE",
        ):
            self.sock.sendall(command.encode() + b"\r\n")
            tag = command.split(" ", 1)[0].encode()
            while True:
                line = self._line()
                if line.startswith(tag + b" ") or (tag == b"e" and line.startswith(b"+")):
                    break

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def heard(self, what: bytes, within: float = _HEARD_WITHIN) -> float | None:
        """When the next line with ``what`` came; None if none came ``within`` seconds
        (Dovecot 2.3's NOTIFY can miss a change, see ``imap_watch`` Rule 1)."""
        deadline = time.perf_counter() + within
        try:
            while True:
                self.sock.settimeout(max(deadline - time.perf_counter(), 0.001))
                line = self._line()
                if line.startswith(b"* ") and what in line:
                    return time.perf_counter()
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(600)

    def close(self) -> None:
        self.sock.close()


def _highest_modseq(client: imaplib.IMAP4) -> int:
    """INBOX's HIGHESTMODSEQ (STATUS of the selected mailbox: from the session's view)."""
    client.untagged_responses.clear()
    typ, data = client.status("INBOX", "(HIGHESTMODSEQ)")
    assert typ == "OK", data
    line = data[0]
    assert isinstance(line, bytes), data
    return int(line.decode().rsplit(" ", 1)[-1].rstrip(")"))


def dovecot_push(dovecot: DovecotServer, size: int, samples: int) -> None:
    """What Dovecot itself takes, seen from plain clients, for a change by another client:
    until a watcher in IDLE with NOTIFY hears it, and the refresh's commands on a
    connection that keeps INBOX examined."""
    say(f"Dovecot's own push path at {size:,}, plain clients (load {load()}):")
    username = f"u{size}"
    watcher = _Watcher(dovecot, username)
    refresh = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=600)
    writer = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=600)
    try:
        refresh.login(username, PASSWORD)
        refresh._simple_command("ENABLE", "CONDSTORE QRESYNC")
        refresh.select("INBOX", readonly=True)
        writer.login(username, PASSWORD)
        writer.select("INBOX")
        items = "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ X-GUID)"
        listing = f'"" "*" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN STATUS {items})'
        rows: dict[str, list[float]] = {}
        unheard: dict[str, int] = {}
        flagged = False
        modseq = _highest_modseq(refresh)
        for n in range(samples):
            for kind in ("append", "flag"):
                started = time.perf_counter()
                if kind == "append":
                    typ, _ = writer.append("INBOX", None, None, push_message(n, username))
                else:
                    sign = "-" if flagged else "+"
                    typ, _ = writer.uid("STORE", str(size // 2), sign + "FLAGS", "(\\Flagged)")
                    flagged = not flagged
                assert typ == "OK", kind
                done = time.perf_counter()
                heard = watcher.heard(b"EXISTS" if kind == "append" else b"FETCH")
                rows.setdefault(f"{kind}: the command itself", []).append(done - started)
                if heard is None:
                    unheard[kind] = unheard.get(kind, 0) + 1
                else:
                    rows.setdefault(f"{kind}: until the watcher heard it", []).append(heard - done)
                refresh.untagged_responses.clear()
                for name, verb, *args in (
                    ("LIST-STATUS, INBOX examined", "LIST", listing),
                    ("NOOP", "NOOP"),
                    (
                        "UID FETCH 1:* CHANGEDSINCE",
                        "UID",
                        "FETCH",
                        "1:*",
                        "(UID FLAGS MODSEQ)",
                        f"(CHANGEDSINCE {modseq} VANISHED)",
                    ),
                    ("UID SEARCH UID of the new", "UID", "SEARCH", "RETURN", "(ALL)", "UID", "*"),
                ):
                    took, _ = _timed(refresh, verb, *args)
                    rows.setdefault(f"{kind}: refresh {name}", []).append(took)
                modseq = _highest_modseq(refresh)
                time.sleep(0.5)
        for name, got in rows.items():
            say(f"  {_median_p95(got):>24}  {name}")
        for kind, count in unheard.items():
            say(f"  {kind}: the watcher heard nothing within {_HEARD_WITHIN:g} s, {count} times")
    finally:
        watcher.close()
        refresh.logout()
        writer.logout()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _median_p95(samples: list[float]) -> str:
    return f"{_ms(statistics.median(samples))} ({_ms(p95(samples))})" if samples else "-"


def rows(serves: list[Serve]) -> list[tuple[str, list[str], str]]:
    """(measurement, one value per size, target)."""
    out: list[tuple[str, list[str], str]] = []

    def row(name: str, values: list[str], target: str = "") -> None:
        out.append((name, values, target))

    kept = "(kept cache)"
    row(
        "newest 50 served after the first request",
        [kept if s.reused else f"{s.newest:.2f} s" for s in serves],
        "<= 1 s",
    )
    row(
        "whole first sync",
        [
            kept if s.reused else f"{s.sync:.0f} s" if s.sync is not None else "unfinished"
            for s in serves
        ],
    )
    row("open inbox, median (p95)", [_median_p95(s.open_inbox) for s in serves], "<= 50 ms")
    row("no-change Mailbox/get, median", [_median_p95(s.no_change) for s in serves])
    row(
        f"Email/query text {TEXT!r} with its total, median",
        [
            (f"{statistics.median(s.text):.2f} s, {s.text_hits:,} hits" if s.text else "")
            + (f"; failed: {s.text_note}" if s.text_note else "")
            for s in serves
        ],
    )
    row(
        f"a plain client's UID SEARCH TEXT {TEXT}, median",
        [f"{statistics.median(s.raw_text):.2f} s" if s.raw_text else "" for s in serves],
    )
    row(
        "the same, first 50 without a total, median (ratio)",
        [
            (
                f"{statistics.median(s.page):.2f} s"
                + (
                    f" ({statistics.median(s.page) / statistics.median(s.text):.3f}x)"
                    if s.text
                    else ""
                )
                if s.page
                else ""
            )
            + (f"; failed: {s.page_note}" if s.page_note else "")
            for s in serves
        ],
    )
    for kind in KINDS:
        row(
            f"push {kind}, median (p95)",
            [
                _median_p95(s.push.latencies[kind])
                + (f", {s.push.missed[kind]} missed" if s.push.missed[kind] else "")
                if s.push
                else "-"
                for s in serves
            ],
            "p95 <= 1 s",
        )
    row("cache on disk (SQLite + WAL)", [f"{s.cache_mb:.0f} MB" for s in serves])
    row("peak RSS (VmHWM) of imapjmap serve", [f"{s.peak_mb:.0f} MB" for s in serves], "<= 300 MB")
    row("  its parsing worker's peak RSS", [f"{s.worker_peak_mb:.0f} MB" for s in serves])
    return out


def print_table(serves: list[Serve]) -> None:
    table = rows(serves)
    heads = [f"{s.size:,}" for s in serves]
    width = max(len(r[0]) for r in table)
    widths = [max(len(h), *(len(r[1][i]) for r in table)) for i, h in enumerate(heads)]
    say("")
    say(
        f"{'measurement':<{width}}  "
        + "  ".join(f"{h:<{w}}" for h, w in zip(heads, widths, strict=True))
        + "  target"
    )
    for name, values, target in table:
        cells = "  ".join(f"{v:<{w}}" for v, w in zip(values, widths, strict=True))
        say(f"{name:<{width}}  {cells}  {target}")
    if len(serves) > 1 and all(s.open_inbox and s.no_change for s in serves):
        big, small = serves[-1], serves[0]
        for name, attr in (("open inbox", "open_inbox"), ("no-change request", "no_change")):
            ratio = statistics.median(getattr(big, attr)) / statistics.median(getattr(small, attr))
            say(f"{name}, median {big.size:,} / {small.size:,}: {ratio:.2f}x")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--requests", type=int, default=30, help="warm requests of each kind")
    parser.add_argument("--text-queries", type=int, default=1, help="text queries per size")
    parser.add_argument(
        "--text-timeout", type=float, default=300.0, help="give a text query up (%(default)g s)"
    )
    parser.add_argument("--samples", type=int, default=10, help="push samples per kind")
    parser.add_argument("--sync-limit", type=float, default=3600.0, help="seconds (%(default)g)")
    parser.add_argument("--workdir", help="keep the Dovecot and its mail here, reuse it")
    parser.add_argument(
        "--newest-only",
        action="store_true",
        help="only the time until the newest 50 are served (no whole first sync)",
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="seed the users into --workdir and stop"
    )
    parser.add_argument(
        "--sync-only",
        action="store_true",
        help="the first syncs alone, their caches kept in --workdir for --reuse-cache",
    )
    parser.add_argument(
        "--reuse-cache",
        action="store_true",
        help="no first sync: measure on the caches a --sync-only run kept",
    )
    parser.add_argument(
        "--no-text", action="store_true", help="no text queries (they take minutes)"
    )
    parser.add_argument(
        "--text-only",
        action="store_true",
        help="with --reuse-cache: the text queries alone",
    )
    parser.add_argument(
        "--dovecot-costs",
        action="store_true",
        help="only Dovecot's own time for the commands of a first request, plain client",
    )
    parser.add_argument(
        "--dovecot-conf",
        default=_MAILDIR_SYNCS,
        metavar="TEXT",
        help="more Dovecot configuration (default %(default)r; '' for Dovecot's own default)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help=(
            "with --reuse-cache: push alone, in this process, with the proxy's IMAP commands;"
            " with --newest-only: the first request so"
        ),
    )
    args = parser.parse_args()
    kept = args.seed_only or args.sync_only or args.reuse_cache
    if kept and args.workdir is None:
        parser.error("--seed-only, --sync-only and --reuse-cache need --workdir")
    if args.trace and not (args.reuse_cache or args.newest_only):
        parser.error("--trace needs --reuse-cache or --newest-only")
    if args.text_only and not args.reuse_cache:
        parser.error("--text-only needs --reuse-cache")
    return args


def measured_alone(dovecot: DovecotServer, sizes: list[int], args: argparse.Namespace) -> bool:
    """The parts that run without a proxy of their own: ``--dovecot-costs``, and the
    traced first request (``--newest-only --trace``); whether one ran."""
    if args.dovecot_costs:
        for size in sizes:
            dovecot_costs(dovecot, size)
            dovecot_push(dovecot, size, args.samples)
        return True
    if args.trace and args.newest_only:
        for size in sizes:
            asyncio.run(trace_newest(dovecot, size, Path(args.workdir)))
        return True
    return False


def main() -> int:
    args = parse_args()
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",")})
    say(f"a million messages: {describe_machine()}; load average {load()}")
    ensure_dovecot_installed()
    keep = args.workdir is not None
    if not keep:
        args.workdir = tempfile.mkdtemp(prefix="imapjmap-million-")
    # no quota: the million's 17.5 GB would be over the test servers' 10 GB; and more than
    # Dovecot's default 1 GB of address space for an imap process: syncing the Maildir
    # uidlist of a million messages after another client's writes ran out of it
    # ("block_alloc(67108864): Out of memory", the session closed)
    dovecot = DovecotServer.start(
        Path(args.workdir) / "dovecot",
        quota=False,
        extra_conf=_BIG_MAILDIR_CONF + args.dovecot_conf + "\n",
    )
    try:
        for size in sizes:
            seed(dovecot, size)
        if args.seed_only:
            return 0
        if measured_alone(dovecot, sizes, args):
            return 0
        serves = asyncio.run(run(dovecot, sizes, args))
    finally:
        dovecot.stop()
        if not keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    say(f"load average at the end {load()}")
    if args.newest_only or args.sync_only:
        for serve in serves:
            say(f"newest 50 served at {serve.size:,}: {serve.newest:.2f} s")
            if serve.sync is not None and args.sync_only:
                say(f"  whole first sync {serve.sync:.0f} s, peak RSS {serve.peak_mb:.0f} MB")
        return 0
    if args.trace:
        return 0
    print_table(serves)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
