"""``GET /metrics``: the Prometheus text exposition (:mod:`imapjmap.metrics`).

The event counters are process-wide; the levels are read from this app's services at
each scrape (cheap: counts of what is in memory, and the cache file's size on SQLite).  Served on
``server.listen``, or on a listener of its own when ``metrics.listen`` is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from aiohttp import web

from imapjmap.http import views
from imapjmap.metrics import CONTENT_TYPE, Level, Levels, render
from imapjmap.services import Services
from imapjmap.store.db import POSTGRESQL_SCHEMES


def levels_of(app: web.Application) -> Levels:
    """The gauges of the app's services (none while it starts or stops)."""

    def read() -> Iterator[Level]:
        services = app.get(views.SERVICES)
        if services is not None:
            yield from _levels(services)

    return Levels(read)


def _levels(services: Services) -> Iterator[Level]:
    pools = services.pools.all()
    for state, count in (
        ("idle", sum(p.idle_count for p in pools)),
        ("busy", sum(p.busy_count for p in pools)),
    ):
        yield Level(
            "imap_connections",
            "IMAP connections of the request pools (idle: open and waiting)",
            count,
            (("state", state),),
        )
    yield Level("imap_pools", "Accounts with an IMAP connection pool", len(pools))
    syncs = list(services.syncs.values())
    yield Level("accounts_in_sync", "Accounts whose cache this process keeps in sync", len(syncs))
    progress = [p for p in (s.first_sync_progress() for s in syncs) if p is not None]
    yield Level(
        "first_sync_accounts",
        "Accounts with a first sync filling in behind requests",
        len(progress),
    )
    yield Level(
        "first_sync_messages_done",
        "Messages synced so far by the first syncs still filling in",
        sum(done for done, _ in progress),
    )
    yield Level(
        "first_sync_messages_total",
        "Messages the first syncs still filling in have to sync in all",
        sum(total for _, total in progress),
    )
    push = services.push
    yield Level(
        "push_listeners",
        "Push listeners (EventSource, WebSocket, PushSubscription) of every account",
        push.hub.all_listeners(),
    )
    yield Level("push_watchers", "Upstream watchers (one per watched account)", len(push.watchers))
    path = services.store.path
    if not path.startswith(POSTGRESQL_SCHEMES):  # a database server reports its own sizes
        yield Level("cache_size_bytes", "The cache file with its write-ahead log", _file_size(path))


def _file_size(path: str) -> int:
    size = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):  # no WAL yet, or an in-memory cache
            size += os.stat(name).st_size
    return size


LEVELS = web.AppKey("metrics_levels", Levels)


async def metrics_view(request: web.Request) -> web.Response:
    body = render(request.app[LEVELS])
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )


def add_routes(app: web.Application, source: web.Application | None = None) -> None:
    """Serve /metrics on ``app``, with the levels of ``source``'s services (``app`` itself
    unless /metrics has a listener of its own)."""
    app[LEVELS] = levels_of(source if source is not None else app)
    app.router.add_get("/metrics", metrics_view)


def metrics_app(source: web.Application) -> web.Application:
    """The app of a listener of its own (``metrics.listen``): /metrics alone."""
    app = web.Application()
    add_routes(app, source)
    return app
