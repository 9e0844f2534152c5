"""JMAP over WebSocket (RFC 8887) at ``GET /jmap/ws/``.

Theory of operation
-------------------
The HTTP Upgrade request is authenticated like any API request (401 without valid
credentials) and must offer the ``jmap`` subprotocol, which is echoed (RFC 8887 §4.2); a
request that is not a WebSocket upgrade, or offers no ``jmap``, gets a 400 problem document
instead of an upgrade.  Then every text message is one JSON object with an ``@type``:

* ``Request``: the Request object (plus an optional ``id``) runs through the same pipeline
  as ``POST apiUrl`` (:func:`imapjmap.http.views.run_request`: limits, dispatch, push
  poke).  Requests run concurrently and are answered as they finish, each ``Response``
  carrying the ``requestId`` it answers (§4.3.3); a request that fails as a whole is a
  ``RequestError`` with the problem fields and the ``requestId`` (§4.3.4).
* ``WebSocketPushEnable`` ``{dataTypes: String[]|null, pushState?}`` (§4.3.5.2): push
  ``StateChange`` objects, each with a ``pushState`` (the resume token of
  :mod:`imapjmap.push.stream`); with a ``pushState`` this server gave out, the changes since
  it are sent at once.  A second enable replaces the first.
* ``WebSocketPushDisable`` (§4.3.5.3): stop pushing.

Invalid JSON is a ``notJSON`` RequestError, an object with a missing or unknown ``@type`` a
``notRequest`` one; the connection stays open (§4.3.1).  Binary messages are ``notJSON``.

A browser cannot send ``Authorization`` with the upgrade: it may bring the ``push_token``
of the session's WebSocket ``url`` instead (:mod:`imapjmap.http.push_token`).  Such a
socket only pushes: its ``Request`` messages get a ``RequestError`` (403), since a token
that may travel in URLs must not open the whole account.

Rule: when the socket closes, every running request is cancelled and the push listener is
dropped (``finally``), whatever ended the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from aiohttp import WSMsgType, web

from imapjmap.http import views
from imapjmap.http.auth import Authenticated, PushOnly
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.jmap.request import request_from_json
from imapjmap.jmap.session import WEBSOCKET_PATH
from imapjmap.methods import CAPABILITIES
from imapjmap.push.stream import PushStream
from imapjmap.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SUBPROTOCOL: Final = "jmap"
_HEARTBEAT: Final = 60.0  # seconds between WebSocket pings (keeps NAT state, finds dead peers)


_PUSH_ONLY: Final = RequestError(
    RequestErrorType.BLANK,
    "this WebSocket was opened with a push token: it only pushes; send requests with credentials",
    status=403,
    title="Forbidden",
)


def _not_request(detail: str) -> RequestError:
    return RequestError(RequestErrorType.NOT_REQUEST, detail)


class _Connection:
    """One WebSocket: its requests in flight and its push stream."""

    def __init__(
        self,
        app: web.Application,
        who: Authenticated | PushOnly,
        ws: web.WebSocketResponse,
        *,
        push_only: bool = False,
    ) -> None:
        self._app = app
        self._who = who
        self._ws = ws
        self._push_only = push_only
        self._send_lock = asyncio.Lock()
        self._requests: set[asyncio.Task[None]] = set()
        self._push: PushStream | None = None
        self._push_task: asyncio.Task[None] | None = None
        # the streams of the login's shares of other users' folders, and their tasks
        self._shares: list[tuple[PushStream, asyncio.Task[None]]] = []

    async def serve(self) -> None:
        async for message in self._ws:
            if message.type is WSMsgType.TEXT:
                await self._on_text(message.data)
            elif message.type is WSMsgType.BINARY:
                await self._error(
                    RequestError(RequestErrorType.NOT_JSON, "messages must be text frames")
                )
            elif message.type is WSMsgType.ERROR:
                log.info("websocket error: %s", self._ws.exception())
                return

    async def close(self) -> None:
        for task in list(self._requests):
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)
        await self._disable_push()

    async def _on_text(self, text: str) -> None:
        try:
            obj = await views.decode_json(text.encode())
        except RequestError as exc:
            await self._error(exc)
            return
        if not isinstance(obj, dict):
            await self._error(_not_request("a message must be a JSON object with @type"))
            return
        kind = obj.get("@type")
        if kind == "Request" and self._push_only:
            request_id = obj.get("id") if isinstance(obj.get("id"), str) else None
            await self._error(_PUSH_ONLY, request_id)
        elif kind == "Request":
            task = asyncio.get_running_loop().create_task(self._request(obj))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        elif kind == "WebSocketPushEnable":
            try:
                await self._enable_push(obj)
            except RequestError as exc:
                await self._error(exc)
        elif kind == "WebSocketPushDisable":
            await self._disable_push()
        else:
            await self._error(
                _not_request("@type must be Request, WebSocketPushEnable or WebSocketPushDisable")
            )

    async def _request(self, obj: dict[str, Any]) -> None:
        request_id = obj.get("id") if isinstance(obj.get("id"), str) else None
        cfg = self._app[views.CONFIG]
        if not isinstance(self._who, Authenticated):  # opened by a push token: never here
            await self._error(_PUSH_ONLY, request_id)
            return
        try:
            parsed = request_from_json(
                obj,
                supported_capabilities=CAPABILITIES,
                max_calls=cfg.limits.max_calls_in_request,
            )
            response = await views.run_request(self._app, self._who, parsed)
        except RequestError as exc:
            await self._error(exc, request_id)
            return
        except Exception:
            log.exception("websocket request %r failed", request_id)
            error = RequestError(
                RequestErrorType.BLANK, "internal server error", 500, title="Internal Server Error"
            )
            await self._error(error, request_id)
            return
        body: dict[str, Any] = {"@type": "Response"}
        if request_id is not None:
            body["requestId"] = request_id
        body.update(response)
        await self._send(body)

    async def _enable_push(self, obj: dict[str, Any]) -> None:
        data_types = obj.get("dataTypes")
        if data_types is not None and (
            not isinstance(data_types, list) or not all(isinstance(t, str) for t in data_types)
        ):
            raise _not_request("dataTypes must be an array of type names or null")
        push_state = obj.get("pushState")
        if push_state is not None and not isinstance(push_state, str):
            raise _not_request("pushState must be a String")
        await self._disable_push()
        account = self._who.account
        hub = self._app[views.SERVICES].push.hub
        stream = PushStream(hub, account.account_id, account.epoch, data_types)
        self._push = stream
        first = await stream.open(push_state, initial=False)
        if first:
            await self._state_change(stream, first)
        loop = asyncio.get_running_loop()
        self._push_task = loop.create_task(self._pushing(stream))
        # the shares (http.shares): their changes from now on; ``pushState`` resumes the
        # login's own account only
        for share in await views.share_accounts_of(self._app, self._who):
            one = PushStream(hub, share.account_id, share.epoch, data_types)
            await one.open(None, initial=False)
            self._shares.append((one, loop.create_task(self._pushing(one))))

    async def _pushing(self, stream: PushStream) -> None:
        while True:
            change = await stream.next(None)
            if change:
                await self._state_change(stream, change)

    async def _state_change(self, stream: PushStream, change: dict[str, str]) -> None:
        own = self._push if self._push is not None else stream
        await self._send({**stream.state_change(change), "pushState": own.token})

    async def _disable_push(self) -> None:
        task, self._push_task = self._push_task, None
        stream, self._push = self._push, None
        shares, self._shares = self._shares, []
        tasks = [t for t in (task, *(t for _, t in shares)) if t is not None]
        try:
            await cancel_and_wait(*tasks)
        finally:
            # also when this connection's own task is being cancelled (the client went
            # away): its streams must leave the hub, or the watcher outlives every listener
            for closing in (stream, *(s for s, _ in shares)):
                if closing is not None:
                    await closing.close()

    async def _error(self, error: RequestError, request_id: str | None = None) -> None:
        body: dict[str, Any] = {"@type": "RequestError"}
        if request_id is not None:
            body["requestId"] = request_id
        body.update(error.to_json())
        await self._send(body)

    async def _send(self, body: dict[str, Any]) -> None:
        async with self._send_lock:
            if self._ws.closed:
                return
            with contextlib.suppress(ConnectionError):
                await self._ws.send_json(body)


async def websocket_view(request: web.Request) -> web.StreamResponse:
    who, by_token = await views.authenticate_stream(request, "websocket")
    cfg = request.app[views.CONFIG]
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=_HEARTBEAT,
        max_msg_size=cfg.limits.max_size_request,
    )
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise RequestError(
            RequestErrorType.BLANK, "a WebSocket upgrade is required", title="Bad Request"
        )
    if ready.protocol != SUBPROTOCOL:
        raise RequestError(
            RequestErrorType.BLANK,
            "the WebSocket subprotocol 'jmap' is required (RFC 8887 §4.2)",
            title="Bad Request",
        )
    await ws.prepare(request)
    connection = _Connection(request.app, who, ws, push_only=by_token)
    try:
        await connection.serve()
    finally:
        await connection.close()
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get(WEBSOCKET_PATH, websocket_view)
    app.router.add_get(WEBSOCKET_PATH.rstrip("/"), websocket_view)
