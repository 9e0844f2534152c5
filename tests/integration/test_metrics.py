"""``/metrics``: what an operator's Prometheus scrapes, after real traffic to real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from imapjmap import smtp
from imapjmap.config import MetricsConfig, ServerConfig, SmtpConfig, to_toml
from imapjmap.errors import SmtpUnavailable
from imapjmap.http import views
from imapjmap.metrics import EVENTS
from imapjmap.store.db import POSTGRESQL_SCHEMES
from tests.conftest import ImapUser
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of
from tests.integration.pushkit import open_events, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: TestClient[Any, Any]) -> tuple[str, Samples]:
    resp = await http.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    )


async def test_metrics_count_requests_methods_and_imap_round_trips(
    jmap: Jmap, imap_user: ImapUser
) -> None:
    _, before = await scrape(jmap.http)
    await jmap.ok("Email/query", {"limit": 5})
    await jmap.request([["No/suchMethod", {}, "x"]])
    text, after = await scrape(jmap.http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("imapjmap_http_requests_total", route="/jmap/api/", status="200") == 2
    assert grew("imapjmap_jmap_method_calls_total", method="Email/query", outcome="ok") == 1
    assert grew("imapjmap_jmap_method_duration_seconds_count", method="Email/query") == 1
    # a client's method name never becomes a label (Rule 1 of imapjmap.metrics)
    assert grew("imapjmap_jmap_method_calls_total", method="unknown", outcome="unknownMethod") == 1
    assert "No/suchMethod" not in text
    upstream = f"{imap_user.host}:{imap_user.port}"
    assert value(after, "imapjmap_imap_commands_total", upstream=upstream, outcome="ok") > 0
    assert value(after, "imapjmap_imap_commands_total", command="LOGIN", outcome="ok") >= 1
    assert value(after, "imapjmap_imap_connections") >= 1
    assert value(after, "imapjmap_accounts_in_sync") == 1
    cache = jmap.http.server.app[views.SERVICES].store.path
    if cache.startswith(POSTGRESQL_SCHEMES):  # its size is the database server's to report
        assert "imapjmap_cache_size_bytes" not in text
    else:
        assert value(after, "imapjmap_cache_size_bytes") > 0
    # nobody's name or account id is in there
    assert imap_user.username not in text and jmap.account_id not in text


async def test_push_listeners_and_watchers_are_levels(jmap: Jmap) -> None:
    """Each instance counts its own listeners and watchers: over all of them, the one
    EventSource and the account's one watcher in the whole cluster."""
    events = await open_events(jmap)
    services = [app[views.SERVICES].push for app in apps_of(jmap.http)]
    await wait_for(
        lambda: any(jmap.account_id in service.watchers for service in services),
        what="the watcher",
    )
    # the client turns to the next instance on each request: one scrape of each
    each = [(await scrape(jmap.http))[1] for _ in services]
    assert sum(value(samples, "imapjmap_push_listeners") for samples in each) == 1
    assert sum(value(samples, "imapjmap_push_watchers") for samples in each) == 1
    events.resp.close()


async def test_metrics_can_be_switched_off(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path), metrics=MetricsConfig(enabled=False)
    )
    async with proxy_client(cfg) as http:
        for _ in apps_of(http):  # on every instance
            assert (await http.get("/metrics")).status == 404


async def test_a_metrics_listener_of_its_own_takes_metrics_off_the_main_one(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path), metrics=MetricsConfig(listen="127.0.0.1:9")
    )
    async with proxy_client(cfg) as http:
        for _ in apps_of(http):  # on every instance
            assert (await http.get("/metrics")).status == 404


async def test_a_served_process_gives_metrics_their_own_listener(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    port, metrics_port = _free_port(), _free_port()
    base = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(
        base,
        server=ServerConfig(listen=f"127.0.0.1:{port}", base_url=f"http://127.0.0.1:{port}"),
        metrics=MetricsConfig(listen=f"127.0.0.1:{metrics_port}"),
    )
    config = tmp_path / "imapjmap.toml"
    config.write_text(to_toml(cfg))
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "imapjmap", "serve", "--config", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while f"metrics at http://127.0.0.1:{metrics_port}/metrics" not in log.read_text():
            assert process.returncode is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                assert "imapjmap_accounts_in_sync 0.0" in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 404
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0, log.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_smtp_submissions_are_counted_by_outcome() -> None:
    def count(outcome: str) -> float:
        got = EVENTS.registry.get_sample_value(
            "imapjmap_smtp_submissions_total", {"outcome": outcome}
        )
        return got or 0.0

    refused, unavailable = count("refused"), count("unavailable")
    args: dict[str, Any] = {
        "username": "u",
        "password": "p",
        "mail_from": "a@example.org",
        "mail_params": (),
        "message": b"Subject: x\r\n\r\nx\r\n",
    }
    with pytest.raises(smtp.SubmitRefused):
        await smtp.submit(SmtpConfig(host="127.0.0.1", port=9), rcpts=[], **args)
    cfg = SmtpConfig(host="127.0.0.1", port=9, security="none", auth="none", timeout=2.0)
    with pytest.raises(SmtpUnavailable):
        await smtp.submit(cfg, rcpts=[("b@example.org", ())], **args)
    assert (count("refused"), count("unavailable")) == (refused + 1, unavailable + 1)
