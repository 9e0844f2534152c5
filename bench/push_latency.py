"""Push latency: a change by another IMAP client until the EventSource ``state`` event.

Run by hand (about 5 minutes at 100,000 messages, most of it seeding and the first sync)::

    python3 bench/push_latency.py --sizes 2000,100000 --samples 20

It starts a private Dovecot, seeds one user per size with generated mail (``mailgen``, the
same mail as ``read_path.py``), starts the proxy (the real aiohttp app on a loopback port),
lets it sync the whole INBOX, opens one EventSource stream (``types=*``) and waits until the
account's watcher is connected.  Then, ``--samples`` times each, interleaved, another
client changes INBOX:

* ``append``: APPEND of a new message (``imaplib``);
* ``flag``: ``UID STORE +FLAGS (\\Flagged)`` (then ``-FLAGS``) on a message in the middle;
* ``expunge``: one of the appended messages expunged by ``doveadm expunge`` (a pure
  expunge: an IMAP client would first set ``\\Deleted``, which is a flag change of its own).

Each latency runs from the upstream's tagged OK (the end of the command; for ``expunge`` the
end of ``doveadm``) until the ``state`` event whose Email state is new was read: it spans
Dovecot's NOTIFY, the watcher's debounce, the refresh of the cache, the hub and the HTTP
stream.  ``--trace`` prints, for each sample, the IMAP commands the proxy sent and their
durations.

``--backend cyrus`` runs the same against a private Cyrus (IDLE on INBOX and a LIST-STATUS
comparison every ``push.status_interval``): the mail is seeded by pipelined APPENDs, and the
``expunge`` is a ``UID MOVE`` out of INBOX (Cyrus has no doveadm; an IMAP client's expunge is
preceded by ``\\Deleted``, which already hides the message from JMAP).

Prints the median, p95 and max per kind and size, the ratio of the medians between the
largest and the smallest size, and the target (p95 <= 1 s).  Exit status 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
from aiohttp.test_utils import TestServer
from mailgen import Generator, seed_inbox
from read_path import PASSWORD, InProcessProxy, Jmap, describe_machine, say

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig
from imapjmap.http import views
from imapjmap.http.app import make_app
from imapjmap.imap.commands import Command
from imapjmap.imap.models import Reply
from imapjmap.imap.session import ImapSession
from imapjmap.push.watcher import Watcher

TARGET_P95: Final = 1.0  # seconds
EVENT_TIMEOUT: Final = 10.0  # a sample with no event by then counts as this long
KINDS: Final = ("append", "flag", "expunge")
ELSEWHERE: Final = "Bench-Elsewhere"  # where Cyrus's "expunge" moves a message
WATCHER_SETTLE: Final = 3.0  # seconds for a watcher in another process to connect

Upstream = DovecotServer | CyrusServer


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def message(n: int, username: str) -> bytes:
    return (
        f"From: Bench <bench@example.org>\r\nTo: {username}@example.org\r\n"
        f"Subject: push sample {n}\r\nMessage-ID: <push-{n}-{time.time_ns()}@example.org>\r\n"
        "Date: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


@dataclass
class Trace:
    """Every IMAP command the proxy sends, with its duration (``--trace``)."""

    on: bool = False
    sent: list[tuple[float, float, str]] = field(default_factory=list)

    def install(self) -> None:
        original = ImapSession.execute
        sent = self.sent

        async def execute(
            session: ImapSession, command: Command, *, what: str = "", **kw: Any
        ) -> Reply:
            started = time.perf_counter()
            try:
                return await original(session, command, what=what, **kw)
            finally:
                sent.append((started, time.perf_counter(), command.parts[0][:90]))

        ImapSession.execute = execute  # type: ignore[method-assign,assignment]
        changed, rearm = Watcher._changed, Watcher._rearm

        async def on_event(watcher: Watcher) -> None:
            sent.append((time.perf_counter(), time.perf_counter(), "(watcher: an event)"))
            await changed(watcher)

        async def on_rearm(watcher: Watcher, session: ImapSession) -> None:
            sent.append((time.perf_counter(), time.perf_counter(), "(watcher: re-arm)"))
            await rearm(watcher, session)

        Watcher._changed = on_event  # type: ignore[method-assign,assignment]
        Watcher._rearm = on_rearm  # type: ignore[method-assign,assignment]

    def show(self, since: float) -> None:
        for started, ended, text in self.sent:
            if ended >= since:
                at, took = (started - since) * 1000, (ended - started) * 1000
                say(f"      +{at:6.0f} ms {took:6.0f} ms  {text}")
        self.sent.clear()


class Events:
    """The ``state`` events of one EventSource stream."""

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


@dataclass
class SizeRun:
    size: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    missed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


class Bench:
    """``watching()`` says whether the account's push watcher is connected; ``None`` (the
    proxy in another process) waits :data:`WATCHER_SETTLE` seconds instead."""

    def __init__(
        self,
        upstream: Upstream,
        jmap: Jmap,
        size: int,
        trace: Trace,
        watching: Callable[[], bool] | None = None,
    ):
        self.upstream = upstream
        self.jmap = jmap
        self.watching = watching
        self.username = jmap.username
        self.trace = trace
        self.run = SizeRun(size)
        self.oracle = imaplib.IMAP4(upstream.host, upstream.port, timeout=60)
        self.oracle.login(self.username, PASSWORD)
        if isinstance(upstream, CyrusServer):
            self.oracle.create(ELSEWHERE)
        self.oracle.select("INBOX")
        self.appended: list[int] = []
        self.flagged = False
        self.state = ""
        self.events: Events | None = None

    async def _wait_event(self, since: float) -> float:
        """Seconds from ``since`` until a state event with a new Email state (or the cap)."""
        assert self.events is not None
        try:
            while True:
                left = EVENT_TIMEOUT - (time.perf_counter() - since)
                changed = (await self.events.next_state(max(left, 0.001))).popitem()[1]
                if changed.get("Email", self.state) != self.state:
                    self.state = changed["Email"]
                    return time.perf_counter() - since
        except TimeoutError:
            return EVENT_TIMEOUT

    async def sample(self, kind: str, n: int) -> None:
        done = await asyncio.to_thread(getattr(self, "_" + kind), n)
        latency = await self._wait_event(done)
        if latency >= EVENT_TIMEOUT:
            self.run.missed[kind] += 1
            # the late event may still come: take it before the next sample starts
            await self._wait_event(time.perf_counter())
        self.run.latencies[kind].append(latency)
        if self.trace.on:
            say(f"    {kind} #{n}: {latency * 1000:.0f} ms")
            self.trace.show(done - 0.2)

    def _append(self, n: int) -> float:
        typ, data = self.oracle.append("INBOX", None, None, message(n, self.username))
        done = time.perf_counter()
        assert typ == "OK", data
        code = data[0].decode() if data and data[0] else ""
        if "APPENDUID" in code:  # [APPENDUID validity uid]
            self.appended.append(int(code.split("]")[0].split()[-1]))
        return done

    def _flag(self, n: int) -> float:
        sign = "-" if self.flagged else "+"
        uid = str(self.run.size // 2)
        typ, data = self.oracle.uid("STORE", uid, sign + "FLAGS", "(\\Flagged)")
        done = time.perf_counter()
        assert typ == "OK", data
        self.flagged = not self.flagged
        return done

    def _expunge(self, n: int) -> float:
        uid = self.appended.pop(0)
        if isinstance(self.upstream, CyrusServer):
            typ, data = self.oracle.uid("MOVE", str(uid), ELSEWHERE)
            assert typ == "OK", data
        else:
            self.upstream.doveadm(
                "expunge", "-u", self.username, "mailbox", "INBOX", "uid", str(uid)
            )
        return time.perf_counter()

    async def measure(self, samples: int) -> SizeRun:
        resp = await self.jmap.open_event_source()
        try:
            self.events = Events(resp)
            self.state = (await self.events.next_state(30)).popitem()[1]["Email"]
            if self.watching is None:
                await asyncio.sleep(WATCHER_SETTLE)
            while self.watching is not None and not self.watching():
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # the watcher's first refresh and its event
            with_trace, self.trace.on = self.trace.on, False
            await self.sample("append", -1)  # warm-up, not counted
            self.run.latencies["append"].clear()
            self.trace.on = with_trace
            for n in range(samples):
                for kind in KINDS:
                    await self.sample(kind, n)
            return self.run
        finally:
            resp.close()
            self.oracle.logout()


def seed_over_imap(server: CyrusServer, username: str, count: int) -> None:
    """The generated mail APPENDed to INBOX, pipelined (LITERAL+), a hundred at a time."""
    with socket.create_connection((server.host, server.port), timeout=120) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f'a LOGIN "{username}" "{PASSWORD}"\r\n'.encode())
        while not reader.readline().startswith(b"a "):
            pass
        pending: list[str] = []

        def drain() -> None:
            while pending:
                line = reader.readline()
                if line.startswith(pending[0].encode() + b" "):
                    if not line.split()[1] == b"OK":
                        raise RuntimeError(f"APPEND: {line!r}")
                    pending.pop(0)

        for number, msg in enumerate(Generator(count)):
            tag = f"s{number}"
            sock.sendall(f"{tag} APPEND INBOX {{{len(msg.raw)}+}}\r\n".encode() + msg.raw + b"\r\n")
            pending.append(tag)
            if len(pending) >= 100:
                drain()
        drain()


async def start_proxy(upstream: Upstream, username: str, cache: Path) -> InProcessProxy:
    cfg = Config(
        imap=ImapConfig(host=upstream.host, port=upstream.port, security="none"),
        server=ServerConfig(listen="127.0.0.1:0"),
        cache=CacheConfig(path=str(cache)),
    )
    server = TestServer(make_app(cfg), host="127.0.0.1")
    await server.start_server()
    http = aiohttp.ClientSession()
    base = str(server.make_url("")).rstrip("/")
    return InProcessProxy(server, http, Jmap(http, base, username), cache)


async def measure_size(
    upstream: Upstream, workdir: Path, size: int, samples: int, trace: Trace
) -> SizeRun:
    username = f"u{size}"
    upstream.add_user(username, PASSWORD)
    started = time.perf_counter()
    if isinstance(upstream, CyrusServer):
        await asyncio.to_thread(seed_over_imap, upstream, username, size)
    else:
        await asyncio.to_thread(seed_inbox, upstream, username, size)
    say(f"{size:,} messages seeded in {time.perf_counter() - started:.0f}s")
    proxy = await start_proxy(upstream, username, workdir / f"cache-{size}.sqlite3")
    try:
        started = time.perf_counter()
        await proxy.jmap.session()
        await proxy.jmap.find_inbox()
        await proxy.wait_filled()
        say(f"  first sync {time.perf_counter() - started:.1f}s; measuring")
        push = proxy.server.app[views.SERVICES].push

        def watching() -> bool:
            return any(w.mode in ("notify", "idle") for w in push.watchers.values())

        return await Bench(upstream, proxy.jmap, size, trace, watching).measure(samples)
    finally:
        await proxy.close()


def report(runs: list[SizeRun]) -> bool:
    ok = True
    say("")
    say("change -> EventSource state event, from the upstream's tagged OK")
    say(f"{'kind':8} {'size':>8} {'n':>3} {'median':>9} {'p95':>9} {'max':>9} {'missed':>6}")
    for kind in KINDS:
        for run in runs:
            got = run.latencies[kind]
            if not got:
                continue
            median, high = statistics.median(got), p95(got)
            ok = ok and high <= TARGET_P95
            say(
                f"{kind:8} {run.size:>8,} {len(got):>3} {median * 1000:>6.0f} ms "
                f"{high * 1000:>6.0f} ms {max(got) * 1000:>6.0f} ms {run.missed[kind]:>6}"
            )
        if len(runs) > 1 and runs[0].latencies[kind] and runs[-1].latencies[kind]:
            ratio = statistics.median(runs[-1].latencies[kind]) / statistics.median(
                runs[0].latencies[kind]
            )
            say(f"{kind:8} median {runs[-1].size:,} / {runs[0].size:,}: {ratio:.2f}x")
    say(f"target p95 <= {TARGET_P95 * 1000:.0f} ms at every size: {'pass' if ok else 'MISS'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="2000,100000")
    parser.add_argument("--samples", type=int, default=20, help="per kind and size")
    parser.add_argument("--trace", action="store_true", help="the proxy's IMAP commands")
    parser.add_argument("--backend", choices=("dovecot", "cyrus"), default="dovecot")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.backend == "dovecot":
        ensure_dovecot_installed()
    say(describe_machine())
    trace = Trace(on=args.trace)
    trace.install()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-pushbench-"))
    workdir.chmod(0o755)  # Cyrus's processes run as another user
    upstream: Upstream = (
        CyrusServer.start(workdir / "cyrus")
        if args.backend == "cyrus"
        else DovecotServer.start(workdir / "dovecot")
    )
    try:
        runs = [
            asyncio.run(measure_size(upstream, workdir, size, args.samples, trace))
            for size in sizes
        ]
    finally:
        upstream.stop()
    return 0 if report(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
