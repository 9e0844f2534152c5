"""The push endpoints: EventSource (RFC 8620 §7.3, CORE-PUSH-03) here, WebSocket (RFC 8887)
in :mod:`imapjmap.http.websocket`, PushSubscription delivery in :mod:`imapjmap.http.webpush`.

EventSource, ``GET /jmap/eventsource/?types=…&closeafter=…&ping=…`` (authenticated, or
with the session URL's ``push_token`` where a browser cannot send credentials):

* ``types``: a comma-separated list of type names, or ``*`` (the default) for all;
  ``closeafter``: ``state`` or ``no`` (the default); ``ping``: seconds, ``0`` (the default)
  for none, else clamped into [``PING_MIN``, ``PING_MAX``] — the RFC lets a server clamp as
  long as its minimum is at most 30 and its maximum at least 300.  Anything else is a 400
  problem document.
* The headers go out at once (fetch-based clients wait for them).  Then one ``state``
  event: with a valid ``Last-Event-ID`` the types changed since that id (nothing when none
  did), otherwise every current state.  Then one ``state`` event per change.  Every
  ``state`` event has an ``id``: the resume token of :mod:`imapjmap.push.stream`, which
  names the account-wide seq.  ``closeafter=state`` ends the response after the first
  ``state`` event sent.
* ``ping`` events carry ``{"interval": N}`` (the clamped N) and no ``id``, after N seconds
  without an event.
* The listener is dropped when the client goes away: the server cancels the handler
  (``handler_cancellation``), and as a fallback where it does not (a test server, another
  runner) the transport is checked every ``_LIVENESS`` seconds; every write error ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from imapjmap.http import views, webpush, websocket
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.jmap.session import EVENTSOURCE_PATH
from imapjmap.push.stream import PushStream

log = logging.getLogger(__name__)

PING_MIN: Final = 5  # seconds; the RFC allows any minimum up to 30
PING_MAX: Final = 600  # seconds; the RFC allows any maximum from 300
_LIVENESS: Final = 2.0  # seconds between checks that the client is still connected
_TYPE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,99}")


@dataclass(frozen=True, slots=True)
class EventSourceParams:
    types: frozenset[str] | None  # None: every type
    close_after_state: bool
    ping: int  # seconds, already clamped; 0: no pings


def _bad_request(detail: str) -> RequestError:
    return RequestError(RequestErrorType.BLANK, detail, status=400, title="Bad Request")


def parse_params(query: Mapping[str, str]) -> EventSourceParams:
    """The EventSource query parameters (CORE-PUSH-03).

    Raises:
        RequestError: 400, naming the parameter that is wrong.
    """
    raw_types = query.get("types", "*").strip()
    types: frozenset[str] | None = None
    if raw_types != "*":
        names = [t.strip() for t in raw_types.split(",")]
        if not all(_TYPE_NAME.fullmatch(t) for t in names):
            raise _bad_request("types must be * or a comma-separated list of type names")
        types = frozenset(names)
    close_after = query.get("closeafter", "no")
    if close_after not in ("state", "no"):
        raise _bad_request("closeafter must be state or no")
    raw_ping = query.get("ping", "0")
    if not (raw_ping.isascii() and raw_ping.isdigit()) or len(raw_ping) > 15:
        raise _bad_request("ping must be a number of seconds (0 for no pings)")
    ping = int(raw_ping)
    if ping:
        ping = min(max(ping, PING_MIN), PING_MAX)
    return EventSourceParams(types, close_after == "state", ping)


def sse_event(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One ``text/event-stream`` event (the JSON data is one line)."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def eventsource_view(request: web.Request) -> web.StreamResponse:
    who, _ = await views.authenticate_stream(request, "eventsource")
    params = parse_params(request.query)
    hub = request.app[views.SERVICES].push.hub
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    account = who.account
    shares = await views.share_accounts_of(request.app, who)
    async with contextlib.AsyncExitStack() as streams:
        stream = await streams.enter_async_context(
            PushStream(hub, account.account_id, account.epoch, params.types)
        )
        first = {stream: await stream.open(request.headers.get("Last-Event-ID"), initial=True)}
        # the shares of other users' folders the login sees (http.shares): the event id
        # resumes the login's own account; theirs are sent in full at every (re)connection
        for share in shares:
            one = await streams.enter_async_context(
                PushStream(hub, share.account_id, share.epoch, params.types)
            )
            first[one] = await one.open(None, initial=True)
        with contextlib.suppress(ConnectionError):  # the client went away while we wrote
            await _stream_events(request, response, stream, params, first)
    return response


async def _stream_events(
    request: web.Request,
    response: web.StreamResponse,
    stream: PushStream,
    params: EventSourceParams,
    first: dict[PushStream, dict[str, str]],
) -> None:
    """``stream``: the login's own account's, whose token is each event's id; ``first``:
    what each stream (that one and the shares') sends at once."""
    loop = asyncio.get_running_loop()
    changes = {s: c for s, c in first.items() if c}
    idle_since = loop.time()
    while True:
        if changes:
            await response.write(sse_event("state", _state_change(changes), stream.token))
            idle_since = loop.time()
            if params.close_after_state:
                await response.write_eof()
                return
        elif _gone(request):
            return
        elif params.ping and loop.time() - idle_since >= params.ping:
            await response.write(sse_event("ping", {"interval": params.ping}))
            idle_since = loop.time()
        wait = _LIVENESS
        if params.ping:
            wait = max(0.0, min(wait, idle_since + params.ping - loop.time()))
        changes = await _next(list(first), wait)


def _state_change(changes: Mapping[PushStream, dict[str, str]]) -> dict[str, Any]:
    """One StateChange (RFC 8620 §7.1) for the changes of every account in ``changes``."""
    out: dict[str, Any] = {}
    for stream, change in changes.items():
        one = stream.state_change(change)
        if not out:
            out = one
        else:
            out["changed"].update(one["changed"])
    return out


async def _next(streams: list[PushStream], timeout: float) -> dict[PushStream, dict[str, str]]:
    """The next change of any of ``streams`` (those that came together), or none after
    ``timeout`` seconds."""
    if len(streams) == 1:
        change = await streams[0].next(timeout)
        return {streams[0]: change} if change else {}
    waits = {asyncio.ensure_future(s.next(timeout)): s for s in streams}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    changes = {}
    for task in done:
        change = task.result() if not task.cancelled() else None
        if change:
            changes[waits[task]] = change
    return changes


def add_routes(app: web.Application) -> None:
    """The push routes, and the PushSubscription delivery's start-up and shut-down (which
    need the services, so this runs after the services' cleanup context is added)."""
    app.router.add_get(EVENTSOURCE_PATH, eventsource_view)
    app.router.add_get(EVENTSOURCE_PATH.rstrip("/"), eventsource_view)
    websocket.add_routes(app)
    app.cleanup_ctx.append(webpush.webpush_ctx)
