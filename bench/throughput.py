"""Throughput: many clients opening their inbox at once, the proxy beside Cyrus's own JMAP.

Run by hand (about 3-5 minutes on a 2-core machine, a third of it seeding)::

    python3 bench/throughput.py
    python3 bench/throughput.py --clients 1,4,20,50 --seconds 8 --messages 500

It starts a private Dovecot and a private Cyrus 3.6 with its JMAP module (``httpd`` with
``httpmodules: jmap``), seeds ``--accounts`` users on both with the same generated mail
(``mailgen``: Maildir files for Dovecot, one MULTIAPPEND per batch for Cyrus), starts
``imapjmap serve`` as its own process with the default configuration
(``max_concurrent_requests`` 8, a request over it waits up to
``concurrent_request_wait_seconds``; log level info: a line per request), syncs every
account, then for each number of clients and each layout:

- **one account**: every client uses the same account;
- **N accounts**: client *i* uses account *i* mod ``--accounts``,

each client sends the open-inbox request (``Email/query`` of INBOX newest first, limit 50,
and ``Email/get`` of those 50 with the list properties, one JMAP request) in a closed loop
for ``--seconds`` seconds, after a second of warm-up, to the proxy and then to Cyrus.  It
prints requests/s, p50 and p95 of the answered requests, the refused ones (HTTP 4xx/5xx,
e.g. the ``limit`` request error, after which the client waits ``Retry-After`` seconds) and
the proxy's CPU time per request, and the ratio of requests/s proxy / Cyrus, measured side
by side.  The clients of a cell run in a process of their own (``loadgen.py``: raw sockets,
keep-alive, the request's bytes built once), whose CPU per request is printed beside the
proxy's and its Dovecot's: an aiohttp client in this process cost about as much CPU per
request as the proxy, on the same cores.  The proxy's IMAP commands per request come from
its ``/metrics``.

Cyrus's JMAP ships in Debian's ``cyrus-caldav`` package (``httpd``), which the tests'
Cyrus does not unpack; it is downloaded and unpacked beside it (``apt-get download``, no
install); its httpd also links ``libshp2`` (``apt-get install libshp2``).
``--no-cyrus`` measures the proxy alone.  ``--baseline DIR`` also serves the proxy's code in
the checkout ``DIR`` (e.g. a ``git worktree`` of the previous commit) as a second proxy
process on the same Dovecot, measured cell by cell beside the first: the ratios of their
requests/s and CPU per request compare two versions under the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import aiohttp
import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
import read_path
from mailgen import Generator, Message, seed_inbox

from devservers.cyrus import CyrusError, CyrusServer, cyrus_prefix
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from devservers.postgres import PostgresServer

CORE: Final = read_path.CORE
MAIL: Final = read_path.MAIL
PASSWORD: Final = read_path.PASSWORD
LIST_PROPERTIES: Final = read_path.LIST_PROPERTIES
APPEND_BATCH: Final = 100  # messages in one Cyrus MULTIAPPEND
WARM_UP: Final = 1.0  # seconds of requests not counted at the start of each cell
# targets (issue "Performance at scale"; README "Performance")
P95_MS_AT_20: Final = 100.0
RATIO_TO_CYRUS: Final = 2.0

say = read_path.say
p95 = read_path.p95


# -- Cyrus with its JMAP module ----------------------------------------------------------------


def cyrus_httpd() -> Path:
    """Cyrus's ``httpd`` (Debian ``cyrus-caldav``), unpacked beside the tests' Cyrus."""
    prefix = cyrus_prefix().parent / "cyrus-httpd"
    binary = prefix / "usr" / "lib" / "cyrus" / "bin" / "httpd"
    if binary.exists():
        return binary
    prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imapjmap-cyrus-httpd-") as tmp:
        args = ["apt-get", "download", "-q"]
        if os.geteuid() == 0:  # apt's sandbox user cannot write into root's temporary dir
            args += ["-o", "APT::Sandbox::User=root"]
        subprocess.run([*args, "cyrus-caldav"], cwd=tmp, check=True, capture_output=True)
        for deb in Path(tmp).glob("cyrus-caldav_*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(prefix)], check=True)
    if not binary.exists():
        raise CyrusError("cyrus-caldav holds no usr/lib/cyrus/bin/httpd")
    return binary


def check_httpd_libraries(server: CyrusServer) -> None:
    """Cyrus's master starts httpd only when a client connects: a missing library would show
    as a closed connection, so it is looked for first."""
    env = {**os.environ, "LD_LIBRARY_PATH": server._env()["LD_LIBRARY_PATH"]}
    out = subprocess.run(
        ["ldd", str(cyrus_httpd())], env=env, capture_output=True, text=True, check=False
    ).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if missing:
        raise CyrusError(f"Cyrus httpd needs {missing}: apt-get install libshp2 (or --no-cyrus)")


@dataclass(eq=False)
class CyrusJmap(CyrusServer):
    """The tests' Cyrus, plus ``httpd`` serving JMAP on ``http_port``."""

    http_port: int = 0

    def _write_config(self) -> None:
        super()._write_config()
        if not self.http_port:
            self.http_port = read_path._free_port()
        httpd = cyrus_httpd()
        with self.config_path.open("a") as conf:
            conf.write("httpmodules: jmap\nhttpallowcompress: no\n")
        services = self.services_path.read_text().replace(
            "SERVICES {\n",
            "SERVICES {\n"
            f'  http cmd="{httpd} -C {self.config_path}" '
            f'listen="127.0.0.1:{self.http_port}" prefork=0 maxchild=200\n',
        )
        self.services_path.write_text(services)

    def wait_http(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise CyrusError(f"Cyrus httpd does not listen on {self.http_port}")


def _imap_date(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime('"%d-%b-%Y %H:%M:%S +0000"')


_FLAG_NAMES: Final = {"F": "\\Flagged", "R": "\\Answered", "S": "\\Seen"}


def _batches(messages: Iterator[Message], size: int) -> Iterator[list[Message]]:
    batch: list[Message] = []
    for message in messages:
        batch.append(message)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def seed_cyrus(server: CyrusServer, username: str, count: int, seed: int = 1) -> None:
    """The mail ``mailgen`` writes for Dovecot, APPENDed to the user's Cyrus INBOX (MULTIAPPEND,
    LITERAL+: one round trip per batch)."""
    client = read_path.RawImap(server.host, server.port)
    try:
        client.command(f'LOGIN "{username}" "{PASSWORD}"')
        for batch in _batches(iter(Generator(count, seed)), APPEND_BATCH):
            parts = []
            for message in batch:
                flags = " ".join(_FLAG_NAMES[c] for c in message.flags)
                head = f" ({flags}) {_imap_date(message.internaldate)} {{{len(message.raw)}+}}\r\n"
                parts.append(head.encode() + message.raw)
            client._tag += 1
            tag = b"R%04d" % client._tag
            client.sock.sendall(tag + b" APPEND INBOX" + b"".join(parts) + b"\r\n")
            reply = _read_tagged(client, tag)
            if not reply.startswith(tag + b" OK"):
                raise CyrusError(f"APPEND for {username}: {reply[:200]!r}")
    finally:
        client.close()


def _read_tagged(client: read_path.RawImap, tag: bytes) -> bytes:
    data = bytearray(b"\r\n")
    while True:
        found = data.find(b"\r\n" + tag + b" ")
        if found >= 0:
            end = data.find(b"\r\n", found + 2)
            if end >= 0:
                return bytes(data[found + 2 : end])
        chunk = client.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Cyrus closed the connection during APPEND")
        data += chunk


# -- a JMAP client for either server -----------------------------------------------------------


@dataclass
class Account:
    """One logged-in account of a server: where to POST, its headers and its inbox."""

    api_url: str
    headers: dict[str, str]
    account_id: str
    inbox_id: str
    body: bytes = b""

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, session_url: str, user: str) -> Account:
        jmap = read_path.Jmap(http, "", user)
        headers = jmap.headers
        async with http.get(session_url, headers=headers) as resp:
            if resp.status != 200:
                raise read_path.JmapError(f"{session_url}: HTTP {resp.status}")
            session = await resp.json()
        api_url = urljoin(session_url, session["apiUrl"])
        account_id = session["primaryAccounts"][MAIL]
        get = {"accountId": account_id, "ids": None, "properties": ["id", "role"]}
        payload = {"using": [CORE, MAIL], "methodCalls": [["Mailbox/get", get, "m"]]}
        async with http.post(api_url, json=payload, headers=headers) as resp:
            boxes = (await resp.json())["methodResponses"][0][1]["list"]
        inbox = next(b["id"] for b in boxes if b["role"] == "inbox")
        account = cls(api_url, headers, account_id, inbox)
        account.body = account.open_inbox_body()
        return account

    def open_inbox_body(self) -> bytes:
        calls = read_path.open_inbox_calls(self.account_id, self.inbox_id)
        return json.dumps({"using": [CORE, MAIL], "methodCalls": calls}).encode()


@dataclass
class Cell:
    """One measurement: answered requests' latencies, refusals, failures."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # every request sent, warm-up included (for the CPU per request)
    cpu_ms: float = 0.0  # the server process's CPU per request
    client_cpu_ms: float = 0.0  # the load generator's CPU per request
    imap_cpu_ms: float = 0.0  # the proxy's Dovecot's CPU per request (all its processes)
    db_cpu_ms: float = 0.0  # its PostgreSQL's CPU per request (all its processes)
    commands: Counter[str] = field(default_factory=Counter)  # the proxy's IMAP commands

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def ms(self, pick: Any) -> float:
        return float(pick(self.latencies)) * 1000 if self.latencies else float("nan")


def raw_request(account: Account) -> str:
    """The open-inbox request as the bytes on the wire (latin-1 text for the JSON spec)."""
    url = urlsplit(account.api_url)
    assert "Content-Type" in account.headers
    head = [
        f"POST {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1",
        f"Host: {url.netloc}",
        *(f"{name}: {value}" for name, value in account.headers.items()),
        f"Content-Length: {len(account.body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode().decode("latin-1") + account.body.decode(
        "latin-1"
    )


LOADGEN: Final = Path(__file__).with_name("loadgen.py")


async def measure(accounts: Sequence[Account], clients: int, seconds: float) -> Cell:
    """One cell, its clients run by ``loadgen.py`` in a process of its own (a closed loop on
    raw sockets: the client's CPU is not the benchmark's, and is reported apart)."""
    targets = []
    for account in accounts:
        url = urlsplit(account.api_url)
        host = url.hostname or "127.0.0.1"
        targets.append({"host": host, "port": url.port or 80, "request": raw_request(account)})
    spec = {
        "clients": clients,
        "warm_up": WARM_UP,
        "seconds": seconds,
        "expect": 50,
        "targets": targets,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LOADGEN),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(json.dumps(spec).encode())
    if process.returncode:
        raise RuntimeError(f"loadgen.py exited with {process.returncode}")
    got = json.loads(out)
    cell = Cell(seconds, got["latencies"], Counter(got["refused"]), Counter(got["failed"]))
    cell.requests = got["requests"]
    cell.client_cpu_ms = got["cpu"] * 1000 / max(cell.requests, 1)
    return cell


async def imap_commands(http: aiohttp.ClientSession, session_url: str) -> Counter[str]:
    """The proxy's IMAP commands so far by command, from its ``/metrics``."""
    counts: Counter[str] = Counter()
    async with http.get(urljoin(session_url, "/metrics")) as resp:
        if resp.status != 200:
            return counts
        for line in (await resp.text()).splitlines():
            if line.startswith("imapjmap_imap_commands_total{"):
                labels, _, value = line.rpartition(" ")
                command = labels.partition('command="')[2].partition('"')[0]
                counts[command] += int(float(value))
    return counts


# -- the proxy, as its own process -------------------------------------------------------------


@contextlib.contextmanager
def serve(
    dovecot: DovecotServer,
    workdir: Path,
    code: Path | None = None,
    workers: int = 1,
    cluster_url: str | None = None,
    cache_url: str | None = None,
) -> Iterator[tuple[int, int]]:
    """``imapjmap serve`` with the default limits, of the checkout ``code`` if given (else
    the one this Python imports), with ``workers`` processes coordinated through
    ``cluster_url``, its cache in SQLite or at ``cache_url`` (PostgreSQL); yields its port
    and (first) pid."""
    port = read_path._free_port()
    name = "serve" if code is None else "baseline"
    name = name if workers == 1 else f"workers{workers}"
    name = name if cache_url is None else f"{name}-pg"
    config = workdir / f"{name}.toml"
    cache = workdir / f"{name}-cache.sqlite3"
    text = read_path._serve_config(dovecot, port, cache).replace(
        'log_level = "warning"',
        f'log_level = "info"\nworkers = {workers}',  # the default level: a line per request
    )
    if cache_url is not None:
        text = text.replace(f'path = "{cache}"', f'url = "{cache_url}"')
    if cluster_url is not None:
        text += f'\n[cluster]\nurl = "{cluster_url}"\n'
    if cache_url is not None or cluster_url is not None:
        key = workdir / "push-token.key"  # what instances sharing a cache need
        key.write_text(secrets.token_hex(32))
        text += f'\n[auth]\npush_token_key_file = "{key}"\n'
    config.write_text(text)
    log = workdir / f"{name}.log"
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "imapjmap", "serve", "--config", str(config)],
            stdout=out,
            stderr=out,
            env=env,
            cwd=code,  # "-m" puts the working directory first on the path
        )
    try:
        asyncio.run(read_path._wait_listening(port, process, log))
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_synced(http: aiohttp.ClientSession, account: Account, count: int) -> None:
    get = {
        "accountId": account.account_id,
        "ids": [account.inbox_id],
        "properties": ["totalEmails"],
    }
    payload = {"using": [CORE, MAIL], "methodCalls": [["Mailbox/get", get, "m"]]}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        async with http.post(account.api_url, json=payload, headers=account.headers) as resp:
            got = (await resp.json())["methodResponses"][0][1]["list"]
        if got and got[0]["totalEmails"] >= count:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"account {account.account_id} not synced within 300 s")


# -- the run -----------------------------------------------------------------------------------


Layout = tuple[str, int]  # ("1 account" | "20 accounts", accounts used)


@dataclass
class Target:
    """A server under test: its name, session URL, accounts once opened."""

    name: str
    session_url: str
    synced: int = 0  # wait until each INBOX holds this many (the proxy's first sync)
    pid: int = 0  # a process whose CPU time per request is reported (0: none)
    imap_pid: int = 0  # its IMAP server's master process, the same (0: none)
    db_pid: int = 0  # its PostgreSQL's postmaster, the same (0: none)
    accounts: list[Account] = field(default_factory=list)


async def run_all(
    targets: Sequence[Target],
    users: Sequence[str],
    args: argparse.Namespace,
    layouts: Sequence[Layout],
) -> dict[tuple[str, str, int], Cell]:
    """Each cell on every server in turn, so that all see the same machine load."""
    results: dict[tuple[str, str, int], Cell] = {}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        for target in targets:
            started = time.perf_counter()
            target.accounts = [await Account.open(http, target.session_url, u) for u in users]
            if target.synced:
                for account in target.accounts:
                    await wait_synced(http, account, target.synced)
            for account in target.accounts:  # warm: previews computed, caches filled
                await measure([account], 1, 0.2)
            took = time.perf_counter() - started
            say(f"  {target.name}: {len(users)} accounts ready in {took:.1f} s")
        cells = 0
        for clients in args.clients:
            for label, used in layouts:
                # each cell starts with another server: the one measured right after
                # Cyrus's (whose processes wind down for a while) is not always the same
                cells += 1
                turn = cells % len(targets)
                for target in [*targets[turn:], *targets[:turn]]:
                    cpu, imap_cpu = process_cpu(target.pid), process_cpu(target.imap_pid)
                    db_cpu = process_cpu(target.db_pid)
                    commands = await imap_commands(http, target.session_url) if target.pid else None
                    cell = await measure(target.accounts[:used], clients, args.seconds)
                    if target.pid and cell.requests:
                        cell.cpu_ms = (process_cpu(target.pid) - cpu) * 1000 / cell.requests
                        imap_cpu = process_cpu(target.imap_pid) - imap_cpu
                        cell.imap_cpu_ms = imap_cpu * 1000 / cell.requests
                        db_cpu = process_cpu(target.db_pid) - db_cpu
                        cell.db_cpu_ms = db_cpu * 1000 / cell.requests
                    if commands is not None:
                        cell.commands = await imap_commands(http, target.session_url)
                        cell.commands.subtract(commands)
                    results[(target.name, label, clients)] = cell
                    say(
                        f"  {target.name:<6} {clients:>3} clients, {label:<11}: "
                        f"{cell.rate:7.1f} req/s, p50 {cell.ms(statistics.median):7.1f} ms, "
                        f"p95 {cell.ms(p95):7.1f} ms, refused {sum(cell.refused.values())}, "
                        f"failed {sum(cell.failed.values())}"
                        + (f", {cell.cpu_ms:.2f} ms CPU each" if cell.cpu_ms else "")
                        + (f" (IMAP server {cell.imap_cpu_ms:.2f})" if target.imap_pid else "")
                        + (f" (PostgreSQL {cell.db_cpu_ms:.2f})" if target.db_pid else "")
                        + f", client {cell.client_cpu_ms:.2f} ms CPU each"
                        + (
                            f", IMAP commands each {commands_each(cell)}"
                            if target.pid and cell.requests
                            else ""
                        )
                        + (f" {dict(cell.refused)}" if cell.refused else "")
                        + (f" {dict(cell.failed)}" if cell.failed else "")
                    )
    return results


def commands_each(cell: Cell) -> str:
    each = {name: f"{n / cell.requests:.2f}" for name, n in sorted(cell.commands.items()) if n}
    return " ".join(f"{name} {n}" for name, n in each.items()) or "0"


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process has used, all its threads, and its
    children's (the workers of ``server.workers``, Dovecot's imap processes), the ended
    ones' included."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    own = sum(int(n) for n in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu(int(child)) for child in children)


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


SQLITE_ONE, PG_ONE, PG_TWO = "proxy", "1 on PG", "2 on PG"


def report_workers(
    results: dict[tuple[str, str, int], Cell], args: argparse.Namespace, layouts: Sequence[Layout]
) -> None:
    """The proxy of ``--workers`` processes beside the one-process proxy, cell by cell."""
    workers = next((key[0] for key in results if key[0].endswith(" workers")), None)
    if workers is None:
        return
    say("")
    say(f"clients layout       | req/s {workers} / 1 | p95 ms {workers} / 1 | CPU ms each")
    for clients in args.clients:
        for label, _ in layouts:
            one, more = results[("proxy", label, clients)], results[(workers, label, clients)]
            ratio = more.rate / one.rate if one.rate else float("inf")
            say(
                f"{clients:>7} {label:<12} | {more.rate:6.1f} / {one.rate:6.1f} {ratio:5.2f}x"
                f" | {more.ms(p95):6.1f} / {one.ms(p95):6.1f}"
                f" | {more.cpu_ms:5.1f} / {one.cpu_ms:5.1f}"
            )


def report_scale_out(
    results: dict[tuple[str, str, int], Cell], args: argparse.Namespace, layouts: Sequence[Layout]
) -> None:
    """Scale-out side by side: one instance on SQLite, one on PostgreSQL, two on it."""
    names = [SQLITE_ONE, PG_ONE, PG_TWO]
    if not all(any(key[0] == name for key in results) for name in names):
        return
    say("")
    say(
        "clients layout       | req/s 1 SQLite / 1 PG / 2 PG | p95 ms"
        "                | CPU ms each: proxy (PostgreSQL)"
    )
    for clients in args.clients:
        for label, _ in layouts:
            cells = [results[(name, label, clients)] for name in names]
            say(
                f"{clients:>7} {label:<12} | "
                + " / ".join(f"{cell.rate:6.1f}" for cell in cells)
                + " | "
                + " / ".join(f"{cell.ms(p95):5.1f}" for cell in cells)
                + " | "
                + " / ".join(
                    f"{cell.cpu_ms:4.2f}" + (f" ({cell.db_cpu_ms:4.2f})" if cell.db_cpu_ms else "")
                    for cell in cells
                )
            )
    say(
        "(two instances on one machine share its cores with PostgreSQL, Dovecot and the"
        " clients: what a second machine would add is not measured here)"
    )


def report(
    results: dict[tuple[str, str, int], Cell], args: argparse.Namespace, layouts: Sequence[Layout]
) -> int:
    say("")
    say(
        "clients layout       | proxy req/s   p50   p95 refused | Cyrus req/s   p50   p95"
        " refused | ratio"
    )
    misses = 0
    for clients in args.clients:
        for label, _ in layouts:
            ours = results[("proxy", label, clients)]
            theirs = results.get(("cyrus", label, clients))
            line = (
                f"{clients:>7} {label:<12} | {ours.rate:11.1f} {ours.ms(statistics.median):5.1f}"
                f" {ours.ms(p95):5.1f} {sum(ours.refused.values()):7d} |"
            )
            if theirs is not None:
                ratio = ours.rate / theirs.rate if theirs.rate else float("inf")
                line += (
                    f" {theirs.rate:11.1f} {theirs.ms(statistics.median):5.1f}"
                    f" {theirs.ms(p95):5.1f} {sum(theirs.refused.values()):7d} | {ratio:5.2f}x"
                )
                if clients >= 20 and ratio < RATIO_TO_CYRUS:
                    misses += 1
            if ours.refused or ours.failed:
                misses += 1
            if clients == 20 and ours.ms(p95) > P95_MS_AT_20:
                misses += 1
            say(line)
    report_workers(results, args, layouts)
    report_scale_out(results, args, layouts)
    if any(key[0] == "before" for key in results):
        say("")
        say("clients layout       | req/s now / before | CPU ms per request now / before")
        for clients in args.clients:
            for label, _ in layouts:
                now, before = (
                    results[("proxy", label, clients)],
                    results[("before", label, clients)],
                )
                ratio = now.rate / before.rate if before.rate else float("inf")
                say(
                    f"{clients:>7} {label:<12} | {now.rate:6.1f} / {before.rate:6.1f} {ratio:5.2f}x"
                    f" | {now.cpu_ms:5.1f} / {before.cpu_ms:5.1f}"
                )
    say(
        f"targets: nothing refused; p95 <= {P95_MS_AT_20:g} ms at 20 clients; requests/s >= "
        f"{RATIO_TO_CYRUS:g}x Cyrus at 20 and 50 clients: "
        + ("met" if not misses else f"{misses} MISSED")
    )
    say(f"load average (1, 5, 15 min) at the end: {uptime()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4,20,50", help="(%(default)s)")
    parser.add_argument("--accounts", type=int, default=20, help="(%(default)s)")
    parser.add_argument("--messages", type=int, default=300, help="per account (%(default)s)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per cell (%(default)s)")
    parser.add_argument("--no-cyrus", action="store_true", help="measure the proxy alone")
    parser.add_argument("--one-account", action="store_true", help="only the layout of one account")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout whose proxy is measured beside this one's"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure a proxy of this many processes (server.workers), coordinated"
        " through a throw-away PostgreSQL, beside the one-process proxy",
    )
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="also one instance on a PostgreSQL cache and two on it (server.workers = 2),"
        " beside the one on SQLite",
    )
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    say(f"throughput benchmark: {read_path.describe_machine()}; load {uptime()}")
    layouts: list[Layout] = [("1 account", 1), (f"{args.accounts} accounts", args.accounts)]
    layouts = [layouts[0]] if args.one_account else layouts
    users = [f"user{n:02d}" for n in range(args.accounts)]
    ensure_dovecot_installed()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-throughput-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        dovecot = DovecotServer.start(workdir / "dovecot")
        stack.callback(dovecot.stop)
        cyrus: CyrusJmap | None = None
        if not args.no_cyrus:
            cyrus = CyrusJmap.start(workdir / "cyrus")
            stack.callback(cyrus.stop)
            check_httpd_libraries(cyrus)
            cyrus.wait_http()
        started = time.perf_counter()
        for user in users:  # the same mail in every account and on both servers
            dovecot.add_user(user, PASSWORD)
            seed_inbox(dovecot, user, args.messages, seed=1)
            if cyrus is not None:
                cyrus.add_user(user, PASSWORD)
                seed_cyrus(cyrus, user, args.messages, seed=1)
        say(
            f"seeded {args.accounts} x {args.messages:,} messages"
            f"{' on Dovecot and Cyrus' if cyrus else ''} in {time.perf_counter() - started:.1f} s"
        )
        with serve(dovecot, workdir) as (port, pid):
            url = f"http://127.0.0.1:{port}/.well-known/jmap"
            imap_pid = dovecot._process.pid if dovecot._process else 0
            targets = [Target("proxy", url, args.messages, pid, imap_pid)]
            postgres: PostgresServer | None = None
            if args.workers > 1 or args.scale_out:
                (workdir / "postgres").mkdir()
                postgres = PostgresServer.start(workdir / "postgres")
                stack.callback(postgres.stop)
            if args.scale_out:
                assert postgres is not None
                for name, workers in ((PG_ONE, 1), (PG_TWO, 2)):
                    cache_url = postgres.create_database(f"scale{workers}")
                    port, pid = stack.enter_context(
                        serve(dovecot, workdir, workers=workers, cache_url=cache_url)
                    )
                    url = f"http://127.0.0.1:{port}/.well-known/jmap"
                    db_pid = int((postgres.data / "postmaster.pid").read_text().split()[0])
                    targets.append(Target(name, url, args.messages, pid, imap_pid, db_pid))
            if args.workers > 1:
                assert postgres is not None
                cluster_url = postgres.create_database("bench")
                port, pid = stack.enter_context(
                    serve(dovecot, workdir, workers=args.workers, cluster_url=cluster_url)
                )
                url = f"http://127.0.0.1:{port}/.well-known/jmap"
                targets.append(Target(f"{args.workers} workers", url, args.messages, pid))
            if args.baseline is not None:
                port, pid = stack.enter_context(serve(dovecot, workdir, args.baseline))
                url = f"http://127.0.0.1:{port}/.well-known/jmap"
                targets.append(Target("before", url, args.messages, pid, imap_pid))
            if cyrus is not None:
                targets.append(Target("cyrus", f"http://127.0.0.1:{cyrus.http_port}/jmap/"))
            results = asyncio.run(run_all(targets, users, args, layouts))
    return report(results, args, layouts)


if __name__ == "__main__":
    raise SystemExit(main())
