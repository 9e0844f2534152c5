"""Middlewares: problem details (RFC 7807), CORS, and one access-log line per request.

This module and ``jmap.dispatch`` are the only places that write error bodies: request-level
errors here, method-level errors there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from imapjmap.http import cors as cors_rules
from imapjmap.http.connections import BodyTimeout
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.metrics import EVENTS

log = logging.getLogger(__name__)
access_log = logging.getLogger("imapjmap.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_ORIGINS = web.AppKey("cors_origins", frozenset[str])


def problem(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An ``application/problem+json`` response."""
    body: dict[str, Any] = {"type": type_, "status": status, "detail": detail}
    if title:
        body["title"] = title
    body.update(extra)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers=headers,
    )


def render(error: RequestError, headers: dict[str, str] | None = None) -> web.Response:
    body = error.to_json()
    if error.type is RequestErrorType.BLANK:
        body.setdefault("title", error.title or "")
    return web.Response(
        status=error.status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers=headers,
    )


QUIET_PATHS: Final = frozenset({"/healthz", "/readyz"})


@web.middleware
async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status: int | str = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = "cancelled"  # the client went away, or the server is stopping: no answer
        raise
    finally:
        # a monitor polls the health endpoints every few seconds: only failures are news
        quiet = status == 200 and request.path in QUIET_PATHS
        seconds = time.monotonic() - started
        access_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s %.1fms",
            request.method,
            request.path,
            status,
            seconds * 1000,
        )
        EVENTS.http_request(_route(request), status, seconds)


def _route(request: web.Request) -> str:
    """The route template a request matched (``/jmap/download/{accountId}/...``), never the
    path itself: paths carry account and blob ids (metrics Rule 1)."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Browser clients call the API cross-origin; preflights need no credentials.  Every
    other response gets its CORS headers from :func:`add_cors_headers`."""
    if request.method == "OPTIONS":
        origins: frozenset[str] = request.app[CORS_ORIGINS]
        headers = cors_rules.preflight_headers(request.headers, origins)
        return web.Response(status=204, headers=headers)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs for every response just before its headers leave,
    streams (EventSource, WebSocket) and error pages included."""
    if request.method == "OPTIONS":
        return
    origins: frozenset[str] = request.app[CORS_ORIGINS]
    headers = cors_rules.response_headers(request.headers.get("Origin"), origins)
    vary = headers.pop("Vary", None)
    response.headers.update(headers)
    if vary is not None:
        earlier = response.headers.get("Vary")
        response.headers["Vary"] = f"{earlier}, {vary}" if earlier else vary


@web.middleware
async def problem_details(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as a problem document; never a traceback (CORE-ERR-*)."""
    try:
        return await handler(request)
    except RequestError as exc:
        return render(exc, exc.headers)
    except BodyTimeout as exc:
        response = problem(408, str(exc), title="Request Timeout")
        response.force_close()  # the rest of the body may still come: the connection is spent
        return response
    except ConnectionError:
        # the client left before sending all it announced: its mistake, and no one to
        # answer; the status is for the access log only
        log.info("%s %s: the client went away mid-request", request.method, request.path)
        response = problem(400, "the client closed the connection", title="Bad Request")
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        }
        return problem(exc.status, exc.reason, title=exc.reason, headers=headers)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return problem(500, "internal server error", title="Internal Server Error")


@web.middleware
async def identity_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request bodies are taken as sent: one with a Content-Encoding is refused with 415.

    aiohttp decodes gzip, deflate and br bodies itself, but takes a truncated gzip stream
    for a shorter body (an upload would be stored cut short) and fails on bytes that do not
    decode, with an unhandled exception when it reads them after the handler.  No JMAP client
    compresses what it sends.  A body that failed to decode ends the connection after the
    answer, without aiohttp reading the rest of it.
    """
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        response = await handler(request)
    else:
        log.info("%s %s: refused Content-Encoding %.40r", request.method, request.path, coding)
        error = RequestError(
            RequestErrorType.BLANK,
            "request bodies are accepted without a Content-Encoding",
            status=415,
            title="Unsupported Media Type",
        )
        response = render(error)
        response.force_close()  # what is left of the body is not read
    if request.content.exception() is not None:
        request.content.feed_eof()  # nothing more will be read from it
        response.force_close()  # "Connection: close", so the client does not reuse it
    return response
