"""One IMAP connection: a logged-in session with typed commands over asyncio.

Theory of operation
-------------------
asyncio opens the connection (TLS, or STARTTLS through ``loop.start_tls``); every byte the
server sends goes through :class:`imapjmap.imap.framing.Framer`, which cuts it into whole
responses: untagged ones (each a tuple of chunks ``(line, literal, line, ...)`` that
:func:`imapjmap.imap.parse.parse_reply` turns into a typed :class:`Reply`), tagged
completions and ``+`` continuations.  :class:`_Connection` routes them: the first response
is the greeting; while one of our commands is in flight, every untagged response is kept
for it, verbatim (a LIST-STATUS answer carries ``* STATUS`` lines next to ``* LIST``, a
CHANGEDSINCE fetch carries ``* VANISHED (EARLIER)``); between commands, unsolicited
responses are queued for watchers.

Rules
1. One command at a time per connection; the pool gives a session to one user at a time.
   The one exception is a NOOP written right after a command, in the same write
   (``execute(..., noop_after=True)``): what it reports about the selected mailbox tells
   whether the command saw that mailbox current, without a round trip of its own.  Servers
   may complete the two in either order; the reply holds both.
2. A timeout, a cancellation, a BAD, a parse failure or a lost connection marks the session
   ``broken``; a broken session is never used again (the pool discards it).  Bytes that are
   not IMAP (or pass the framer's size limits), a tagged line or a continuation nobody
   waits for, close the connection: its position in the stream is lost.
3. A tagged NO leaves the wire in sync: it raises :class:`ImapCommandFailed` and the session
   stays usable.
4. Passwords and tokens never reach a log line: commands carrying them are not logged.
5. A :class:`BearerToken` in place of the password logs in with SASL XOAUTH2 (Google's
   "OAuth 2.0 Mechanism"), with SASL-IR where offered; a server's error challenge is
   answered with an empty response, as that document says, and the login fails.
6. A login made for an HTTP client names that client first, with RFC 2971
   ``ID ("x-originating-ip" ... "x-originating-port" ...)`` where the server offers ID:
   Dovecot then applies its per-address login penalty and its logs to the client, not to the
   proxy (it believes the items only from ``login_trusted_networks``).
7. The capabilities before login come from a CAPABILITY command after the greeting, never
   from the greeting's ``[CAPABILITY]`` code alone, and are asked again after STARTTLS
   (RFC 3501 §6.2.1).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import re
import ssl
import time
from dataclasses import dataclass
from typing import Final

from imapjmap.config import ImapConfig
from imapjmap.credentials import BearerToken as BearerToken  # re-exported (Rule 5)
from imapjmap.credentials import ClientAddress, xoauth2_response
from imapjmap.errors import (
    AuthenticationFailed,
    ImapCommandFailed,
    ImapCommandTooLong,
    ImapConnectionLost,
    ImapProtocolViolation,
    ImapUnavailable,
)
from imapjmap.imap import commands
from imapjmap.imap.commands import Command
from imapjmap.imap.framing import Continuation, Framer, Response, Tagged, Untagged
from imapjmap.imap.models import ListEntry, MailboxStatus, Reply
from imapjmap.imap.parse import parse_capabilities, parse_id, parse_reply
from imapjmap.metrics import EVENTS, imap_command_label
from imapjmap.upstream.profiles import Profile, choose

log = logging.getLogger(__name__)

# Capabilities the rest of the proxy asks about (docs/design.md, "Servers").
KNOWN_CAPABILITIES: Final = (
    "CONDSTORE",
    "QRESYNC",
    "OBJECTID",
    "X-GM-EXT-1",
    "SPECIAL-USE",
    "LIST-STATUS",
    "MOVE",
    "UIDPLUS",
    "ESEARCH",
    "SORT",
    "NOTIFY",
    "IDLE",
    "PREVIEW",
    "BINARY",
    "LITERAL+",
    "ACL",
    "LIST-EXTENDED",
    "ENABLE",
    "QUOTA",
    "UNSELECT",
    "NAMESPACE",
    "SNIPPET=FUZZY",
    "CREATE-SPECIAL-USE",
    "MULTIAPPEND",
)

_MAX_UNSOLICITED: Final = 10_000
# a BAD that blames the command's size (Dovecot: "Too long argument"; others: "Line too
# long", "Literal too large")
_TOO_LONG: Final = re.compile(r"\btoo (?:long|large|big)\b", re.IGNORECASE)
_XGUID_RE: Final = re.compile(r"[0-9a-fA-F]{32}")


def _reports_change(reply: Reply) -> bool:
    """Whether a reply carries news about the selected mailbox (RFC 3501 §7.3-7.4, RFC 7162
    §3.1.2.1 and §3.2.10): a count, an expunge, a flag change, a new modseq."""
    return bool(
        reply.exists is not None
        or reply.expunged
        or reply.vanished
        or reply.fetches
        or reply.flags is not None
        or reply.code("HIGHESTMODSEQ")
        or reply.code("UIDVALIDITY")
    )


def _reports_trouble(reply: Reply) -> bool:
    return any(s.status in ("NO", "BAD", "BYE") for s in reply.statuses_untagged)


class _Pending:
    """Our command in flight: its tag, the parts still to send, and what came back."""

    __slots__ = (
        "continued", "done", "idle", "records", "result", "sasl", "tag", "text", "to_send",
        "trailer", "trailer_result",
    )  # fmt: skip

    def __init__(
        self,
        tag: str,
        to_send: collections.deque[bytes],
        idle: bool = False,
        sasl: bytes | None = None,
        trailer: str | None = None,
    ) -> None:
        self.tag = tag
        self.trailer = trailer  # the tag of a NOOP written right after this command
        self.trailer_result = ""
        self.to_send = to_send
        self.idle = idle  # IDLE: "+" means idling, untagged responses are events
        self.sasl = sasl  # AUTHENTICATE: the response to the next "+" (then empty ones)
        self.records: list[tuple[bytes, ...]] = []
        self.result = ""
        self.text = b""
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.continued: asyncio.Future[None] = loop.create_future()


class _Connection(asyncio.Protocol):
    """The transport's side of one connection: frames what arrives, routes each response to
    the greeting, the command in flight or the unsolicited queue, and writes commands."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._framer = Framer()
        self._tags = itertools.count(1)
        self._pending: _Pending | None = None
        self.greeting: asyncio.Future[Untagged] = asyncio.get_running_loop().create_future()
        self.unsolicited: collections.deque[tuple[bytes, ...]] = collections.deque(
            maxlen=_MAX_UNSOLICITED
        )
        self.unsolicited_event = asyncio.Event()
        self.lost: BaseException | None = None
        self.closed = asyncio.Event()
        self.bye: bytes | None = None

    # -- asyncio entry points ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for response in self._framer.feed(data):
                self._route(response)
        except ImapProtocolViolation as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()  # Rule 2: where the next response starts is unknown

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by the server")
        self.closed.set()
        self._fail(ImapConnectionLost(f"connection lost: {self.lost}"))

    # -- routing -----------------------------------------------------------------------------

    def _route(self, response: Response) -> None:
        pending = self._pending
        if isinstance(response, Untagged):
            chunks = response.chunks
            if chunks[0][:3].upper() == b"BYE":
                self.bye = b"* " + chunks[0]
            if not self.greeting.done():
                self._greeted(response)
            elif pending is None:
                self.unsolicited.append(chunks)
                self.unsolicited_event.set()
            else:
                pending.records.append(chunks)
                if pending.idle:
                    self.unsolicited_event.set()
        elif pending is None:
            raise ImapProtocolViolation(f"unexpected response from server: {response!r:.80}")
        elif isinstance(response, Continuation):
            self._continue(pending)
        else:
            self._tagged(pending, response)

    def _greeted(self, greeting: Untagged) -> None:
        status = greeting.chunks[0].split(b" ", 1)[0].upper()
        if status in (b"OK", b"PREAUTH"):
            self.greeting.set_result(greeting)
        elif status == b"BYE":
            text = greeting.chunks[0].decode("utf-8", "replace")[:200]
            self.greeting.set_exception(ImapUnavailable(f"the server refused: {text}"))
        else:
            raise ImapProtocolViolation(f"not an IMAP greeting: {greeting.chunks[0][:80]!r}")

    def _continue(self, pending: _Pending) -> None:
        assert self.transport is not None
        if pending.idle:
            if not pending.continued.done():
                pending.continued.set_result(None)
        elif pending.sasl is not None:
            self.transport.write(pending.sasl + b"\r\n")
            pending.sasl = b""  # a further challenge is an error: answer it empty
        elif pending.to_send:
            literal = pending.to_send.popleft()
            text = pending.to_send.popleft()
            self.transport.write(literal + text)
        else:
            raise ImapProtocolViolation("server asked for a literal that we do not have")

    def _tagged(self, pending: _Pending, response: Tagged) -> None:
        if response.tag == pending.trailer:
            # the pipelined NOOP: its untagged responses are already with this command;
            # its response code (e.g. [HIGHESTMODSEQ]) joins them as an untagged OK would
            pending.trailer_result = response.status
            if response.text.startswith(b"["):
                pending.records.append((b"OK " + response.text,))
        elif response.tag == pending.tag:
            pending.result = response.status
            pending.text = response.text
        else:
            raise ImapProtocolViolation(f"unexpected tag from server: {response!r:.80}")
        if pending.result and (pending.trailer is None or pending.trailer_result):
            self._pending = None
            if not pending.done.done():
                pending.done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.greeting.done():
            self.greeting.set_exception(exc)
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done.done():
            pending.done.set_exception(exc)

    def abort(self) -> None:
        """Drop the connection before the session exists (nobody will read the greeting)."""
        self.greeting.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- sending -----------------------------------------------------------------------------

    def new_tag(self) -> str:
        return f"J{next(self._tags)}"

    def start(
        self,
        tag: str,
        command: Command,
        literal_plus: bool,
        sasl: bytes | None = None,
        trailer: str | None = None,
    ) -> _Pending:
        """Write ``command`` and return its pending record.

        ``trailer``: a tag under which a NOOP follows in the same write (Rule 1).

        With LITERAL+ every literal is sent at once as ``{n+}``; otherwise the first line
        ends in ``{n}`` and each further piece waits for the server's ``+`` continuation.
        ``sasl``: an AUTHENTICATE exchange; the bytes answer the first ``+`` (Rule 5).
        """
        if self._pending is not None:
            raise ImapProtocolViolation("a command is already in flight on this connection")
        assert self.transport is not None
        pieces: collections.deque[bytes] = collections.deque()
        first = f"{tag} {command.parts[0]}".encode()
        rest: list[bytes] = []
        for literal, text in zip(command.literals, command.parts[1:], strict=True):
            marker = f"{{{len(literal)}{'+' if literal_plus else ''}}}\r\n".encode()
            rest.extend((marker, literal, text.encode()))
        pending = _Pending(tag, pieces, sasl=sasl, trailer=trailer)
        self._pending = pending
        if trailer is not None:
            if rest:
                raise ValueError("a NOOP trailer goes only after a command without literals")
            first += f"\r\n{trailer} NOOP".encode()
        if literal_plus or not rest:
            self.transport.write(first + b"".join(rest) + b"\r\n")
        else:
            self.transport.write(first + rest[0])
            # each later piece is (literal, text [+ next marker]) after a continuation
            items = rest[1:]
            for i in range(0, len(items), 3):
                data, after = items[i], items[i + 1]
                end = items[i + 2] if i + 2 < len(items) else b"\r\n"
                pieces.append(data)
                pieces.append(after + end)
        return pending

    def start_idle(self, tag: str) -> _Pending:
        if self._pending is not None:
            raise ImapProtocolViolation("a command is already in flight on this connection")
        assert self.transport is not None
        pending = _Pending(tag, collections.deque(), idle=True)
        self._pending = pending
        self.transport.write(f"{tag} IDLE\r\n".encode())
        return pending


@dataclass(frozen=True, slots=True)
class SelectInfo:
    """What SELECT/EXAMINE told us about the mailbox."""

    name: str
    readonly: bool
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None  # None: NOMODSEQ or no CONDSTORE
    exists: int | None
    reply: Reply


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _ssl_context(cfg: ImapConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if not cfg.verify_certificates:
        # only ever by explicit configuration (imap.verify_certificates = false)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ImapSession:
    """A logged-in IMAP connection with typed commands.

    Create with :meth:`connect`; use one command at a time.  Every public coroutine raises
    :class:`ImapCommandFailed` (tagged NO, the session stays usable),
    :class:`ImapProtocolViolation` (BAD or garbage; the session is broken) or
    :class:`ImapUnavailable` (timeout, lost connection; the session is broken).
    """

    def __init__(self, proto: _Connection, cfg: ImapConfig, username: str) -> None:
        self._proto = proto
        self._cfg = cfg
        self._upstream = f"{cfg.host}:{cfg.port}"  # the metrics' label (no user in it)
        self.username = username
        self.capabilities: frozenset[str] = frozenset()
        self.enabled: frozenset[str] = frozenset()
        self.selected: SelectInfo | None = None
        self._idle: _Pending | None = None
        self.server_id: dict[str, str] = {}  # the RFC 2971 ID answer's fields
        # how to treat this server (docs/design.md, "Servers"), chosen again at login
        self.profile: Profile = choose(frozenset(), {}, cfg)
        # MYRIGHTS that came with the last LIST (RFC 8440 LIST-MYRIGHTS): mailbox -> letters
        self.listed_rights: dict[str, str] = {}
        # the NAMESPACE answer (RFC 2342), asked once per connection (:meth:`namespace`)
        self._namespaces: tuple[tuple[tuple[str, str | None], ...], ...] | None = None
        self._broken = False
        self.last_used = time.monotonic()

    @property
    def broken(self) -> bool:
        """True once the session must not be used again: a command died mid-way, or the
        server said BYE or closed the connection (also while no command was running)."""
        return self._broken or self._proto.lost is not None or self._proto.bye is not None

    @broken.setter
    def broken(self, value: bool) -> None:
        self._broken = value

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        cfg: ImapConfig,
        username: str,
        password: str,
        *,
        client: ClientAddress | None = None,
    ) -> ImapSession:
        """Open, secure, name the ``client`` (Rule 6), log in, and ENABLE CONDSTORE/QRESYNC
        where offered.

        Raises:
            AuthenticationFailed: the server refused the credentials.
            ImapUnavailable: the server cannot be reached or the TLS handshake failed.
        """
        session = await cls._open(cfg, username)
        try:
            if client is not None:
                await session._originate(client)
            if isinstance(password, BearerToken):
                await session._xoauth2(username, password)
            else:
                await session._login(username, password)
            await session._enable()
            await session._identify()
            session.profile = choose(session.capabilities, session.server_id, cfg)
            log.info(
                "imap %s@%s: %s (%s profile), extensions: %s",
                username,
                cfg.host,
                session.server_id.get("name") or "unknown server",
                session.profile.kind,
                " ".join(c for c in KNOWN_CAPABILITIES if c in session.capabilities),
            )
        except BaseException:
            await session.close()
            raise
        return session

    @classmethod
    async def probe_capabilities(cls, cfg: ImapConfig) -> frozenset[str]:
        """What the server offers before login (after STARTTLS when configured), e.g. its
        ``AUTH=`` mechanisms, which the authenticated state no longer lists.

        Raises:
            ImapUnavailable: the server cannot be reached or the TLS handshake failed.
        """
        session = await cls._open(cfg, "")
        try:
            return session.capabilities
        finally:
            await session.close()

    @classmethod
    async def _open(cls, cfg: ImapConfig, username: str) -> ImapSession:
        """Connect, read the greeting and secure the connection: not logged in yet."""
        loop = asyncio.get_running_loop()
        proto = _Connection()
        ctx = _ssl_context(cfg) if cfg.security == "tls" else None
        where = f"{cfg.host}:{cfg.port}"
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                await loop.create_connection(lambda: proto, cfg.host, cfg.port, ssl=ctx)
                await proto.greeting
        except (OSError, TimeoutError, ssl.SSLError, ImapProtocolViolation) as exc:
            proto.abort()
            raise ImapUnavailable(f"cannot connect to {where}: {exc}") from exc
        except BaseException:  # cancelled (a push watcher stopped as it connects), BYE
            proto.abort()
            raise
        session = cls(proto, cfg, username)
        try:
            try:
                async with asyncio.timeout(cfg.connect_timeout):
                    reply = await session.execute(Command(("CAPABILITY",)), what="CAPABILITY")
            except (TimeoutError, ImapProtocolViolation, ImapCommandFailed) as exc:
                raise ImapUnavailable(f"cannot connect to {where}: {exc}") from exc
            session.capabilities = reply.capabilities or frozenset()  # Rule 7
            if cfg.security == "starttls":
                await session._starttls()
        except BaseException:
            await session.close()
            raise
        return session

    async def _originate(self, client: ClientAddress) -> None:
        """Rule 6.  A server that refuses the ID is still logged in to: it only loses the
        client's address."""
        if "ID" not in self.capabilities:
            return
        items = [commands.quote("x-originating-ip"), commands.quote(client.ip)]
        if client.port is not None:
            items += [commands.quote("x-originating-port"), commands.quote(str(client.port))]
        try:
            reply = await self.execute(Command((f"ID ({' '.join(items)})",)), what="ID")
        except ImapCommandFailed:
            return
        self._learn_name(reply)

    async def _starttls(self) -> None:
        if "STARTTLS" not in self.capabilities:
            raise ImapUnavailable("server does not offer STARTTLS (imap.security = starttls)")
        await self.execute(Command(("STARTTLS",)), what="STARTTLS")
        loop = asyncio.get_running_loop()
        assert self._proto.transport is not None
        try:
            transport = await loop.start_tls(
                self._proto.transport,
                self._proto,
                _ssl_context(self._cfg),
                server_hostname=self._cfg.host,
            )
        except (OSError, ssl.SSLError) as exc:
            self.broken = True
            raise ImapUnavailable(f"STARTTLS handshake failed: {exc}") from exc
        assert isinstance(transport, asyncio.Transport)
        self._proto.transport = transport
        # capabilities from before TLS must not be trusted (RFC 3501 §6.2.1)
        reply = await self.execute(Command(("CAPABILITY",)), what="CAPABILITY")
        self.capabilities = reply.capabilities or frozenset()

    async def _login(self, username: str, password: str) -> None:
        if "LOGINDISABLED" in self.capabilities:
            raise AuthenticationFailed("the server refuses LOGIN on this connection")
        command = Command.join(
            [Command.text("LOGIN"), commands.string_arg(username), commands.string_arg(password)]
        )
        try:
            reply = await self.execute(command, what="LOGIN", secret=True)
        except ImapCommandFailed as exc:
            raise AuthenticationFailed(f"login refused for {username!r}") from exc
        await self._authenticated(reply)

    async def _authenticated(self, reply: Reply) -> None:
        """After LOGIN or AUTHENTICATE: the capabilities of the authenticated state."""
        code = reply.code("CAPABILITY")
        if code is not None:
            self.capabilities = parse_capabilities(code.args)
        elif reply.capabilities:  # an untagged CAPABILITY with the login's reply (Gmail)
            self.capabilities = reply.capabilities
        else:
            reply = await self.execute(Command(("CAPABILITY",)), what="CAPABILITY")
            self.capabilities = reply.capabilities or self.capabilities

    async def _xoauth2(self, username: str, token: str) -> None:
        """SASL XOAUTH2 (Rule 5): ``base64("user=" user ^A "auth=Bearer " token ^A ^A)``."""
        if "AUTH=XOAUTH2" not in self.capabilities:
            raise AuthenticationFailed("the server does not offer AUTHENTICATE XOAUTH2")
        response = xoauth2_response(username, token)
        if "SASL-IR" in self.capabilities:
            command, sasl = Command((f"AUTHENTICATE XOAUTH2 {response.decode()}",)), b""
        else:
            command, sasl = Command(("AUTHENTICATE XOAUTH2",)), response
        try:
            reply = await self.execute(command, what="AUTHENTICATE", secret=True, sasl=sasl)
        except ImapCommandFailed as exc:
            raise AuthenticationFailed(f"XOAUTH2 refused for {username!r}") from exc
        await self._authenticated(reply)

    async def _enable(self) -> None:
        wanted = [c for c in ("CONDSTORE", "QRESYNC") if c in self.capabilities]
        if wanted and "ENABLE" in self.capabilities:
            reply = await self.execute(Command((f"ENABLE {' '.join(wanted)}",)), what="ENABLE")
            self.enabled = reply.enabled or frozenset()
        elif "CONDSTORE" in self.capabilities:
            self.enabled = frozenset({"CONDSTORE"})  # CONDSTORE also turns on by use

    async def _identify(self) -> None:
        """Learn the server's name (RFC 2971) for its profile: Dovecot's X-GUID items are
        not advertised."""
        if "ID" not in self.capabilities or self.server_id:
            return  # not offered, or already answered before login (Rule 6)
        try:
            reply = await self.execute(Command(("ID NIL",)), what="ID")
        except ImapCommandFailed:
            return
        self._learn_name(reply)

    def _learn_name(self, reply: Reply) -> None:
        for line in reply.other:
            if line[:3].upper() == "ID ":
                self.server_id = parse_id(line) or self.server_id

    async def store_identity(self) -> str | None:
        """What names the mail store this login reached, whatever the spelling of the login:
        the INBOX's RFC 8474 MAILBOXID, else Dovecot's INBOX GUID (``STATUS INBOX
        (X-GUID)``); None when the server offers neither or refuses to say.

        Asked alone: Cyrus answers garbage for MAILBOXID next to items that open the mailbox
        (see :meth:`status_items`).
        """
        item = self.profile.mailbox_id_item
        if not item:
            return None
        try:
            status = await self.status("INBOX", item)
        except ImapCommandFailed:
            return None
        if status.mailboxid:
            return "mailboxid:" + status.mailboxid
        if status.x_guid and _XGUID_RE.fullmatch(status.x_guid):
            return "x-guid:" + status.x_guid.lower()
        return None

    async def close(self) -> None:
        """LOGOUT politely when possible, then drop the transport.  Never raises."""
        idle, self._idle = self._idle, None
        if idle is not None:
            # closed while idling (a push watcher stopped): the IDLE fails as the connection
            # goes, and nobody awaits it any more
            idle.done.add_done_callback(_consume)
        transport = self._proto.transport
        if not self.broken and transport is not None and not transport.is_closing():
            try:
                async with asyncio.timeout(2):
                    await self.execute(Command(("LOGOUT",)), what="LOGOUT")
            except Exception:
                pass
        self.broken = True
        if transport is not None:
            transport.close()

    # -- the one way to run a command ----------------------------------------------------------

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    async def execute(
        self,
        command: Command,
        *,
        what: str = "",
        secret: bool = False,
        sasl: bytes | None = None,
        noop_after: bool = False,
    ) -> Reply:
        """Run one command and parse everything it produced (``sasl``: see Rule 5;
        ``noop_after``: a NOOP pipelined after it, see Rule 1).

        Raises:
            ImapCommandFailed: tagged NO (the session stays usable).
            ImapProtocolViolation: tagged BAD or an unparseable reply (session broken).
            ImapUnavailable: timeout, cancellation-free connection loss, BYE (session broken).
        """
        what = what or command.parts[0].split(" ", 1)[0]
        started, outcome = time.perf_counter(), "cancelled"
        try:
            pending = await self._run(command, what, secret, sasl, noop_after)
            reply = self._finish(pending, what)
            outcome = "ok"
            return reply
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self._count(command, what, outcome, started)

    async def execute_unparsed(
        self, command: Command, *, what: str = ""
    ) -> tuple[Reply, list[tuple[bytes, ...]]]:
        """Run one command; its untagged responses come back as they were received, for
        the caller to parse elsewhere (``parse_reply``), and the reply holds the tagged
        result only.  A bulk FETCH is parsed this way away from the event loop.

        Raises:
            As :meth:`execute`, except that an unparseable untagged response is the caller's
            to find: it should then mark the session :attr:`broken`.
        """
        what = what or command.parts[0].split(" ", 1)[0]
        started, outcome = time.perf_counter(), "cancelled"
        try:
            pending = await self._run(command, what, False, None, False)
            records, pending.records = pending.records, []
            reply = self._finish(pending, what)
            outcome = "ok"
            return reply, records
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self._count(command, what, outcome, started)

    def _count(self, command: Command, what: str, outcome: str, started: float) -> None:
        # "UID" alone says little: the verb after it is what an operator looks for
        verb = command.parts[0] if what.upper() == "UID" else what
        EVENTS.imap_command(
            self._upstream, imap_command_label(verb), outcome, time.perf_counter() - started
        )

    async def _run(
        self, command: Command, what: str, secret: bool, sasl: bytes | None, noop_after: bool
    ) -> _Pending:
        if self.broken:
            if self._proto.lost or self._proto.bye:
                raise ImapConnectionLost(f"{what}: connection already closed by the server")
            raise ImapUnavailable(f"{what}: connection already broken")
        tag = self._proto.new_tag()
        trailer = self._proto.new_tag() if noop_after else None
        if not secret:
            after = f" + {trailer} NOOP" if trailer else ""
            log.debug("imap %s > %s %s%s", self.username, tag, command.parts[0][:200], after)
        try:
            async with asyncio.timeout(self._cfg.command_timeout):
                pending = self._proto.start(tag, command, self.has("LITERAL+"), sasl, trailer)
                await pending.done
        except TimeoutError as exc:
            self.broken = True
            raise ImapUnavailable(f"{what}: timed out") from exc
        except ImapProtocolViolation:
            self.broken = True
            raise
        except ImapUnavailable as exc:
            self.broken = True
            bye = (self._proto.bye or b"").decode("utf-8", "replace")[:200]
            if "[TOOBIG]" in bye.upper() or _TOO_LONG.search(bye):
                # Cyrus: "* BYE [TOOBIG] Quoted value too long", then it hangs up
                log.info("IMAP %s refused as too long: %s", what, bye)
                raise ImapCommandTooLong(f"{what}: {bye}") from exc
            raise
        except OSError as exc:
            self.broken = True
            raise ImapConnectionLost(f"{what}: {exc}") from exc
        except BaseException:
            self.broken = True  # cancelled mid-command: the wire state is unknown
            raise
        finally:
            self.last_used = time.monotonic()
        return pending

    def _finish(self, pending: _Pending, what: str) -> Reply:
        if pending.trailer is not None and pending.trailer_result != "OK":
            # a NOOP does not fail on a healthy connection: the wire is not what we think
            self.broken = True
            raise ImapProtocolViolation(f"NOOP after {what}: {pending.trailer_result} reply")
        try:
            reply = parse_reply(pending.records, pending.result, pending.text)
        except ImapProtocolViolation:
            self.broken = True
            raise
        status = reply.tagged.status
        if status == "OK":
            return reply
        code = reply.tagged.code.name if reply.tagged.code else None
        if status == "NO":
            raise ImapCommandFailed(what, code, reply.tagged.text)
        self.broken = True
        text = reply.tagged.text[:200]
        if _TOO_LONG.search(text):
            log.info("IMAP %s refused as too long: %s", what, text)
            raise ImapCommandTooLong(f"{what}: BAD {text}")
        log.error("IMAP %s answered BAD: %s", what, text)
        raise ImapProtocolViolation(f"{what}: BAD {text}")

    async def idle_start(self) -> None:
        """Enter IDLE (RFC 2177); events then set :meth:`events` until :meth:`idle_done`.

        Raises:
            ImapCommandFailed / ImapProtocolViolation / ImapUnavailable: as :meth:`execute`.
        """
        tag = self._proto.new_tag()
        self._idle = self._proto.start_idle(tag)
        try:
            async with asyncio.timeout(self._cfg.command_timeout):
                await asyncio.wait(
                    {self._idle.continued, self._idle.done}, return_when=asyncio.FIRST_COMPLETED
                )
        except BaseException:
            self.broken = True
            raise
        if self._idle.done.done():  # refused at once
            pending, self._idle = self._idle, None
            self._finish(pending, "IDLE")

    async def idle_done(self) -> Reply:
        """Leave IDLE; the reply holds every event received while idling."""
        pending, self._idle = self._idle, None
        if pending is None:
            return self.take_unsolicited()
        assert self._proto.transport is not None
        self._proto.transport.write(b"DONE\r\n")
        try:
            async with asyncio.timeout(self._cfg.command_timeout):
                await pending.done
        except BaseException:
            self.broken = True
            raise
        self._proto.unsolicited_event.clear()
        return self._finish(pending, "IDLE")

    @property
    def events(self) -> asyncio.Event:
        """Set when the server sent something unasked (NOTIFY, or while idling)."""
        return self._proto.unsolicited_event

    @property
    def closed(self) -> asyncio.Event:
        return self._proto.closed

    def take_unsolicited(self) -> Reply:
        """Unsolicited responses received between commands, parsed; empties the queue."""
        records = list(self._proto.unsolicited)
        self._proto.unsolicited.clear()
        self._proto.unsolicited_event.clear()
        return parse_reply(records, "OK", b"")

    # -- typed commands --------------------------------------------------------------------

    async def namespace(self) -> tuple[tuple[tuple[str, str | None], ...], ...] | None:
        """The personal, other users' and shared namespaces (RFC 2342), asked once per
        connection; None where the server has no NAMESPACE or answers it with NO."""
        if self._namespaces is None and self.has("NAMESPACE"):
            try:
                reply = await self.execute(Command(("NAMESPACE",)), what="NAMESPACE")
            except ImapCommandFailed:
                return None
            self._namespaces = reply.namespaces
        return self._namespaces

    async def list_mailboxes(
        self, *, with_status: bool = True, sync_selected: bool = False, pattern: str = "*"
    ) -> tuple[tuple[ListEntry, ...], tuple[MailboxStatus, ...]]:
        """Every mailbox with its attributes, and STATUS where LIST-STATUS allows one trip.

        ``sync_selected``: for a server that answers the selected mailbox's STATUS from
        this session's view, which may be stale (Dovecot): a NOOP follows in the same write,
        and when it reports any change to the selected mailbox (so the view was stale),
        that mailbox's STATUS is left out of the result, for the caller to ask again.  When
        the NOOP draws an error instead (Dovecot, once another client deleted and recreated
        the selected mailbox, answers its STATUS from the dead view and NOOP with ``NO
        Internal error`` forever), the mailbox is left and the LIST sent again.

        ``pattern``: the LIST pattern (RFC 3501 §6.3.8), e.g. one share's ``shared/alice/*``.

        Returns the LIST entries and the STATUS records (empty when the server lacks
        LIST-STATUS or ``with_status`` is false).
        """
        returns = []
        if self.has("SPECIAL-USE"):
            returns.append("SPECIAL-USE")
        if self.has("LIST-EXTENDED"):
            returns.append("SUBSCRIBED")
            returns.append("CHILDREN")
        if with_status and self.has("LIST-STATUS"):
            returns.append(f"STATUS ({self.status_items()})")
        if self.has("LIST-MYRIGHTS") and self.has("LIST-EXTENDED"):
            # RFC 8440 (Cyrus): every mailbox's rights in this same round trip, instead of
            # one MYRIGHTS per mailbox per refresh (see listed_rights)
            returns.append("MYRIGHTS")
        text = f'LIST "" {commands.mailbox(pattern)}'
        if returns:
            text += f" RETURN ({' '.join(returns)})"
        selected = self.selected.name if sync_selected and self.selected else None
        reply = await self.execute(Command((text,)), what="LIST", noop_after=selected is not None)
        statuses = reply.statuses
        if selected is not None and _reports_trouble(reply):
            log.info("imap %s: %s went bad under this session; leaving it", self.username, selected)
            try:
                await self.unselect()
            except ImapCommandFailed as exc:
                self.broken = True
                raise ImapUnavailable(f"cannot leave {selected!r}: {exc}") from exc
            return await self.list_mailboxes(with_status=with_status, pattern=pattern)
        if selected is not None and _reports_change(reply):
            statuses = tuple(s for s in statuses if s.name != selected)
        self.listed_rights = dict(reply.myrights)
        lists = reply.lists
        if not self.has("LIST-EXTENDED"):
            lsub = await self.execute(
                Command((f'LSUB "" {commands.mailbox(pattern)}',)), what="LSUB"
            )
            subscribed = {e.name for e in lsub.lists}
            lists = tuple(
                ListEntry(e.name, e.delimiter, e.attributes | {"\\Subscribed"}, e.extended)
                if e.name in subscribed
                else e
                for e in lists
            )
        return lists, statuses

    def status_items(self) -> str:
        """The STATUS items a refresh needs (the profile's), with Dovecot's stable mailbox
        id (X-GUID, which it answers even in LIST-STATUS).

        Never RFC 8474 MAILBOXID: Cyrus 3.6.1 answers garbage bytes for it when it comes
        with an item that opens the mailbox (MESSAGES, UIDNEXT, UNSEEN, HIGHESTMODSEQ), in
        STATUS and in LIST-STATUS alike.  ``sync.engine`` asks ``STATUS box (MAILBOXID)``
        on its own, once per mailbox it has not seen with this UIDVALIDITY yet.
        """
        return self.profile.status_items

    async def status(self, name: str, items: str | None = None) -> MailboxStatus:
        items = items or self.status_items()
        reply = await self.execute(
            Command((f"STATUS {commands.mailbox(name)} ({items})",)), what="STATUS"
        )
        for status in reply.statuses:
            return status
        raise ImapProtocolViolation("STATUS: no STATUS line in the reply")

    async def select(
        self, name: str, *, readonly: bool = False, qresync: tuple[int, int] | None = None
    ) -> SelectInfo:
        """SELECT (or EXAMINE) ``name``; with ``qresync=(uidvalidity, modseq)`` on QRESYNC."""
        verb = "EXAMINE" if readonly else "SELECT"
        text = f"{verb} {commands.mailbox(name)}"
        if qresync is not None and "QRESYNC" in self.enabled:
            text += f" (QRESYNC ({qresync[0]} {qresync[1]}))"
        elif "CONDSTORE" in self.enabled and "QRESYNC" not in self.enabled:
            text += " (CONDSTORE)"
        self.selected = None
        reply = await self.execute(Command((text,)), what=verb)

        def code_int(code_name: str) -> int | None:
            code = reply.code(code_name)
            return code.int_arg() if code else None

        info = SelectInfo(
            name=name,
            readonly=readonly or reply.code("READ-ONLY") is not None,
            uidvalidity=code_int("UIDVALIDITY"),
            uidnext=code_int("UIDNEXT"),
            highestmodseq=code_int("HIGHESTMODSEQ"),
            exists=reply.exists,
            reply=reply,
        )
        self.selected = info
        return info

    async def unselect(self) -> None:
        if self.selected is None:
            return
        if self.has("UNSELECT"):
            await self.execute(Command(("UNSELECT",)), what="UNSELECT")
        else:
            # CLOSE would expunge \Deleted messages; EXAMINE of a mailbox that cannot exist
            # deselects without touching anything (RFC 3501 §6.3.1).
            with contextlib.suppress(ImapCommandFailed):
                await self.execute(Command(('EXAMINE "imapjmap-deselect"',)), what="EXAMINE")
        self.selected = None

    async def noop(self) -> Reply:
        return await self.execute(Command(("NOOP",)), what="NOOP")

    def selected_name(self) -> str | None:
        return self.selected.name if self.selected else None

    @staticmethod
    def mailbox_command(verb: str, name: str, *tail: str) -> Command:
        """``VERB "name" tail...`` with the name encoded (modified UTF-7) and quoted."""
        return Command((" ".join([verb, commands.mailbox(name), *tail]),))


def _outcome(exc: BaseException) -> str:
    """A command's failure as the metrics name it."""
    if isinstance(exc, ImapCommandFailed):
        return "no"
    if isinstance(exc, ImapProtocolViolation):
        return "bad"
    if isinstance(exc, ImapUnavailable):
        return "unavailable"
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
