"""``imapjmap sync USER``: have the running proxy fill an account's cache, and watch it.

An operator pre-fills an account so that its owner's first client does not wait for the
first sync.  The proxy does the work: a JMAP request with the user's credentials makes it
log in and start syncing every mailbox (``sync.engine``), and further requests keep it
going.  Progress is the messages in the cache (the sum of ``Mailbox/get``'s
``totalEmails``, which the proxy counts from its cached rows, MBX-04) over the messages on
the IMAP server (the sum of its STATUS ``MESSAGES``, asked over a connection of our own
with the same credentials, again every :data:`RECOUNT` seconds since mail may arrive
meanwhile).  Complete when the two are equal.

A message flagged ``\\Deleted`` but not expunged is on the server and hidden from JMAP
(EML-KW-01), so the proxy never caches it as an Email: the server's count leaves such
messages out (``SEARCH DELETED`` in each mailbox that STATUS says has any message), or an
account holding one could never reach complete.  If the cache still stops short, the
command gives up after ``stall`` seconds without progress, saying how far it got.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from imapjmap.admin import running
from imapjmap.config import Config
from imapjmap.errors import AuthenticationFailed, ImapCommandFailed, ProxyError
from imapjmap.imap.commands import Command
from imapjmap.imap.session import ImapSession

POLL: Final = 0.5  # seconds between two looks at the cache
RECOUNT: Final = 10.0  # seconds between two counts on the IMAP server
REQUEST_TIMEOUT: Final = 30.0  # one JMAP request; a refresh may wait for a busy cache
MAIL: Final = "urn:ietf:params:jmap:mail"


class Failed(Exception):
    """Why the command stops short, in one line for the operator."""


class Progress(Protocol):
    """What shows the progress (a tqdm bar; a list in tests)."""

    def show(self, done: int, total: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    cached: int
    on_server: int
    seconds: float


class ProxyClient:
    """JMAP over HTTP Basic to the proxy at its configured address (RFC 8620 §2, §3)."""

    def __init__(self, cfg: Config, username: str, password: str) -> None:
        self._cfg = cfg
        pair = f"{username}:{password}".encode()
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
            "Accept": "application/json",
        }
        self._api = "/jmap/api"
        self._account = ""

    def start(self) -> None:
        """Fetch the session (the proxy logs in upstream and starts the first sync)."""
        session = self._call("GET", "/.well-known/jmap", None)
        self._api = urlsplit(str(session["apiUrl"])).path or self._api
        account = session.get("primaryAccounts", {}).get(MAIL)
        if not isinstance(account, str):
            raise Failed("the proxy's session names no mail account")
        self._account = account

    def cached_messages(self) -> int:
        """The messages in the cache: Mailbox/get's totalEmails, summed (RFC 8621 §2)."""
        body = {
            "using": ["urn:ietf:params:jmap:core", MAIL],
            "methodCalls": [
                ["Mailbox/get", {"accountId": self._account, "properties": ["totalEmails"]}, "m"]
            ],
        }
        answer = self._call("POST", self._api, body)
        name, args, _ = answer["methodResponses"][0]
        if name != "Mailbox/get":
            raise Failed(f"Mailbox/get answered {name}: {args.get('type', args)}")
        return sum(int(mailbox["totalEmails"]) for mailbox in args["list"])

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        conn = running.connection(self._cfg, REQUEST_TIMEOUT, pinned=True)
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read()
        except ssl.SSLCertVerificationError as exc:
            host, port = running.address(self._cfg)
            raise Failed(
                f"the server at {host}:{port} does not show server.tls_certificate"
                f" ({exc.verify_message}): the password was not sent"
            ) from exc
        except OSError as exc:
            host, port = running.address(self._cfg)
            raise Failed(f"no proxy answers at {host}:{port} ({exc}): start it first") from exc
        finally:
            conn.close()
        if response.status == 401:
            raise Failed("the proxy refused these credentials")
        if response.status != 200:
            detail = " ".join(text.decode("utf-8", "replace").split())[:200]
            raise Failed(f"the proxy answered {response.status}: {detail}")
        answer = json.loads(text)
        if not isinstance(answer, dict):
            raise Failed("the proxy answered something other than a JSON object")
        return answer


async def server_messages(session: ImapSession) -> int:
    """The messages in every mailbox that holds any, as the IMAP server counts them."""
    entries, statuses = await session.list_mailboxes(with_status=True)
    counted = {s.name: s.messages for s in statuses}
    total = 0
    for entry in entries:
        if entry.has("\\Noselect") or entry.has("\\NonExistent"):
            continue
        messages = counted.get(entry.name)
        if messages is None:  # no LIST-STATUS: one STATUS per mailbox
            try:
                messages = (await session.status(entry.name, "MESSAGES")).messages
            except ImapCommandFailed:
                continue  # gone since the LIST
        if messages:
            messages -= await deleted_messages(session, entry.name)
        total += messages or 0
    await session.unselect()
    return total


async def deleted_messages(session: ImapSession, name: str) -> int:
    """How many messages of ``name`` are flagged ``\\Deleted`` (RFC 3501 §6.4.4), read-only."""
    try:
        await session.select(name, readonly=True)
    except ImapCommandFailed:
        return 0  # gone since the LIST: its messages are gone too
    # ESEARCH's COUNT (RFC 4731) avoids listing every number of a big mailbox.
    text = "SEARCH RETURN (COUNT) DELETED" if session.has("ESEARCH") else "SEARCH DELETED"
    reply = await session.execute(Command((text,)), what="SEARCH")
    counted = 0
    for result in reply.searches:
        counted += result.count if result.count is not None else len(result.ids)
    return counted


async def fill(
    cfg: Config,
    username: str,
    password: str,
    progress: Progress,
    *,
    stall: float,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Start the account's sync on the proxy and follow it until the cache holds every
    message.  Raises :class:`Failed`."""
    upstream = cfg.upstream_for(username)
    if upstream is None:
        raise Failed("no upstream serves this login's domain (see [[upstreams]])")
    client = ProxyClient(cfg, username, password)
    await asyncio.to_thread(client.start)
    try:
        session = await ImapSession.connect(upstream.imap, username, password)
    except AuthenticationFailed:
        raise Failed("the IMAP server refused these credentials") from None
    except ProxyError as exc:
        raise Failed(f"cannot reach the IMAP server: {exc}") from exc
    started = clock()
    try:
        on_server, counted_at = await server_messages(session), clock()
        cached = await asyncio.to_thread(client.cached_messages)
        moved_at, last = clock(), cached
        while True:
            progress.show(min(cached, on_server), on_server)
            if cached == on_server:
                return Outcome(cached, on_server, clock() - started)
            if clock() - moved_at > stall:
                raise Failed(f"no progress for {stall:g} s at {cached} of {on_server} messages")
            await asyncio.sleep(POLL)
            if clock() - counted_at >= RECOUNT:
                on_server, counted_at = await server_messages(session), clock()
            cached = await asyncio.to_thread(client.cached_messages)
            if cached != last:
                moved_at, last = clock(), cached
    except ProxyError as exc:
        raise Failed(f"the IMAP server failed: {exc}") from exc
    finally:
        await session.close()
        progress.close()
