"""The HTTP client of PushSubscription delivery (RFC 8620 §7.2): aiohttp's side of
:class:`imapjmap.push.subscriptions.PushPoster`.

Rule 1: a URL that does not start with one of ``push.allowed_url_prefixes`` is only ever
        connected to on a public address: the connector's resolver drops every other
        address at connection time (so a host that re-resolves to 127.0.0.1 after the
        create-time check gets nowhere), and an IP-literal host is checked here.
Rule 2: no redirects are followed, no proxy from the environment is used, and every POST
        has a timeout.
Rule 3: aiohttp's exceptions become ``OSError`` here, as the poster protocol says.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from imapjmap.http import views
from imapjmap.push.subscriptions import allowed_by_prefix, is_public

log = logging.getLogger(__name__)

_TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=10)


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the default resolver, keeping only public addresses."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise OSError(f"{host[:100]} has no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


class WebPushPoster:
    """POSTs push messages; one client session for policed URLs, one for trusted ones."""

    def __init__(self, allowed_prefixes: tuple[str, ...]) -> None:
        self._allowed = allowed_prefixes
        self._policed = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=PublicOnlyResolver()),
            timeout=_TIMEOUT,
            trust_env=False,
        )
        self._trusted = aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=False)

    async def post(self, url: str, body: bytes, *, ttl: int, encoding: str | None) -> int:
        trusted = allowed_by_prefix(url, self._allowed)
        if not trusted:
            _check_literal_host(url)
        session = self._trusted if trusted else self._policed
        headers = {"Content-Type": "application/json", "TTL": str(ttl)}
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._policed.close()
        await self._trusted.close()


def _check_literal_host(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not is_public(host):
        raise OSError(f"{host} is not a public address")


async def webpush_ctx(app: web.Application) -> AsyncIterator[None]:
    """Attach the poster to the push service and restore the stored subscriptions."""
    services = app[views.SERVICES]
    poster = WebPushPoster(services.cfg.push.allowed_url_prefixes)
    subscriptions = services.push.subscriptions
    subscriptions.poster = poster
    restored = await subscriptions.restore()
    if restored:
        log.info("push: delivering %d stored push subscriptions", restored)
    try:
        yield
    finally:
        await subscriptions.aclose()
        subscriptions.poster = None
        await poster.aclose()
        await asyncio.sleep(0)  # let the connectors' transports finish closing
