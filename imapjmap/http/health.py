"""``/healthz`` and ``/readyz``: what a load balancer, an orchestrator or a monitor asks.

Both are unauthenticated, cheap and say nothing about any account.

- ``/healthz``: the process serves HTTP (its event loop turns).  Always ``200 ok`` while it
  answers at all: restart the process only when this fails.
- ``/readyz``: it can do its work now: the cache answers a read, and the IMAP server
  answers a connection (greeting and CAPABILITY, after STARTTLS when configured; no login).
  ``200`` when both do, else ``503``; the body is a short JSON status per check, with what
  failed.  The upstream's answer is remembered :data:`UPSTREAM_TTL` seconds, so a monitor
  polling every second costs the IMAP server one connection per that interval, and
  concurrent probes share one check.

  With several upstreams (``[[upstreams]]``) each IMAP server is probed, and the body has
  a check per upstream under ``upstreams`` (by name; ``imap`` stays the default's).  One
  upstream down is ``200 degraded``, not ``503``: its users get ``503`` from the API, the
  others are served, and taking the instance out of a load balancer would help nobody.
  Only when every upstream is down is it ``503``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from imapjmap.config import DEFAULT_UPSTREAM, ImapConfig
from imapjmap.errors import ProxyError
from imapjmap.http import views
from imapjmap.imap.session import ImapSession
from imapjmap.store import queries as q

CACHE_TIMEOUT: Final = 3.0  # seconds a cache read may take before the cache counts as failing
UPSTREAM_TTL: Final = 5.0  # seconds an upstream answer is reused
UPSTREAM_TIMEOUT: Final = 5.0  # at most, on top of imap.connect_timeout's own bound


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str  # "ok", or why not, in a few words
    ms: float

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail, "ms": round(self.ms, 1)}


class UpstreamProbe:
    """The IMAP server's last answer to a bare connection, kept :data:`UPSTREAM_TTL` s."""

    def __init__(self, cfg: ImapConfig, ttl: float = UPSTREAM_TTL) -> None:
        self._cfg = cfg
        self._ttl = ttl
        self._last: tuple[float, Check] | None = None
        self._running: asyncio.Task[Check] | None = None

    async def check(self) -> Check:
        last = self._last
        if last is not None and time.monotonic() - last[0] < self._ttl:
            return last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._probe())
        # shielded: a monitor that hangs up does not cancel the check for the others
        return await asyncio.shield(self._running)

    async def _probe(self) -> Check:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._cfg.connect_timeout + UPSTREAM_TIMEOUT):
                await ImapSession.probe_capabilities(self._cfg)
            check = Check(True, "ok", _ms(started))
        except TimeoutError:
            check = Check(False, "no answer in time", _ms(started))
        except ProxyError as exc:
            check = Check(False, _short(exc), _ms(started))
        self._last = (time.monotonic(), check)
        return check


PROBES = web.AppKey("upstream_probes", dict[str, UpstreamProbe])  # by upstream name


async def healthz_view(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def readyz_view(request: web.Request) -> web.Response:
    app = request.app
    probes = app[PROBES]
    cache, *answers = await asyncio.gather(_cache(app), *(p.check() for p in probes.values()))
    upstreams = dict(zip(probes, answers, strict=True))
    ready = cache.ok and any(check.ok for check in answers)
    status = "not ready" if not ready else "ready" if all(c.ok for c in answers) else "degraded"
    checks: dict[str, object] = {"cache": cache.as_json()}
    if DEFAULT_UPSTREAM in upstreams:
        checks["imap"] = upstreams[DEFAULT_UPSTREAM].as_json()
    if len(upstreams) > 1 or DEFAULT_UPSTREAM not in upstreams:
        checks["upstreams"] = {name: check.as_json() for name, check in upstreams.items()}
    body = {"status": status, "checks": checks}
    return web.json_response(
        body, status=200 if ready else 503, headers={"Cache-Control": "no-store"}
    )


async def _cache(app: web.Application) -> Check:
    started = time.monotonic()
    services = app.get(views.SERVICES)
    if services is None:
        return Check(False, "starting", 0.0)
    try:
        async with asyncio.timeout(CACHE_TIMEOUT):
            await services.store.read(q.probe_read)
    except TimeoutError:
        return Check(False, "no answer in time", _ms(started))
    except ProxyError as exc:
        return Check(False, _short(exc), _ms(started))
    return Check(True, "ok", _ms(started))


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _short(exc: BaseException) -> str:
    """The failure in one line of at most 200 characters (no traceback, no secret: the
    errors here name a host and a reason, never a credential)."""
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def add_routes(app: web.Application) -> None:
    cfg = app[views.CONFIG]
    app[PROBES] = {upstream.name: UpstreamProbe(upstream.imap) for upstream in cfg.all_upstreams()}
    app.router.add_get("/healthz", healthz_view)
    app.router.add_get("/readyz", readyz_view)
