"""The aiohttp application: routes, middleware order, one cleanup context per resource
(the long-lived services are built and closed by :mod:`imapjmap.services`).

With ``server.tls_certificate`` the listener speaks TLS itself; SIGHUP loads a renewed
certificate (:mod:`imapjmap.http.tls`).

Stopping (SIGTERM or SIGINT) takes a few seconds whatever runs: new connections are
refused at once; requests in flight get twice :data:`SHUTDOWN_GRACE` seconds to finish
(aiohttp waits that long, warns the handler, waits as long again) and are then cancelled;
closing the upstream connections may take :data:`~imapjmap.services.CLOSE_TIMEOUT`
seconds; the cache is closed last, always (``Store.aclose`` interrupts what still runs
there, so the next process can open the file).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from imapjmap.config import Config, ServerConfig, split_listen
from imapjmap.errors import ConfigError, CoordinatorUnavailable, ProxyError
from imapjmap.http import blobs, health, middleware, push, scrape, views
from imapjmap.http.admission import RequestSlots
from imapjmap.http.auth import Authenticator
from imapjmap.http.connections import Guard, GuardedRunner
from imapjmap.http.push_token import signing_key
from imapjmap.http.shares import ShareAccounts
from imapjmap.http.tls import ServerTls
from imapjmap.services import open_store, start_services
from imapjmap.store import queries as q
from imapjmap.store.db import Store

log = logging.getLogger(__name__)

# A store opened before the app starts (serve() checks the cache before listening).
OPENED_STORE = web.AppKey("opened_store", Store)
PUSH_KEY = web.AppKey("push_token_key", bytes)

EXIT_FAILURE = 1  # the cache, the push token key or the listening address cannot be used
SHUTDOWN_GRACE: Final = 0.5
"""aiohttp's ``shutdown_timeout``: requests in flight are cancelled after twice this (a
busy cache reader thread slows the event loop down, and the cache takes up to a second
to close: the whole stop must stay within a few seconds)."""
SWITCH_INTERVAL: Final = 0.0005
"""Seconds a thread runs Python before it must hand the GIL to a waiting one (CPython's
default is 0.005).  The event loop shares the interpreter with the cache's reader threads:
while one of them computes (one account's huge filter or sort), every turn of the loop and
every row another account's read fetches waits for the GIL, up to this long.  A cheap
request takes dozens of such waits: at 5 ms each, one heavy account made the other
accounts' requests 3-10 times slower (``bench/fairness.py``)."""


async def _switch_interval_ctx(app: web.Application) -> AsyncIterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[views.CONFIG]
    services = await start_services(cfg, app.get(OPENED_STORE))
    app[views.SERVICES] = services
    app[views.REQUEST_SLOTS].share(services.cluster)  # the limit holds over the cluster
    app[views.AUTH] = Authenticator(
        cfg, services.store, services.pools, push_key=app[PUSH_KEY], cluster=services.cluster
    )
    app[views.SHARES] = ShareAccounts(services)
    services.cluster.on_shares = app[views.SHARES].known  # for push streams elsewhere
    try:
        yield
    finally:
        await services.aclose()


def make_app(cfg: Config) -> web.Application:
    """The application for ``cfg``.

    Raises:
        ConfigError: ``auth.push_token_key_file`` cannot be used.
    """
    push_key = signing_key(cfg.auth.push_token_key_file)
    app = web.Application(
        middlewares=[
            middleware.access,
            middleware.cors,
            middleware.identity_bodies,
            middleware.problem_details,
        ],
        client_max_size=cfg.limits.max_size_request + 1,
    )
    app[views.CONFIG] = cfg
    app[PUSH_KEY] = push_key
    limits = cfg.limits
    app[views.REQUEST_SLOTS] = RequestSlots(
        limits.max_concurrent_requests,
        limits.concurrent_request_wait_seconds,
        limits.max_waiting_requests,
    )
    app[views.SESSION_STATES] = views.SessionStates()
    app[middleware.CORS_ORIGINS] = frozenset(cfg.server.cors_origins)
    app.on_response_prepare.append(middleware.add_cors_headers)
    app.cleanup_ctx.append(_switch_interval_ctx)
    app.cleanup_ctx.append(_services_ctx)
    views.add_routes(app)
    blobs.add_routes(app)
    push.add_routes(app)
    health.add_routes(app)
    if cfg.metrics.enabled and cfg.metrics.listen is None:
        scrape.add_routes(app)
    return app


def serve(cfg: Config, *, announce: Callable[[], None] | None = None, worker: bool = False) -> int:
    """Run the proxy in the foreground until SIGINT or SIGTERM; return the exit status.

    ``announce`` runs once the address is listened on (a banner, a readiness signal):
    nothing says "ready" before the port is really taken.  ``worker``: one of the
    processes ``server.workers`` starts beside the first (no metrics listener of its own).
    """
    return asyncio.run(_serve(cfg, announce, worker=worker))


async def _serve(
    cfg: Config, announce: Callable[[], None] | None = None, *, worker: bool = False
) -> int:
    try:
        app = make_app(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    store = await _usable_cache(cfg)
    if store is None:
        return EXIT_FAILURE
    server = cfg.server
    tls: ServerTls | None = None
    if server.tls_certificate is not None and server.tls_key is not None:
        try:
            tls = ServerTls(server.tls_certificate, server.tls_key)
        except (OSError, ssl.SSLError) as exc:
            await store.aclose()
            log.error(
                "cannot use server.tls_certificate %r with server.tls_key %r: %s",
                server.tls_certificate,
                server.tls_key,
                " ".join(str(exc).split()),
            )
            return EXIT_FAILURE
    app[OPENED_STORE] = store
    guard = Guard(server.header_timeout, server.body_timeout, server.max_connections_per_address)
    runner = GuardedRunner(
        app,
        guard,
        access_log=None,
        keepalive_timeout=75.0,
        # a request whose client went away is cancelled: its work would be thrown away
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE,
    )
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        stopped_by.append(signum.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, _reload, tls)
    metrics_runner: web.AppRunner | None = None
    try:
        if not await _listen(runner, server, tls):
            return EXIT_FAILURE
        log.info(
            "imapjmap listening on %s%s (session at %s/.well-known/jmap)",
            server.listen,
            " with TLS" if tls else "",
            server.base_url.rstrip("/"),
        )
        if cfg.metrics.enabled and cfg.metrics.listen is not None and not worker:
            try:
                metrics_runner = await _metrics_listener(app, cfg.metrics.listen)
            except OSError as exc:
                log.error("cannot listen on %s: %s", cfg.metrics.listen, exc.strerror or exc)
                return EXIT_FAILURE
        if announce is not None:
            announce()
        await stop.wait()
        log.info("imapjmap stopping (%s)", stopped_by[0] if stopped_by else "asked to")
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
        await store.aclose()  # a no-op when the app's cleanup closed it already
    log.info("imapjmap stopped")
    return 0


async def _listen(runner: GuardedRunner, server: ServerConfig, tls: ServerTls | None) -> bool:
    """Start the services and listen; False after logging why it cannot be done."""
    try:
        await runner.setup()
    except CoordinatorUnavailable as exc:  # the other instances' PostgreSQL
        log.error("%s", exc)
        return False
    try:
        await web.TCPSite(
            runner,
            server.host,
            server.port,
            ssl_context=tls.context if tls else None,
            reuse_port=server.workers > 1 or None,
        ).start()
    except OSError as exc:
        log.error("cannot listen on %s: %s", server.listen, exc.strerror or exc)
        return False
    return True


async def _usable_cache(cfg: Config) -> Store | None:
    """The cache, opened and proven writable; None after logging why it cannot be used.

    It is opened before anything is announced: a path that cannot be used ends the process
    with one line saying why, not with a traceback after "listening".
    """
    try:
        store = await open_store(cfg)
    except ProxyError as exc:
        log.error("cannot use the cache %r: %s", cfg.cache.url or cfg.cache.path, exc)
        return None
    try:
        await store.run(q.probe_write)
    except ProxyError as exc:
        await store.aclose()
        reason = exc.__cause__ or exc  # SQLite's own words, without the statement
        where = cfg.cache.url or cfg.cache.path
        log.error("cannot use the cache %r: it cannot be written: %s", where, reason)
        return None
    return store


async def _metrics_listener(app: web.Application, listen: str) -> web.AppRunner:
    """/metrics on a listener of its own (``metrics.listen``), reading ``app``'s services.

    Raises:
        OSError: the address cannot be listened on.
    """
    runner = web.AppRunner(scrape.metrics_app(app), access_log=None)
    await runner.setup()
    host, port = split_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("metrics at http://%s/metrics", listen)
    return runner


def _reload(tls: ServerTls | None) -> None:
    """SIGHUP: a renewed certificate for new connections; nothing else is re-read."""
    if tls is None:
        log.info("SIGHUP: no TLS certificate to reload (server.tls_certificate is not set)")
        return
    failed = tls.reload()
    if failed is None:
        log.info("SIGHUP: TLS certificate %s loaded again", tls.certificate)
    else:
        log.error("SIGHUP: TLS certificate not reloaded, the previous one stays: %s", failed)
