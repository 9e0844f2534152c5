"""Freshness with a push watcher (imapjmap.sync.freshness; docs/design.md, "Freshness"):
no IMAP round trip for a request while the watcher is connected and quiet, and a change
it reported is in the very next request, even before the watcher's own refresh ran
(CORE-GET-04: a state changes whenever an object of its type changed upstream).  Run on
every upstream: NOTIFY on Dovecot, IDLE on Cyrus."""

from __future__ import annotations

import dataclasses
import imaplib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from imapjmap.cluster.pg import PgCoordinator
from imapjmap.config import ClusterConfig
from imapjmap.http import views
from imapjmap.push import watcher as watching
from imapjmap.push.service import PushService
from imapjmap.sync import engine
from imapjmap.sync.engine import AccountSync
from imapjmap.sync.freshness import State
from tests.conftest import ImapUser, advertises
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of
from tests.integration.pushkit import (
    EventReader,
    external_append,
    open_events,
    wait_for,
)


@pytest.fixture
async def watched(
    imap_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[tuple[Jmap, EventReader]]:
    """A proxy whose watcher makes no periodic checks during a test, with a listener open."""
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, status_interval=3600.0))
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        await client.ok("Email/query", {})  # the first sync
        events = await open_events(client)
        await events.next()
        await wait_for(lambda: _watching(client) is not None, what="a watcher")
        watcher = _push(client).watchers[client.account_id]
        await wait_for(lambda: watcher.mode in ("notify", "idle"), what="the watcher")
        await wait_for(lambda: _sync(client).freshness.state is State.FRESH, what="fresh")
        yield client, events
        events.resp.close()


def _watching(jmap: Jmap) -> web.Application | None:
    """The instance that holds the account's watcher (on several, the one the cluster
    chose), if one does."""
    for app in apps_of(jmap.http):
        if jmap.account_id in app[views.SERVICES].push.watchers:
            return app
    return None


def _push(jmap: Jmap) -> PushService:
    """The push service of the instance that watches the account."""
    app = _watching(jmap)
    assert app is not None, "no instance watches the account"
    return app[views.SERVICES].push


def _sync(jmap: Jmap) -> AccountSync:
    """The account's sync on the instance that watches it (or on the first, if none does)."""
    app = _watching(jmap) or apps_of(jmap.http)[0]
    return app[views.SERVICES].sync_for(jmap.account_id)


def _sent(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage().split(" > ", 1)[1]
        for r in caplog.records
        if r.name == "imapjmap.imap.session" and " > " in r.getMessage()
    ]


async def _subjects(jmap: Jmap) -> set[str]:
    ids = (await jmap.ok("Email/query", {}))["ids"]
    got = await jmap.ok("Email/get", {"ids": ids, "properties": ["subject"]})
    return {email["subject"] for email in got["list"]}


@pytest.mark.one_instance(
    "the watcher keeps only its own instance's cache fresh without asking; a request on"
    " another instance asks the IMAP server once (README, Running several instances)"
)
async def test_a_request_costs_no_round_trip_while_the_watcher_is_quiet(
    watched: tuple[Jmap, EventReader], caplog: pytest.LogCaptureFixture
) -> None:
    jmap, _ = watched
    caplog.set_level(logging.DEBUG, logger="imapjmap.imap.session")
    caplog.clear()
    refreshes = _sync(jmap).refreshes
    assert await _subjects(jmap) == set()
    await jmap.ok("Mailbox/get", {"ids": None})
    assert _sent(caplog) == []
    assert _sync(jmap).refreshes == refreshes


async def test_a_reported_change_is_in_the_next_request_before_the_watchers_refresh_core_get_04(
    watched: tuple[Jmap, EventReader],
    imap_oracle: imaplib.IMAP4,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watcher lets a burst of events settle before it refreshes; a request in that
    moment must ask the upstream itself, not take the cache as fresh."""
    jmap, _ = watched
    monkeypatch.setattr(watching, "_DEBOUNCE", 5.0)
    watcher = _push(jmap).watchers[jmap.account_id]
    heard = watcher.events
    await external_append(imap_oracle, "reported")
    await wait_for(lambda: watcher.events > heard, what="NOTIFY's report")
    assert _sync(jmap).freshness.state is State.WATCHED_STALE  # the watcher still waits
    assert await _subjects(jmap) == {"reported"}


async def test_losing_the_watcher_makes_requests_ask_again_core_get_04(
    watched: tuple[Jmap, EventReader], imap_oracle: imaplib.IMAP4, caplog: Any
) -> None:
    jmap, events = watched
    service, sync = _push(jmap), _sync(jmap)
    events.resp.close()  # the last listener leaves: the watcher stops
    await wait_for(lambda: jmap.account_id not in service.watchers, what="the watcher stopped")
    assert sync.freshness.state is State.STALE
    await external_append(imap_oracle, "unwatched")
    assert await _subjects(jmap) == {"unwatched"}


# --- the settled listing (sync/engine.py Rule 6) -----------------------------------------------


async def _settle(jmap: Jmap, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with nothing to do on every instance: each remembers its settled listing
    (Rule 6 is one instance's memory), for the whole test: on a loaded machine the requests
    between two runs of one instance (the other instance's among them) can outlast
    ``SETTLED_FOR``, and the listing would be read again for its age alone."""
    monkeypatch.setattr(engine, "SETTLED_FOR", 600.0)
    for _ in apps_of(jmap.http):
        await jmap.ok("Email/query", {})


def _count_cache_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a refresh read the cache's mailboxes and cursors."""
    reads = [0]
    original = AccountSync._snapshot

    def counted(self: AccountSync, tx: Any) -> Any:
        reads[0] += 1
        return original(self, tx)

    monkeypatch.setattr(AccountSync, "_snapshot", counted)
    return reads


async def test_a_settled_listing_spares_reading_the_cache_not_the_list(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    """Without a watcher every request still lists (one round trip), but once a run found
    nothing to do, the next ones with the same listing do not read the cache again."""
    await jmap.ok("Mailbox/get", {"ids": None})  # the first sync
    await _settle(jmap, monkeypatch)
    reads = _count_cache_reads(monkeypatch)
    caplog.set_level(logging.DEBUG, logger="imapjmap.imap.session")
    caplog.clear()
    for _ in range(3):
        await jmap.ok("Email/query", {})
    assert [c.split(" ", 2)[1] for c in _sent(caplog)].count("LIST") == 3
    # without CONDSTORE every mailbox is read again each time: never settled
    assert reads[0] == (0 if advertises(imap_oracle, "CONDSTORE") else 3)


async def test_changes_by_another_client_are_seen_past_a_settled_listing_core_get_04(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    await jmap.ok("Mailbox/get", {"ids": None})
    await jmap.ok("Email/query", {})  # settled
    await external_append(imap_oracle, "first")
    assert await _subjects(jmap) == {"first"}
    await jmap.ok("Email/query", {})  # settled again, with the message
    assert imap_oracle.select("INBOX")[0] == "OK"
    assert imap_oracle.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
    ids = (await jmap.ok("Email/query", {}))["ids"]
    got = await jmap.ok("Email/get", {"ids": ids, "properties": ["keywords"]})
    assert got["list"][0]["keywords"].get("$flagged") is True
    assert imap_oracle.create("Elsewhere")[0] == "OK"
    got = await jmap.ok("Mailbox/get", {"ids": None, "properties": ["name"]})
    assert "Elsewhere" in {box["name"] for box in got["list"]}


@pytest.mark.backends("dovecot", "cyrus")  # a listing settles only with CONDSTORE
async def test_a_settled_listing_is_found_without_the_sync_lock(
    imap_user: ImapUser,
    imap_oracle: imaplib.IMAP4,
    tmp_path: Path,
    cluster_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """Rule 7 with instances sharing the cache: a run that finds its settled listing again
    takes no sync lock (two round trips to PostgreSQL); a run that finds another takes it
    and lists once more under it, then sees the change (CORE-GET-04)."""
    assert advertises(imap_oracle, "CONDSTORE")
    taken: list[str] = []
    original = PgCoordinator.sync_lock

    def counted(self: PgCoordinator, account_id: str) -> Any:
        taken.append(account_id)
        return original(self, account_id)

    monkeypatch.setattr(PgCoordinator, "sync_lock", counted)
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path), cluster=ClusterConfig(url=cluster_url)
    )
    async with proxy_client(cfg) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()
        await jmap.ok("Mailbox/get", {"ids": None})  # the first sync
        await _settle(jmap, monkeypatch)
        caplog.set_level(logging.DEBUG, logger="imapjmap.imap.session")
        caplog.clear()
        taken.clear()
        for _ in range(3):
            await jmap.ok("Email/query", {})
        assert taken == []
        assert [c.split(" ", 2)[1] for c in _sent(caplog)].count("LIST") == 3
        await external_append(imap_oracle, "seen under the lock")
        caplog.clear()
        assert len((await jmap.ok("Email/query", {}))["ids"]) == 1
        assert taken == [jmap.account_id]
        assert [c.split(" ", 2)[1] for c in _sent(caplog)].count("LIST") == 2
        assert await _subjects(jmap) == {"seen under the lock"}


async def test_a_write_of_ours_forgets_the_settled_listing(
    jmap: Jmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sortOrder lives only in the cache: the upstream's listing does not move, yet the
    refresh after the write reads the cache again (a write of ours may change what a
    refresh compares)."""
    boxes = (await jmap.ok("Mailbox/get", {"ids": None}))["list"]
    await jmap.ok("Email/query", {})  # settled
    reads = _count_cache_reads(monkeypatch)
    await jmap.ok("Mailbox/set", {"update": {boxes[0]["id"]: {"sortOrder": 7}}})
    assert reads[0] >= 1
    got = await jmap.ok("Mailbox/get", {"ids": [boxes[0]["id"]], "properties": ["sortOrder"]})
    assert got["list"][0]["sortOrder"] == 7
