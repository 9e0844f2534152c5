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
  expunge: an IMAP client would first set ``\\Deleted``, which is a flag change of its own);
* ``deliver``: a new message delivered over LMTP (Dovecot's own delivery, which has INBOX
  open only while it delivers, where the ``append`` client has it selected).

Each latency runs from the upstream's tagged OK (the end of the command; for ``expunge`` the
end of ``doveadm``, for ``deliver`` LMTP's reply to the message) until the ``state`` event
whose Email state is new was read: it spans Dovecot's NOTIFY, the watcher's debounce, the
refresh of the cache, the hub and the HTTP stream.  ``--trace`` prints, for each sample,
the IMAP commands the proxy sent and their durations.

Each change is also put down by what found it first: the watcher hearing it (the server's
report), the watcher's periodic check (every ``push.status_interval``), a NOTIFY re-arm, or
something else (a busy client's request); and whether the server's report of a change a
check had found came late, within ``--gap`` seconds after the event.  The next change
waits out that gap, so that such a late report is not taken for the next change's (it
would make the next one look heard at once, and find it early).

``--backend cyrus`` runs the same against a private Cyrus (IDLE on INBOX and a LIST-STATUS
comparison every ``push.status_interval``): the mail is written into INBOX's spool
directory, then ``reconstruct`` runs (:func:`seed_cyrus_spool`: minutes at 100,000 where
APPENDs took an hour), and the ``expunge`` is a ``UID MOVE`` out of INBOX (Cyrus has no
doveadm; an IMAP client's expunge is preceded by ``\\Deleted``, which already hides the
message from JMAP).

Each size is measured twice: quiet, then with ``--busy`` other clients (default 20) opening
the same account's inbox in a loop on the same proxy (``Email/query`` of the newest 50 and
``Email/get`` of their list properties, one request after another each, from a separate
process, as other users' browsers would); ``--busy 0`` measures quiet only.

Prints the median, p95 and max per kind, size and condition, the ratio of the medians between
the largest and the smallest size and between busy and quiet, what the busy clients got
(requests/s, median and p95), and the target (p95 <= 1 s).  Exit status 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import multiprocessing
import os
import shutil
import smtplib
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
from mailgen import Generator, seed_inbox
from read_path import (
    PASSWORD,
    InProcessProxy,
    Jmap,
    describe_machine,
    open_inbox_calls,
    p95,
    say,
)

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.http import views
from imapjmap.imap.commands import Command
from imapjmap.imap.models import Reply
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.imap_watch import IdleWatch, NotifyWatch
from imapjmap.upstream.watch import Heard

TARGET_P95: Final = 1.0  # seconds
EVENT_TIMEOUT: Final = 10.0  # a sample with no event by then counts as this long
KINDS: Final = ("append", "flag", "expunge")
# Dovecot: new mail delivered over LMTP, by a process that has no mailbox open (as a mail
# server's own delivery is); the latency runs from LMTP's reply to the message
DELIVER: Final = "deliver"
ALL_KINDS: Final = (*KINDS, DELIVER)
ELSEWHERE: Final = "Bench-Elsewhere"  # where Cyrus's "expunge" moves a message
WATCHER_SETTLE: Final = 3.0  # seconds for a watcher in another process to connect
GAP: Final = 1.0  # seconds between a state event and the next change (--gap)
# what found a change first (Bench.sample); "missed": nothing within EVENT_TIMEOUT
FOUND_BY: Final = ("heard", "check", "re-arm", "other", "missed")
LISTS_AFTER: Final = 0.05  # the watcher's debounce (push.watcher._DEBOUNCE)
_FOUND: Final = {Heard.CHANGED: "heard", Heard.DUE: "check", Heard.REARMED: "re-arm"}

Upstream = DovecotServer | CyrusServer


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
    # when the watcher woke, and for what (the server's report, a check, a re-arm)
    woke: list[tuple[float, Heard]] = field(default_factory=list)

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
        rearm, woke = NotifyWatch._rearm, self.woke
        said = {Heard.CHANGED: "(watcher: an event)", Heard.DUE: "(watcher: a check)"}

        def waking(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
            async def next_(watch: Any) -> Heard:
                heard: Heard = await original(watch)
                now = time.perf_counter()
                woke.append((now, heard))
                if heard in said:
                    sent.append((now, now, said[heard]))
                return heard

            return next_

        async def on_rearm(watch: NotifyWatch) -> None:
            sent.append((time.perf_counter(), time.perf_counter(), "(watcher: re-arm)"))
            await rearm(watch)

        NotifyWatch.next = waking(NotifyWatch.next)  # type: ignore[method-assign,assignment]
        IdleWatch.next = waking(IdleWatch.next)  # type: ignore[method-assign,assignment]
        NotifyWatch._rearm = on_rearm  # type: ignore[method-assign,assignment]

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
    busy: int = 0  # other clients opening the inbox meanwhile
    busy_load: BusyLoad | None = None
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ALL_KINDS})
    missed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_KINDS, 0))
    # (until the watcher heard of it, from then until the state event), when it did
    split: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {k: [] for k in ALL_KINDS}
    )
    # what found each change first (FOUND_BY), and how many of those a check or a
    # request found did the server report late (after the event, within the gap)
    found: dict[str, dict[str, int]] = field(
        default_factory=lambda: {k: dict.fromkeys(FOUND_BY, 0) for k in ALL_KINDS}
    )
    late: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_KINDS, 0))


class Bench:
    """``watching()`` says whether the account's push watcher is connected; ``None`` (the
    proxy in another process) waits :data:`WATCHER_SETTLE` seconds instead.  ``busy``: how
    many other clients are busy meanwhile (for the report); ``kinds``: the changes made."""

    def __init__(
        self,
        upstream: Upstream,
        jmap: Jmap,
        size: int,
        trace: Trace,
        watching: Callable[[], bool] | None = None,
        busy: int = 0,
        kinds: tuple[str, ...] = KINDS,
        gap: float = GAP,
    ) -> None:
        self.upstream = upstream
        self.gap = gap
        self.kinds = kinds
        self.jmap = jmap
        self.watching = watching
        self.username = jmap.username
        self.trace = trace
        self.run = SizeRun(size, busy)
        self.oracle = imaplib.IMAP4(upstream.host, upstream.port, timeout=60)
        self.oracle.login(self.username, PASSWORD)
        if isinstance(upstream, CyrusServer):
            self.oracle.create(ELSEWHERE)
        self.oracle.select("INBOX")
        self.appended: list[int] = []
        # the seeded mail has flags of its own: the first STORE must change something
        typ, data = self.oracle.uid("FETCH", str(size // 2), "(FLAGS)")
        assert typ == "OK", data
        self.flagged = b"\\Flagged" in (data[0] or b"")
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
        self.trace.woke.clear()
        done = await asyncio.to_thread(getattr(self, "_" + kind), n)
        latency = await self._wait_event(done)
        if latency >= EVENT_TIMEOUT:
            self.run.missed[kind] += 1
            # the late event may still come: take it before the next sample starts
            await self._wait_event(time.perf_counter())
        else:
            # a late report of the change before comes before the gap's end, not after
            # this change's OK
            await asyncio.sleep(self.gap)
        event = done + latency
        # a wake-up within the watcher's debounce before the OK lists after it
        before = [(t, heard) for t, heard in self.trace.woke if done - LISTS_AFTER <= t <= event]
        after = [heard for t, heard in self.trace.woke if t > event]
        how = _FOUND[before[0][1]] if before else "other"
        if latency >= EVENT_TIMEOUT:
            how = "missed"
        self.run.found[kind][how] += 1
        if how == "heard":  # the upstream's share and the proxy's
            upstream = max(before[0][0] - done, 0.0)
            self.run.split[kind].append((upstream, latency - upstream))
        elif Heard.CHANGED in after:  # reported, but after something else had found it
            self.run.late[kind] += 1
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

    def _deliver(self, n: int) -> float:
        assert isinstance(self.upstream, DovecotServer)
        with smtplib.LMTP(self.upstream.host, self.upstream.lmtp_port, timeout=60) as lmtp:
            lmtp.sendmail("bench@example.org", [self.username], message(n, self.username))
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
            self.run = SizeRun(self.run.size, self.run.busy)
            self.trace.on = with_trace
            for n in range(samples):
                for kind in self.kinds:
                    await self.sample(kind, n)
            return self.run
        finally:
            resp.close()
            self.oracle.logout()


@dataclass(frozen=True)
class BusyLoad:
    """What the busy clients got while the changes were measured."""

    requests: int
    errors: int
    seconds: float
    median: float
    p95: float
    first_error: str = ""


def busy_clients(
    base: str,
    username: str,
    account_id: str,
    inbox_id: str,
    clients: int,
    stop: Any,  # multiprocessing.Event
    results: Any,  # multiprocessing.Queue: one BusyLoad, put on stop
) -> None:
    """``clients`` loops opening the inbox, one request at a time each, until ``stop``
    (runs in a child process, so that the proxy's process serves them and nothing else)."""

    async def run() -> BusyLoad:
        latencies: list[float] = []
        errors = 0
        first_error = ""
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector) as http:
            jmap = Jmap(http, base, username, account_id, inbox_id)
            calls = open_inbox_calls(account_id, inbox_id)

            async def client() -> None:
                nonlocal errors, first_error
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        await jmap.request(calls)
                    except Exception as exc:  # counted and reported: the load goes on
                        errors += 1
                        first_error = first_error or f"{type(exc).__name__}: {exc}"[:200]
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            seconds = time.perf_counter() - started
        if not latencies:
            return BusyLoad(0, errors, seconds, 0.0, 0.0, first_error)
        median, high = statistics.median(latencies), p95(latencies)
        return BusyLoad(len(latencies), errors, seconds, median, high, first_error)

    results.put(asyncio.run(run()))


class Busy:
    """The busy clients' process, started and stopped around a measurement."""

    def __init__(self, jmap: Jmap, clients: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.results: Any = context.Queue()
        args = (jmap.base, jmap.username, jmap.account_id, jmap.inbox_id, clients)
        self.process = context.Process(
            target=busy_clients, args=(*args, self.stop, self.results), daemon=True
        )

    async def __aenter__(self) -> Busy:
        self.process.start()
        await asyncio.sleep(3.0)  # the child's start-up and its first requests
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.load: BusyLoad = await asyncio.to_thread(self.results.get, True, 120)
        await asyncio.to_thread(self.process.join, 30)


def seed_cyrus_spool(server: CyrusServer, username: str, count: int) -> None:
    """The generated mail written into INBOX's spool directory, then ``reconstruct``.

    Cyrus takes about 25 APPENDs a second here (pipelined or not: each is a transaction of
    its own); ``reconstruct`` adds message files it finds in the directory (named ``UID.``)
    at several hundred a second, with their GUID, conversation (THREADID) and the file's
    mtime as INTERNALDATE.  The flags ``mailgen`` gives are set afterwards with a few
    ``UID STORE`` commands."""
    client = server.connect(username, PASSWORD)  # creates INBOX (autocreate)
    try:
        spool = Path(server.tool("mbpath", f"user/{username}").strip())
        flagged: dict[str, list[int]] = {}
        for uid, msg in enumerate(Generator(count), start=1):
            path = spool / f"{uid}."
            with path.open("xb") as fh:
                fh.write(msg.raw)
                os.fchown(fh.fileno(), server.uid, server.gid)
            os.utime(path, (msg.internaldate, msg.internaldate))
            for letter, flag in (("S", "\\Seen"), ("F", "\\Flagged"), ("R", "\\Answered")):
                if letter in msg.flags:
                    flagged.setdefault(flag, []).append(uid)
        server.tool("reconstruct", f"user/{username}")
        client.select("INBOX")
        for flag, uids in flagged.items():
            for start in range(0, len(uids), 5000):
                chunk = ",".join(map(str, uids[start : start + 5000]))
                typ, data = client.uid("STORE", chunk, "+FLAGS.SILENT", f"({flag})")
                assert typ == "OK", data
        typ, data = client.status("INBOX", "(MESSAGES)")
        if typ != "OK" or f"MESSAGES {count})" not in data[0].decode():
            raise RuntimeError(f"Cyrus counts {data!r} in INBOX, {count} were written")
    finally:
        client.logout()


async def measure_size(
    upstream: Upstream,
    workdir: Path,
    size: int,
    samples: int,
    trace: Trace,
    busy: int,
    gap: float = GAP,
) -> list[SizeRun]:
    username = f"u{size}"
    upstream.add_user(username, PASSWORD)
    started = time.perf_counter()
    if isinstance(upstream, CyrusServer):
        await asyncio.to_thread(seed_cyrus_spool, upstream, username, size)
    else:
        await asyncio.to_thread(seed_inbox, upstream, username, size)
    say(f"{size:,} messages seeded in {time.perf_counter() - started:.0f}s")
    proxy = await InProcessProxy.start(upstream, username, workdir / f"cache-{size}.sqlite3")
    try:
        started = time.perf_counter()
        await proxy.jmap.session()
        await proxy.jmap.find_inbox()
        await proxy.wait_filled()
        say(f"  first sync {time.perf_counter() - started:.1f}s; measuring quiet")
        push = proxy.server.app[views.SERVICES].push

        def watching() -> bool:
            return any(w.mode in ("notify", "idle") for w in push.watchers.values())

        kinds = KINDS if isinstance(upstream, CyrusServer) else ALL_KINDS
        quiet = Bench(upstream, proxy.jmap, size, trace, watching, kinds=kinds, gap=gap)
        runs = [await quiet.measure(samples)]
        if busy:
            say(f"  measuring with {busy} other clients opening the inbox")
            async with Busy(proxy.jmap, busy) as load:
                bench = Bench(upstream, proxy.jmap, size, trace, watching, busy, kinds, gap)
                run = await bench.measure(samples)
            run.busy_load = load.load
            runs.append(run)
        return runs
    finally:
        await proxy.close()


def condition(run: SizeRun) -> str:
    return f"busy {run.busy}" if run.busy else "quiet"


def report_found(runs: list[SizeRun]) -> None:
    say("")
    say("what found each change first: the server's report (heard), the watcher's check every")
    say("push.status_interval, a NOTIFY re-arm, or else (a busy client's request); late: the")
    say("server's report of a change something else had found came after the event")
    say(
        f"{'kind':8} {'size':>8} {'condition':>9} "
        + " ".join(f"{h:>6}" for h in FOUND_BY)
        + "   late"
    )
    for kind in ALL_KINDS:
        for run in runs:
            if run.latencies[kind]:
                counts = " ".join(f"{run.found[kind][h]:>6}" for h in FOUND_BY)
                say(f"{kind:8} {run.size:>8,} {condition(run):>9} {counts} {run.late[kind]:>6}")


def report(runs: list[SizeRun]) -> bool:
    ok = True
    say("")
    say("change -> EventSource state event, from the upstream's tagged OK")
    say(
        f"{'kind':8} {'size':>8} {'condition':>9} {'n':>3} {'median':>9} {'p95':>9} "
        f"{'max':>9} {'missed':>6}"
    )
    quiet = [r for r in runs if not r.busy]
    for kind in ALL_KINDS:
        for run in runs:
            got = run.latencies[kind]
            if not got:
                continue
            median, high = statistics.median(got), p95(got)
            ok = ok and high <= TARGET_P95
            say(
                f"{kind:8} {run.size:>8,} {condition(run):>9} {len(got):>3} "
                f"{median * 1000:>6.0f} ms {high * 1000:>6.0f} ms {max(got) * 1000:>6.0f} ms "
                f"{run.missed[kind]:>6}"
            )
        if len(quiet) > 1 and quiet[0].latencies[kind] and quiet[-1].latencies[kind]:
            ratio = statistics.median(quiet[-1].latencies[kind]) / statistics.median(
                quiet[0].latencies[kind]
            )
            say(f"{kind:8} median quiet {quiet[-1].size:,} / {quiet[0].size:,}: {ratio:.2f}x")
        for run in runs:
            alone = next((q for q in quiet if q.size == run.size), None)
            if run.busy and alone and run.latencies[kind] and alone.latencies[kind]:
                ratio = statistics.median(run.latencies[kind]) / statistics.median(
                    alone.latencies[kind]
                )
                say(f"{kind:8} median {run.size:,} {condition(run)} / quiet: {ratio:.2f}x")
    say("")
    say("the same, split: until the watcher heard of the change (the upstream's share, and the")
    say("watcher's leaving IDLE), then until the state event (the proxy's); median (p95)")
    say(f"{'kind':8} {'size':>8} {'condition':>9} {'heard':>5} {'upstream':>16} {'proxy':>16}")
    for kind in ALL_KINDS:
        for run in runs:
            pairs = run.split[kind]
            if not pairs:
                continue
            parts = [
                f"{statistics.median(x) * 1000:>6.0f} ({p95(x) * 1000:>5.0f}) ms"
                for x in ([u for u, _ in pairs], [r for _, r in pairs])
            ]
            say(
                f"{kind:8} {run.size:>8,} {condition(run):>9} {len(pairs):>5} "
                f"{parts[0]:>16} {parts[1]:>16}"
            )
    report_found(runs)
    for run in runs:
        load = run.busy_load
        if load is not None:
            say(
                f"busy clients at {run.size:,}: {load.requests / load.seconds:.0f} requests/s, "
                f"median {load.median * 1000:.0f} ms, p95 {load.p95 * 1000:.0f} ms, "
                f"{load.errors} errors" + (f" (first: {load.first_error})" if load.errors else "")
            )
    say(f"target p95 <= {TARGET_P95 * 1000:.0f} ms at every size: {'pass' if ok else 'MISS'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="2000,100000")
    parser.add_argument("--samples", type=int, default=20, help="per kind and size")
    parser.add_argument("--trace", action="store_true", help="the proxy's IMAP commands")
    parser.add_argument("--backend", choices=("dovecot", "cyrus"), default="dovecot")
    parser.add_argument(
        "--busy", type=int, default=20, help="other clients in the busy measurement (0: none)"
    )
    parser.add_argument(
        "--gap", type=float, default=GAP, help="seconds from a state event to the next change"
    )
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
            run
            for size in sizes
            for run in asyncio.run(
                measure_size(upstream, workdir, size, args.samples, trace, args.busy, args.gap)
            )
        ]
    finally:
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # gigabytes of mail at 100,000
    return 0 if report(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
