"""Fairness: 20 accounts opening their inbox while one account sends the heaviest requests.

Run by hand (about 3-4 minutes on a 2-core machine)::

    python3 bench/fairness.py

It starts a private Dovecot, seeds one heavy account (``--heavy-messages``) and
``--light`` light accounts (``--light-messages`` each) with generated mail (``mailgen``),
starts the proxy (the real aiohttp app on a loopback port, default configuration), syncs
every account, then alternates two phases of ``--phase`` seconds, ``--rounds`` times:

- **alone**: each light account opens its inbox in a loop (``Mailbox/get`` + ``Email/query``
  of INBOX newest first, limit 50 + ``Email/get`` of those 50 with list properties, in one
  request), pausing ``--think`` seconds between requests;
- **beside**: the same, while the heavy account sends, ``--heavy-concurrency`` at a time,
  the heaviest requests the configured limits allow, in turn: an ``OR`` of
  ``max_filter_conditions`` ``subject``/``from`` conditions each of
  ``max_filter_string_length`` characters; the same with ``text`` conditions (IMAP SEARCH);
  ``max_sort_comparators`` comparators over the whole mailbox with ``calculateTotal``; an
  ``Email/get`` of ``max_objects_in_get`` ids with the list properties.

The light requests' latencies of the two phases are compared: p50 and p95 side by side and
the ratio beside / alone (target: p95 within 2x), pooled over every round and, as a check on
one noisy round, the median of the rounds' own ratios.  Alternating the phases in one run
keeps the comparison fair on a shared machine.  An alone phase starts only once the heavy
requests cancelled at the end of the phase before have stopped in the proxy (no cache
transaction of the heavy account, no search of it upstream), so that it is truly alone.
The heavy requests' outcomes (answered, the method errors such as the cache time budget,
still running when the phase ended) are counted too, and the CPU the heavy client's own
process used (on a small machine it competes with the proxy, as a real client elsewhere
would not).  The CPU the proxy's process (with the light clients) and Dovecot used in each
kind of phase says what the heavy account costs on a machine whose other load makes the
latencies noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
import read_path
from aiohttp.test_utils import TestServer
from mailgen import seed_inbox

from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig
from imapjmap.http import views
from imapjmap.http.app import make_app

PASSWORD: Final = read_path.PASSWORD
LIST_PROPERTIES: Final = read_path.LIST_PROPERTIES
SORTS: Final = (
    "receivedAt", "sentAt", "size", "from", "to", "subject", "hasKeyword",
    "allInThreadHaveKeyword", "someInThreadHaveKeyword",
)  # fmt: skip
TARGET_P95_RATIO: Final = 2.0
KINDS: Final = ("or", "text", "sort", "get")  # the heavy requests, in heavy_requests' order
UPSTREAM: Final = "IMAP SEARCH"  # in the name of the heavy request that searches upstream


def say(text: str) -> None:
    print(text, flush=True)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children, the children that ended included (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")

    def times(stat: str) -> int:
        fields = stat[stat.rfind(")") + 2 :].split()
        return sum(int(f) for f in fields[11:15])  # utime stime cutime cstime

    total = 0
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            stat = entry.read_text()
            ppid = stat[stat.rfind(")") + 2 :].split()[1]
            if entry.parent.name == str(pid) or ppid == str(pid):
                total += times(stat)
    return total / tick


@dataclass
class Cpu:
    """CPU seconds used during the phases of one kind, and how long they lasted."""

    proxy: float = 0.0
    dovecot: float = 0.0
    seconds: float = 0.0

    def add(self, proxy: float, dovecot: float, seconds: float) -> None:
        self.proxy += proxy
        self.dovecot += dovecot
        self.seconds += seconds


def p95(samples: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


@dataclass
class Jmap(read_path.Jmap):
    """read_path's client, with what a light account does."""

    async def find_inbox(self) -> None:
        args = {"accountId": self.account_id, "ids": None, "properties": ["id", "role"]}
        got = await self.responses([["Mailbox/get", args, "m"]])
        self.inbox_id = next(b["id"] for b in got[0][1]["list"] if b["role"] == "inbox")

    async def open_inbox(self) -> int:
        """Mailbox/get + Email/query of the newest 50 + Email/get of them, one request; the
        Emails returned (always 50)."""
        got = await self.responses(
            [
                ["Mailbox/get", {"accountId": self.account_id}, "m"],
                *read_path.open_inbox_calls(self.account_id, self.inbox_id),
            ]
        )
        for name, args, _ in got:
            if name == "error":
                raise read_path.JmapError(f"open inbox: {args}")
        if len(got[2][1]["list"]) != 50:
            raise read_path.JmapError(f"open inbox: {len(got[2][1]['list'])} emails, not 50")
        return 50


def heavy_requests(
    cfg: Config, jmap: Jmap, ids: list[str], kinds: Sequence[str] = KINDS
) -> list[tuple[str, list[list[Any]]]]:
    """The heaviest request of each kind the configured limits allow (name, calls)."""
    limits = cfg.limits
    account = jmap.account_id
    width = limits.max_filter_string_length
    # the OR operator is one condition; each of its conditions is another
    count = limits.max_filter_conditions - 1

    def needle(n: int) -> str:
        return (f"{n:06d}-zq-" * (width // 10 + 1))[:width]  # long, matches nothing

    fields = ("subject", "from")
    cache_or = {
        "operator": "OR",
        "conditions": [{fields[n % 2]: needle(n)} for n in range(count)],
    }
    # each distinct text is one UID SEARCH per mailbox: limits.max_search_terms bounds them
    searches = min(count, getattr(limits, "max_search_terms", count))
    text_or = {"operator": "OR", "conditions": [{"text": needle(n)} for n in range(searches)]}
    comparators = [
        {
            "property": prop,
            "isAscending": n % 2 == 0,
            **({"keyword": "$seen"} if "Key" in prop else {}),
        }
        for n, prop in enumerate(
            (SORTS * limits.max_sort_comparators)[: limits.max_sort_comparators]
        )
    ]
    sort = {"property": "receivedAt", "isAscending": False}
    every = [
        (
            "OR of subject/from",
            [["Email/query", {"accountId": account, "filter": cache_or, "sort": [sort],
                              "calculateTotal": True}, "h"]],
        ),
        (
            f"OR of text ({UPSTREAM})",
            [["Email/query", {"accountId": account, "filter": text_or, "calculateTotal": True},
              "h"]],
        ),
        (
            f"{len(comparators)} sort comparators",
            [["Email/query", {"accountId": account, "sort": comparators, "calculateTotal": True,
                              "limit": limits.max_objects_in_get}, "h"]],
        ),
        (
            f"Email/get of {len(ids[: limits.max_objects_in_get])}",
            [["Email/get", {"accountId": account, "ids": ids[: limits.max_objects_in_get],
                            "properties": list(LIST_PROPERTIES)}, "h"]],
        ),
    ]  # fmt: skip
    return [every[KINDS.index(kind)] for kind in kinds]


@dataclass
class HeavyLog:
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu: float = 0.0  # seconds of CPU of the heavy client's process


async def heavy_loop(
    jmap: Jmap, requests: list[tuple[str, list[list[Any]]]], start: int, log: HeavyLog
) -> None:
    turn = start
    while True:
        name, calls = requests[turn % len(requests)]
        turn += 1
        started = time.perf_counter()
        try:
            got = await jmap.responses(calls)
        except asyncio.CancelledError:
            log.outcomes[f"{name}: still running when the phase ended"] += 1
            raise
        except read_path.JmapError as exc:
            log.outcomes[f"{name}: {str(exc)[:60]}"] += 1
            continue
        log.seconds.setdefault(name, []).append(time.perf_counter() - started)
        response, args, _ = got[0]
        if response == "error":
            log.outcomes[f"{name}: {args['type']} ({args.get('description', '')[:70]})"] += 1
        else:
            log.outcomes[f"{name}: answered"] += 1


def heavy_process(
    base: str,
    username: str,
    requests: list[tuple[str, list[list[Any]]]],
    concurrency: int,
    ready: Any,
    stop: Any,
    out: Any,
) -> None:
    """The heavy client, in a process of its own (as a real client is): its requests and
    their big responses cost the proxy's event loop nothing but the proxy's own work."""

    async def main() -> HeavyLog:
        log = HeavyLog()
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            jmap = Jmap(http, base, username)
            await jmap.session()
            # The heavy account has one cache reader, which its OR (the longest read) holds
            # for the whole phase: a request that would take it first decides whether the
            # upstream search runs at all then (it reads the mailbox list before it searches).
            # It starts first, so that every phase has the same heavy work, the search included.
            order = sorted(
                range(concurrency), key=lambda n: UPSTREAM not in requests[n % len(requests)][0]
            )
            hogs = []
            for n in order:
                hogs.append(asyncio.ensure_future(heavy_loop(jmap, requests, n, log)))
                if UPSTREAM in requests[n % len(requests)][0]:
                    await asyncio.sleep(0.3)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            for hog in hogs:
                hog.cancel()
            await asyncio.gather(*hogs, return_exceptions=True)
        return log

    log = asyncio.run(main())
    out.put((dict(log.outcomes), log.seconds, time.process_time()))


async def light_loop(
    jmap: Jmap, think: float, delay: float, samples: list[float], stop: asyncio.Event
) -> None:
    await asyncio.sleep(delay)  # spread out: the clients do not all ask at the same instant
    while not stop.is_set():
        started = time.perf_counter()
        await jmap.open_inbox()
        samples.append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), think)


async def loop_lag(lags: list[float], stop: asyncio.Event) -> None:
    """How late a 1 ms timer fires: the event loop busy or waiting for the GIL."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


async def phase(
    lights: list[Jmap],
    requests: list[tuple[str, list[list[Any]]]],
    args: argparse.Namespace,
    heavy_log: HeavyLog,
    lags: list[float],
    cpu: Cpu,
) -> list[float]:
    samples: list[float] = []
    started, proxy, dovecot = time.perf_counter(), time.process_time(), tree_cpu(args.dovecot)
    stop = asyncio.Event()
    lag = asyncio.ensure_future(loop_lag(lags, stop))
    loops = [
        asyncio.ensure_future(
            light_loop(j, args.think, args.think * n / len(lights), samples, stop)
        )
        for n, j in enumerate(lights)
    ]
    await asyncio.sleep(args.phase)
    stop.set()
    await asyncio.gather(*loops, lag)
    cpu.add(
        time.process_time() - proxy,
        tree_cpu(args.dovecot) - dovecot,
        time.perf_counter() - started,
    )
    return samples


async def beside_heavy(
    lights: list[Jmap],
    heavy: Jmap,
    requests: list[tuple[str, list[list[Any]]]],
    args: argparse.Namespace,
    heavy_log: HeavyLog,
    lags: list[float],
    cpu: Cpu,
) -> list[float]:
    """A phase with the heavy client sending from its own process."""
    mp = multiprocessing.get_context("spawn")
    ready, stop, out = mp.Event(), mp.Event(), mp.Queue()
    client = mp.Process(
        target=heavy_process,
        args=(heavy.base, heavy.username, requests, args.heavy_concurrency, ready, stop, out),
    )
    client.start()
    try:
        if not await asyncio.to_thread(ready.wait, 120):
            raise RuntimeError("the heavy client did not start")
        await asyncio.sleep(0.5)  # its first requests are under way
        samples = await phase(lights, requests, args, heavy_log, lags, cpu)
    finally:
        stop.set()
    outcomes, seconds, client_cpu = await asyncio.to_thread(out.get, True, 600)
    await asyncio.to_thread(client.join, 60)
    heavy_log.outcomes.update(outcomes)
    heavy_log.cpu += client_cpu
    for name, values in seconds.items():
        heavy_log.seconds.setdefault(name, []).extend(values)
    return samples


async def heavy_gone(services: Any, account_id: str) -> float:
    """Wait until the heavy account's cancelled requests have stopped in the proxy: no cache
    transaction runs for it and none of its searches runs upstream; return the seconds."""
    started = time.perf_counter()
    pool = services.pools.get(account_id)
    while services.store.running(account_id) or (pool is not None and pool.searches.locked()):
        if time.perf_counter() - started > 60:
            raise RuntimeError("the heavy account's requests still run 60 s after its client left")
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def run(dovecot: DovecotServer, args: argparse.Namespace, workdir: Path) -> int:
    cfg = Config(
        imap=ImapConfig(host=dovecot.host, port=dovecot.port, security="none"),
        server=ServerConfig(listen="127.0.0.1:0"),
        cache=dataclasses.replace(
            CacheConfig(path=str(workdir / "cache.sqlite3")),
            **(
                {"readers_per_account": args.readers_per_account}
                if args.readers_per_account
                else {}
            ),
            **({"read_processes": args.read_processes} if args.read_processes >= 0 else {}),
        ),
    )
    server = TestServer(make_app(cfg), host="127.0.0.1")
    await server.start_server()
    connector = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600))
    base = str(server.make_url("")).rstrip("/")
    try:
        heavy = Jmap(http, base, "heavy")
        lights = [Jmap(http, base, f"light{n:02d}") for n in range(args.light)]
        services = server.app[views.SERVICES]
        started = time.perf_counter()
        for jmap in (heavy, *lights):
            await jmap.session()
            await jmap.find_inbox()
            await services.sync_for(jmap.account_id).wait_filled()
        say(f"first syncs of {1 + args.light} accounts: {time.perf_counter() - started:.1f} s")
        got = await heavy.responses(
            [["Email/query", {"accountId": heavy.account_id, "limit": 1000}, "q"]]
        )
        requests = heavy_requests(cfg, heavy, got[0][1]["ids"], args.kinds.split(","))
        for jmap in lights:  # warm: previews computed, bodies' first fetches done
            await jmap.open_inbox()
        alone: list[float] = []
        beside: list[float] = []
        lags_alone: list[float] = []
        lags_beside: list[float] = []
        heavy_log = HeavyLog()
        ratios: list[float] = []
        cpu_alone, cpu_beside = Cpu(), Cpu()
        for number in range(args.rounds):
            a = await phase(lights, requests, args, heavy_log, lags_alone, cpu_alone)
            before = dataclasses.replace(cpu_beside)
            b = await beside_heavy(
                lights, heavy, requests, args, heavy_log, lags_beside, cpu_beside
            )
            settled = await heavy_gone(services, heavy.account_id)
            ratios.append(p95(b) / p95(a))
            span = cpu_beside.seconds - before.seconds
            proxy_cpu = (cpu_beside.proxy - before.proxy) / span
            dovecot_cpu = (cpu_beside.dovecot - before.dovecot) / span
            say(
                f"round {number + 1}: alone {len(a)} requests, p95 {p95(a) * 1000:.1f} ms;"
                f" beside the heavy client {len(b)}, p95 {p95(b) * 1000:.1f} ms"
                f" ({ratios[-1]:.2f}x); CPU s/s beside: proxy {proxy_cpu:.2f},"
                f" Dovecot {dovecot_cpu:.2f}; its requests stopped {settled:.2f} s after it left"
            )
            alone += a
            beside += b
    finally:
        await http.close()
        await server.close()
    report(alone, beside, ratios, heavy_log, args)
    for label, pick in (("p95", p95), ("max", max)):
        x, y = pick(lags_alone) * 1000, pick(lags_beside) * 1000
        say(f"  event loop lag {label} (a 1 ms timer, late by)            {x:8.1f}  {y:8.1f}")
    for label, alone_cpu, beside_cpu in (
        ("proxy process (and the light clients)", cpu_alone.proxy, cpu_beside.proxy),
        ("Dovecot", cpu_alone.dovecot, cpu_beside.dovecot),
    ):
        x, y = alone_cpu / cpu_alone.seconds, beside_cpu / cpu_beside.seconds
        say(f"  CPU seconds per second, {label:<30}{x:8.2f}  {y:8.2f}")
    return 0


def report(
    alone: list[float], beside: list[float], ratios: list[float], heavy: HeavyLog, args: Any
) -> None:
    say("")
    say(f"heavy client's process: {heavy.cpu:.1f} s of CPU over {args.rounds} phases")
    say("heavy account's requests (kind: outcome, count; median seconds of each kind):")
    for outcome, count in sorted(heavy.outcomes.items()):
        say(f"  {outcome}: {count}")
    for name, seconds in sorted(heavy.seconds.items()):
        say(f"  {name}: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s")
    say("")
    say(f"{args.light} light accounts opening their inbox (ms)   alone    beside   ratio")
    for label, pick in (("p50", statistics.median), ("p95", p95)):
        x, y = pick(alone) * 1000, pick(beside) * 1000
        say(f"  {label:<48}{x:8.1f}  {y:8.1f}  {y / x:5.2f}x")
    ratio = p95(beside) / p95(alone)
    verdict = "met" if ratio <= TARGET_P95_RATIO else "MISSED"
    say(f"  requests: {len(alone)} alone, {len(beside)} beside")
    rounds = ", ".join(f"{r:.2f}x" for r in ratios)
    say(f"  p95 ratio of each round: {rounds} (median {statistics.median(ratios):.2f}x)")
    say(f"p95 beside / alone: {ratio:.2f}x (target <= {TARGET_P95_RATIO:g}x: {verdict})")


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    here = Path(__file__).resolve().parent
    git = subprocess.run(
        ["git", "-C", str(here), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()}; code {git or '?'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--light", type=int, default=20, help="light accounts (%(default)s)")
    parser.add_argument("--light-messages", type=int, default=300, help="(%(default)s)")
    parser.add_argument("--heavy-messages", type=int, default=10_000, help="(%(default)s)")
    parser.add_argument(
        "--heavy-concurrency", type=int, default=4, help="heavy requests in flight (%(default)s)"
    )
    parser.add_argument("--think", type=float, default=0.5, help="seconds between inbox opens")
    parser.add_argument("--phase", type=float, default=12.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=5, help="alone/beside pairs")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="heavy requests to send, of %(default)s: OR of subject/from, OR of text, sort,"
        " Email/get",
    )
    parser.add_argument(
        "--readers-per-account", type=int, default=0, help="cache.readers_per_account (default)"
    )
    parser.add_argument(
        "--read-processes",
        type=int,
        default=-1,
        help="cache.read_processes (default); 0 runs every read in the proxy's process",
    )
    args = parser.parse_args()
    say(f"fairness benchmark: {describe_machine()}")
    ensure_dovecot_installed()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-fair-"))
    dovecot = DovecotServer.start(workdir / "dovecot")
    try:
        started = time.perf_counter()
        dovecot.add_user("heavy", PASSWORD)
        seed_inbox(dovecot, "heavy", args.heavy_messages, seed=1)
        for n in range(args.light):
            dovecot.add_user(f"light{n:02d}", PASSWORD)
            seed_inbox(dovecot, f"light{n:02d}", args.light_messages, seed=2 + n)
        say(
            f"seeded {args.heavy_messages:,} + {args.light} x {args.light_messages:,} messages"
            f" in {time.perf_counter() - started:.1f} s"
        )
        assert dovecot._process is not None  # running: its processes' CPU is measured
        args.dovecot = dovecot._process.pid
        return asyncio.run(run(dovecot, args, workdir))
    finally:
        dovecot.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
