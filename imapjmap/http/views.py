"""HTTP endpoints: the Session resource and the JMAP API (RFC 8620 §2, §3)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Collection
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from imapjmap.blobs import content as blob_store
from imapjmap.config import Config
from imapjmap.credentials import ClientAddress
from imapjmap.errors import ProxyError
from imapjmap.http import forwarded
from imapjmap.http.admission import RequestSlots
from imapjmap.http.auth import Authenticated, Authenticator, PushOnly, Unauthorized
from imapjmap.http.push_token import QUERY_PARAMETER, Scope
from imapjmap.http.shares import ShareAccount, ShareAccounts
from imapjmap.jmap import dispatch
from imapjmap.jmap.errors import MethodError, MethodErrorType, RequestError, RequestErrorType
from imapjmap.jmap.request import Request, loads_i_json, request_from_json
from imapjmap.jmap.session import DOWNLOAD_PATH, SessionAccount, build_session
from imapjmap.jmap.wire import CORE, SIEVE, VACATION, WEBSOCKET, Json, JsonObject, encode_in_parts
from imapjmap.methods import (
    CAPABILITIES,
    REGISTRY,
    SHARE_ACCOUNT_CAPABILITIES,
    account_capabilities,
    usable_capabilities,
)
from imapjmap.methods.context import Account, MethodContext
from imapjmap.methods.sieve import capabilities as sieve_capabilities
from imapjmap.methods.submission import handlers as submission
from imapjmap.metrics import EVENTS
from imapjmap.services import Services
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.upstream.api import Upstream
from imapjmap.upstream.imap import ImapUpstream

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
SERVICES = web.AppKey("services", Services)
AUTH = web.AppKey("authenticator", Authenticator)
REQUEST_SLOTS = web.AppKey("request_slots", RequestSlots)
SHARES = web.AppKey("shares", ShareAccounts)
_DECODE_IN_THREAD: Final = 256 * 1024  # octets of request body decoded off the event loop
_ENCODE_TURN: Final = 0.002  # CPU seconds of response encoding between two turns of the loop
# octets of response encoded between two readings of the CPU clock (a system call, as costly
# as encoding a small part): about a tenth of _ENCODE_TURN
_CLOCK_EVERY: Final = 16 * 1024


def _json(body: Any, status: int = 200, *, encoded: bytes | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode() if encoded is None else encoded,
        content_type="application/json",
        headers={"Cache-Control": "no-cache, no-store, must-revalidate"},
    )


async def _paced_json(app: web.Application, account_id: str, body: JsonObject) -> web.Response:
    """``_json`` of an API response, encoded in parts: between the parts of a big answer
    the event loop serves the other accounts' requests (``Store.pace``)."""
    store = app[SERVICES].store
    parts: list[bytes] = []
    first = started = time.thread_time()
    unclocked = 0  # octets encoded since the CPU clock was last read
    for part in encode_in_parts(body):
        parts.append(part)
        unclocked += len(part)
        if unclocked < _CLOCK_EVERY:
            continue
        unclocked = 0
        now = time.thread_time()
        if now - started >= _ENCODE_TURN:
            await store.pace(account_id, now - started, now - first)
            started = time.thread_time()
    return _json(body, encoded=b"".join(parts))


_trusted_networks = functools.lru_cache(maxsize=4)(forwarded.parse_networks)


def client_address(request: web.Request) -> ClientAddress | None:
    """The HTTP client, through the trusted reverse proxies (``server.trusted_proxies``)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    port = peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None
    return forwarded.client_address(
        request.remote,
        port if isinstance(port, int) else None,
        request.headers.getall("X-Forwarded-For", []),
        _trusted_networks(request.app[CONFIG].server.trusted_proxies),
    )


async def _authenticate(request: web.Request) -> Authenticated:
    header = request.headers.get("Authorization")
    try:
        who = await request.app[AUTH].authenticate(header, client_address(request))
    except Unauthorized as exc:
        raise web.HTTPUnauthorized(
            reason=str(exc), headers={"WWW-Authenticate": exc.challenge}
        ) from None
    # push listeners restored at start-up wait for a login to watch the upstream
    await request.app[SERVICES].push.resume(who.account.account_id)
    return who


async def _session_for(
    cfg: Config, who: Authenticated, shares: tuple[ShareAccount, ...] = ()
) -> dict[str, Any]:
    # probed once per process and SMTP server
    extensions = await submission.submission_extensions(cfg.smtp_for(who.account.upstream))
    # looked for once in a while
    await who.upstream.sieve_server(cfg.sieve_for(who.account.upstream))
    return _build_session(cfg, who, extensions, shares)


def _build_session(
    cfg: Config,
    who: Authenticated,
    extensions: dict[str, list[str]],
    shares: tuple[ShareAccount, ...] = (),
) -> dict[str, Any]:
    account = SessionAccount(
        who.account.account_id,
        who.account.username,
        account_capabilities(who.upstream),
        details=sieve_capabilities.details(who.upstream),
    )
    others = [
        SessionAccount(
            one.account.account_id,
            one.account.username,
            SHARE_ACCOUNT_CAPABILITIES,
            is_personal=False,
            is_read_only=one.share.read_only,
        )
        for one in shares
    ]
    session = build_session(cfg, account, submission_extensions=extensions, shares=others)
    session["capabilities"] = {
        k: v for k, v in session["capabilities"].items() if k in CAPABILITIES
    }
    return session


class SessionStates:
    """The Session ``state`` each API response echoes (``sessionState``), remembered: it is
    a digest of the whole Session object (CORE-SESS-06), which is the same for a login as
    long as the SMTP server offers the same extensions, and building it took a tenth of a
    small request's CPU."""

    MAX_ENTRIES: Final = 10_000

    def __init__(self) -> None:
        self._states: dict[tuple[str, str, str, str, str, tuple[ShareAccount, ...]], str] = {}

    async def of(
        self, cfg: Config, who: Authenticated, shares: tuple[ShareAccount, ...] = ()
    ) -> str:
        extensions = await submission.submission_extensions(cfg.smtp_for(who.account.upstream))
        key = (
            who.account.account_id,
            who.account.username,
            json.dumps(extensions, sort_keys=True),
            " ".join(sorted(account_capabilities(who.upstream))),
            json.dumps(sieve_capabilities.details(who.upstream), sort_keys=True),
            shares,
        )
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= self.MAX_ENTRIES:
                self._states.clear()
            state = self._states[key] = _build_session(cfg, who, extensions, shares)["state"]
        return state


SESSION_STATES = web.AppKey("session_states", SessionStates)
# capabilities whose server is looked for before a request that uses them runs
SIEVE_URNS: Final = frozenset({VACATION, SIEVE})


async def authenticate_stream(
    request: web.Request, scope: Scope
) -> tuple[Authenticated | PushOnly, bool]:
    """The login of a push stream, and whether it came from a push token: browsers cannot
    send ``Authorization`` on an EventSource or WebSocket, so a request without that header
    may bring the token of the session's URL instead (:mod:`imapjmap.http.push_token`),
    perhaps one whose login another instance holds (then a :class:`PushOnly`)."""
    token = request.query.get(QUERY_PARAMETER)
    if token is None or "Authorization" in request.headers:
        return await _authenticate(request), False
    try:
        who = await request.app[AUTH].authenticate_push_anywhere(token, scope)
    except Unauthorized as exc:
        raise web.HTTPUnauthorized(
            reason=str(exc), headers={"WWW-Authenticate": exc.challenge}
        ) from None
    await request.app[SERVICES].push.resume(who.account.account_id)
    return who, True


async def session_view(request: web.Request) -> web.StreamResponse:
    who = await _authenticate(request)
    shares = await _discover_shares(request.app, who)
    session = await _session_for(request.app[CONFIG], who, shares)
    # fresh tokens on every fetch; ``state`` was computed without them, so a new token
    # alone does not make clients refetch the session (CORE-SESS-06 is about what the
    # session describes, and a rotated credential describes nothing new)
    auth = request.app[AUTH]
    token = auth.issue_push_token(who, "eventsource")
    session["eventSourceUrl"] += f"&{QUERY_PARAMETER}={token}"
    websocket = session["capabilities"].get(WEBSOCKET)
    if websocket is not None:
        token = auth.issue_push_token(who, "websocket")
        websocket["url"] += f"?{QUERY_PARAMETER}={token}"
    return _json(session)


async def _read_body(request: web.Request, limit: int) -> bytes:
    too_big = RequestError(
        RequestErrorType.LIMIT, f"the request is larger than {limit} octets", limit="maxSizeRequest"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise RequestError(
            RequestErrorType.NOT_JSON, "the request's Content-Type must be application/json"
        )


async def api_view(request: web.Request) -> web.StreamResponse:
    who = await _authenticate(request)
    cfg = request.app[CONFIG]
    _check_content_type(request)
    body = await _read_body(request, cfg.limits.max_size_request)
    jmap_request = request_from_json(
        await decode_json(body),
        supported_capabilities=CAPABILITIES,
        max_calls=cfg.limits.max_calls_in_request,
    )
    response = await run_request(request.app, who, jmap_request)
    return await _paced_json(request.app, who.account.account_id, response)


async def decode_json(body: bytes) -> Json:
    """``loads_i_json``, in a worker thread for a large body: decoding takes about 0.1 s
    per MB (the I-JSON checks run in Python), and the event loop must meanwhile keep
    serving everyone else (and a SIGTERM).

    Raises:
        RequestError: notJSON.
    """
    if len(body) < _DECODE_IN_THREAD:
        return loads_i_json(body)
    return await asyncio.to_thread(loads_i_json, body)


async def run_request(
    app: web.Application, who: Authenticated, jmap_request: Request
) -> JsonObject:
    """Run a parsed Request for ``who`` and return the Response object: the API pipeline
    shared by ``POST apiUrl`` and WebSocket ``Request`` messages (RFC 8887 §4.3.2).

    Raises:
        RequestError: limit (maxConcurrentRequests, after a short wait for a slot:
            :mod:`imapjmap.http.admission`).
    """
    cfg = app[CONFIG]
    account_id = who.account.account_id
    async with app[REQUEST_SLOTS].slot(account_id):
        shares = await shares_of(app, who, _named_accounts(jmap_request))
        contexts = _Contexts(app[SERVICES], who, shares)
        if jmap_request.using & SIEVE_URNS:  # looked for at the session fetch otherwise
            await who.upstream.sieve_server(cfg.sieve_for(who.account.upstream))
        accounts = {account_id: usable_capabilities(who.upstream)}
        accounts.update((s.account.account_id, SHARE_CAPABILITIES) for s in shares)
        response = await dispatch.run(
            jmap_request,
            contexts.personal,
            REGISTRY,
            accounts,
            session_state=await app[SESSION_STATES].of(cfg, who, shares),
            observe=EVENTS.method_call,
            context_for=contexts.of,
        )
        # whatever the calls changed reaches push listeners now (writes that refreshed
        # have published already; this covers the rest, e.g. Identity/set)
        for used in contexts.used():
            await app[SERVICES].push.hub.poke(used)
        # the refresh of the login's account may have listed other shares: the response
        # says the session as it is now (``http.shares`` Rule 1)
        now = await shares_of(app, who)
        if now != shares:
            response["sessionState"] = await app[SESSION_STATES].of(cfg, who, now)
    return response


def _named_accounts(jmap_request: Request) -> set[str]:
    """The account ids the request's calls name (``accountId``, ``fromAccountId``)."""
    return {
        value
        for call in jmap_request.calls
        for key in ("accountId", "fromAccountId")
        if isinstance(value := call.args.get(key), str)
    }


# the capabilities of a share's account: its mail, with the core's methods (Blob/copy)
SHARE_CAPABILITIES: Final = SHARE_ACCOUNT_CAPABILITIES | {CORE}


class _Contexts:
    """One request's method contexts: the login's own account's, and each share's that a
    call names (made on first use, so a request that names no share costs nothing more)."""

    def __init__(
        self, services: Services, who: Authenticated, shares: tuple[ShareAccount, ...]
    ) -> None:
        self._services = services
        self._who = who
        self._shares = {s.account.account_id: s for s in shares}
        self._made: dict[str, MethodContext] = {}
        sync = services.sync_for(who.account.account_id)
        self.personal = MethodContext(
            services,
            who.account,
            who.upstream,
            lambda force: sync.refresh(who.upstream, force=force),
            others=self.of,
        )
        self._made[who.account.account_id] = self.personal

    def of(self, account_id: str) -> MethodContext:
        """The context of one of the login's accounts (dispatch checked that it is one).

        Raises:
            MethodError: accountNotFound, for an id that is none of the login's.
        """
        made = self._made.get(account_id)
        if made is not None:
            return made
        share = self._shares.get(account_id)
        if share is None:
            raise MethodError(MethodErrorType.ACCOUNT_NOT_FOUND)
        upstream = ImapUpstream(self._who.pool, share.share)
        sync = self._services.sync_for(account_id)
        made = self._made[account_id] = MethodContext(
            self._services,
            share.account,
            upstream,
            lambda force: sync.refresh(upstream, force=force),
            others=self.of,
            share_prefix=share.share.prefix,
        )
        return made

    def used(self) -> list[str]:
        return list(self._made)


async def _discover_shares(app: web.Application, who: Authenticated) -> tuple[ShareAccount, ...]:
    """The login's shares, asked of the server now (``http.shares`` Rule 1); none when it
    cannot say (the login's own account is served all the same)."""
    shares = app.get(SHARES)  # None in an app without the services (unit tests' worlds)
    try:
        return await shares.discover(who) if shares is not None else ()
    except ProxyError as exc:
        log.warning("account %s: shares unknown: %s", who.account.account_id, exc)
        return ()


async def shares_of(
    app: web.Application, who: Authenticated, named: Collection[str] = ()
) -> tuple[ShareAccount, ...]:
    """The login's shares.  ``named``: the account ids the request names (``http.shares``
    Rule 5)."""
    shares = app.get(SHARES)
    try:
        return await shares.of(who, named) if shares is not None else ()
    except ProxyError as exc:
        log.warning("account %s: shares unknown: %s", who.account.account_id, exc)
        return ()


async def share_accounts_of(
    app: web.Application, who: Authenticated | PushOnly
) -> tuple[Account, ...]:
    """The accounts of the login's shares, for its push streams.  For a stream vouched for
    elsewhere, those the vouching instance named (its shares are asked of the server, which
    this instance does not reach for it), as the cache holds them."""
    if isinstance(who, Authenticated):
        return tuple(share.account for share in await shares_of(app, who))
    login = who.account

    def read(tx: Tx) -> list[q.AccountRow]:
        rows = (q.account(tx, account_id) for account_id in who.shares)
        return [row for row in rows if row is not None]

    rows = await app[SERVICES].store.read_small(read, account=login.account_id)
    return tuple(Account(r.account_id, r.username, r.epoch, login.upstream) for r in rows)


async def download_view(request: web.Request) -> web.StreamResponse:
    """GET downloadUrl (RFC 8620 §6.2, CORE-BIN-03): Content-Type is exactly ``type``."""
    who = await _authenticate(request)
    account_id = request.match_info["accountId"]
    services = request.app[SERVICES]
    content = None
    upstream: Upstream | None = who.upstream
    if account_id != who.account.account_id:
        shares = request.app.get(SHARES)
        await shares_of(request.app, who, (account_id,))  # found on another instance?
        share = shares.find(who, account_id) if shares is not None else None  # the login's
        upstream = ImapUpstream(who.pool, share.share) if share is not None else None
    if upstream is not None:
        found = await blob_store.read_blob(
            services.store, upstream, account_id, request.match_info["blobId"]
        )
        content = None if found is None else found[0]
    if content is None:
        raise web.HTTPNotFound(reason="no such blob")
    type_ = request.query.get("type", "")
    if not type_ or not (type_.isascii() and type_.isprintable()):
        type_ = "application/octet-stream"
    name = quote(request.match_info["name"], safe="")
    return web.Response(
        body=content,
        headers={
            "Content-Type": type_,
            "Content-Disposition": f"attachment; filename*=UTF-8''{name}",
            "Cache-Control": "private, immutable, max-age=31536000",
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/.well-known/jmap", session_view)
    app.router.add_get("/jmap/session", session_view)
    app.router.add_post("/jmap/api/", api_view)
    app.router.add_post("/jmap/api", api_view)
    app.router.add_get(DOWNLOAD_PATH, download_view)
