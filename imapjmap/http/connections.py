"""The HTTP server's connections: slow, greedy and malformed clients.

aiohttp's server reads a request's headers and body for as long as the client cares to send
them, and logs malformed HTTP at ERROR with a traceback.  :class:`GuardedRunner` is an
``AppRunner`` whose connections are :class:`GuardedHandler` protocols, which add:

Rules
1. Headers: a request's headers must be complete within ``header_timeout`` seconds of its
   first byte (of the connection's opening, for its first request).  Otherwise the client
   gets a 408 and the connection is closed.  An idle keep-alive connection (between two
   requests) is aiohttp's own business: it closes after ``keepalive_timeout``.
2. Body: once the headers are in, a body that stalls (no byte for ``body_timeout`` seconds
   while the server waits for more) makes the handler's next read raise
   :class:`BodyTimeout`; the problem-details middleware answers 408 and the connection is
   closed.  Time during which the server itself stopped reading (the handler has not caught
   up with the body yet) does not count: only the client can be slow.
3. At most ``max_per_address`` connections are open at once from one client address; one
   more is answered 503 and closed.
4. Malformed HTTP is the client's mistake, not the server's: one INFO line and a 400
   problem document, no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)

LINGER: Final = 1.0  # seconds a refused connection is kept to let its answer arrive


class BodyTimeout(asyncio.TimeoutError):
    """The client stopped sending a request body it had announced (Rule 2).

    A ``TimeoutError``, so that aiohttp's own clean-up after a handler (which reads what is
    left of the body) treats it as the end of that body, not as a crash.
    """


@dataclass(slots=True)
class Guard:
    """The limits of Rules 1-3 and the per-address connection count they share."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_per_address: int = 100
    open: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str | None) -> bool:
        if address is None:  # a Unix socket: no address to count
            return True
        if self.open[address] >= self.max_per_address:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str | None) -> None:
        if address is None:
            return
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


def raw_problem(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 problem response for a connection about to be closed."""
    phrase = HTTPStatus(status).phrase
    body = json.dumps({"type": "about:blank", "status": status, "title": phrase, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return (head + body).encode()


@dataclass(slots=True)
class _BodyWatch:
    payload: StreamReader
    last_byte: float
    timer: asyncio.TimerHandle | None = None


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with Rules 1-4.

    It reads a few of ``RequestHandler``'s private attributes: ``_request_count`` (requests
    parsed so far: it grows when a request's headers are complete), ``_messages`` (parsed
    requests not yet handled), ``_request_in_progress`` and ``_reading_paused``.
    """

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0
        self._body: _BodyWatch | None = None
        self._hanging_up = False

    # --- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        super().connection_made(transport)
        if not self._guard.admit(self._address):
            log.info("refused a connection from %s: too many open", self._address)
            self._close_with(503, "too many connections from this address")
            return
        self._admitted = True
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted:
            self._admitted = False
            self._guard.release(self._address)
        self._cancel_header_timer()
        self._stop_body_watch()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._hanging_up:
            return
        if (
            self._header_timer is None
            and self._body is None
            and not self._request_in_progress
            and not self._messages
            and not self._upgraded
        ):  # the first bytes of a new request
            self._arm_header_timer()
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_header_timer()
            new = list(self._messages)[-(self._request_count - before) :]
            for _message, payload in new:
                if payload is not EMPTY_PAYLOAD and not payload.is_eof():
                    self._watch_body(payload)
        elif self._body is not None:
            self._body.last_byte = self._loop.time()

    def _close_with(self, status: int, detail: str) -> None:
        """Answer and hang up so that the answer arrives: closing a socket whose client is
        still sending makes the kernel reset it, and a reset can destroy the answer in
        flight.  So: answer, end our side, swallow what still comes, close after a linger."""
        transport = self.transport
        if transport is None:
            return
        self._hanging_up = True
        self._cancel_header_timer()
        self._stop_body_watch()
        transport.write(raw_problem(status, detail))
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(LINGER, self.force_close)

    # --- Rule 1: headers ----------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_count = self._request_count
        self._header_timer = self._loop.call_later(
            self._guard.header_timeout, self._headers_overdue
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self._request_count != self._header_count or self._request_in_progress:
            return
        log.info(
            "closed a connection from %s: request headers not complete within %gs",
            self._address,
            self._guard.header_timeout,
        )
        self._close_with(
            408, f"request headers not complete within {self._guard.header_timeout:g} seconds"
        )

    # --- Rule 2: bodies -----------------------------------------------------------------

    def _watch_body(self, payload: StreamReader) -> None:
        self._stop_body_watch()  # a pipelined request: only the latest body can be arriving
        self._body = _BodyWatch(payload, self._loop.time())
        self._schedule_body_check(self._guard.body_timeout)

    def _schedule_body_check(self, delay: float) -> None:
        assert self._body is not None
        self._body.timer = self._loop.call_later(delay, self._check_body)

    def _stop_body_watch(self) -> None:
        if self._body is not None and self._body.timer is not None:
            self._body.timer.cancel()
        self._body = None

    def _check_body(self) -> None:
        watch = self._body
        if watch is None:
            return
        watch.timer = None
        if watch.payload.is_eof() or watch.payload.exception() is not None:
            self._body = None
            return
        now = self._loop.time()
        if self._reading_paused:  # the server is behind, not the client
            watch.last_byte = now
        idle = now - watch.last_byte
        if idle < self._guard.body_timeout:
            self._schedule_body_check(self._guard.body_timeout - idle)
            return
        self._body = None
        log.info("request body from %s stalled for %gs", self._address, self._guard.body_timeout)
        watch.payload.set_exception(
            BodyTimeout(
                f"the request body stalled: no data for {self._guard.body_timeout:g} seconds"
            )
        )

    # --- Rule 4: malformed requests -----------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = message or (str(exc) if exc is not None else HTTPStatus(status).phrase)
        log.info("malformed request from %s: %s", request.remote, reason.splitlines()[0])
        if request.writer.output_size > 0:  # a response has begun: nothing more can be said
            raise ConnectionError("response already started")
        phrase = HTTPStatus(status).phrase
        body = {"type": "about:blank", "status": status, "title": phrase, "detail": reason}
        response = web.Response(
            status=status, body=json.dumps(body).encode(), content_type="application/problem+json"
        )
        response.force_close()
        return response


class _GuardedServer(web.Server):
    """aiohttp's ``Server`` (the protocol factory) making :class:`GuardedHandler`s."""

    def __init__(self, plain: web.Server, guard: Guard) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self._guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, guard=self._guard, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose connections follow Rules 1-4."""

    def __init__(self, app: web.Application, guard: Guard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        return _GuardedServer(await super()._make_server(), self._guard)
