"""The aiohttp application: routes, middleware order, one cleanup context per resource."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web

from imapjmap.config import Config
from imapjmap.http import blobs, middleware, push, views
from imapjmap.http.auth import Authenticator
from imapjmap.imap.pool import ImapPools
from imapjmap.methods.context import Services
from imapjmap.store.db import Store

log = logging.getLogger(__name__)


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[views.CONFIG]
    store = await Store.open(cfg.cache.path)
    pools = ImapPools(cfg.imap)
    services = Services(cfg, store, pools)
    app[views.SERVICES] = services
    app[views.AUTH] = Authenticator(cfg, store, pools)
    try:
        yield
    finally:
        await services.push.aclose()
        for sync in services.syncs.values():
            await sync.aclose()
        await pools.aclose()
        await store.aclose()


def make_app(cfg: Config) -> web.Application:
    app = web.Application(
        middlewares=[middleware.access, middleware.cors, middleware.problem_details],
        client_max_size=cfg.limits.max_size_request + 1,
    )
    app[views.CONFIG] = cfg
    app[views.IN_FLIGHT] = Counter()
    app.cleanup_ctx.append(_services_ctx)
    views.add_routes(app)
    blobs.add_routes(app)
    push.add_routes(app)
    return app


def serve(cfg: Config) -> None:
    """Run the proxy in the foreground until SIGINT or SIGTERM."""
    log.info(
        "imapjmap listening on %s (session at %s/.well-known/jmap)",
        cfg.server.listen,
        cfg.server.base_url.rstrip("/"),
    )
    web.run_app(
        make_app(cfg),
        host=cfg.server.host,
        port=cfg.server.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )
