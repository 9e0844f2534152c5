"""Push when Dovecot rotates a mailbox's index log (CORE-PUSH-01).

Dovecot's NOTIFY watches INBOX's ``dovecot.index.log`` by inode; a rotated log leaves the
watch on the old file, and NOTIFY then reports INBOX only every 30 s.  A mailbox of
100,000 messages rotates at the first change after its first sync.  Here Dovecot rotates
at every write, so every change after the first is one that a dead watch would miss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.imap_watch import NotifyWatch
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.pushkit import (
    EventReader,
    external_append,
    open_events,
    wait_for,
    wait_watching,
    watcher_of,
)

pytestmark = pytest.mark.dovecot

ROTATE_AT_EVERY_WRITE = (
    "mail_index_log_rotate_min_size = 0\n"
    "mail_index_log_rotate_max_size = 1\n"
    "mail_index_log_rotate_min_age = 0\n"
)
STATUS_INTERVAL = 0.5
DEADLINE = STATUS_INTERVAL + 2.0  # NOTIFY's own delay is 0.5 s; its 30 s fallback is far


@pytest.fixture(scope="module")
def rotating_dovecot() -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    with dovecot_root("dovecot-rotating") as root:
        server = DovecotServer.start(root, extra_conf=ROTATE_AT_EVERY_WRITE)
        yield server
        server.stop()


async def _email_changed(
    events: EventReader, account_id: str, started: float, deadline: float = DEADLINE
) -> float:
    """Seconds from ``started`` until a state event with a new Email state."""
    loop = asyncio.get_running_loop()
    while True:
        left = started + deadline - loop.time()
        try:
            event = await events.next(timeout=max(left, 0.01))
        except TimeoutError:
            raise AssertionError(f"no Email state event within {deadline} s") from None
        if "Email" in event.data["changed"][account_id]:
            return loop.time() - started


async def test_push_outlives_index_log_rotation_core_push_01(
    rotating_dovecot: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    username, password = f"rotating-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    rotating_dovecot.add_user(username, password)
    user = ImapUser(username, password, rotating_dovecot.host, rotating_dovecot.port)
    cfg = proxy_config(user, tmp_path)
    cfg = dataclasses.replace(
        cfg, push=dataclasses.replace(cfg.push, status_interval=STATUS_INTERVAL)
    )
    oracle = user.connect()
    try:
        async with proxy_client(cfg) as http:
            client = Jmap(http, username, password)
            await client.session()
            events = await open_events(client)
            await events.next()  # the current states
            await wait_watching(client)
            loop = asyncio.get_running_loop()
            for n in range(3):
                started = loop.time()
                await external_append(oracle, f"after rotation {n}")
                await _email_changed(events, client.account_id, started)
            assert oracle.select("INBOX")[0] == "OK"
            for sign in ("+FLAGS", "-FLAGS"):
                started = loop.time()
                typ, _ = await asyncio.to_thread(oracle.uid, "STORE", "2", sign, "(\\Flagged)")
                assert typ == "OK"
                await _email_changed(events, client.account_id, started)
            got = await client.ok("Email/get", {"properties": ["keywords"]})
            assert len(got["list"]) == 3
            assert not any("$flagged" in e["keywords"] for e in got["list"])
            watcher = watcher_of(client)
            assert watcher.mode == "notify"
            events.resp.close()
    finally:
        oracle.logout()
    # the condition under test did happen: INBOX's log was rotated
    assert (rotating_dovecot.maildir(username) / "dovecot.index.log.2").exists()


async def test_inbox_reported_across_rotations_without_rearm_core_push_01(
    rotating_dovecot: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """INBOX is the watcher's selected mailbox, so a change there is reported at once
    after its log rotated, with no re-arm to rescue a dead watch (``status_interval``
    0: the next re-arm is minutes away).  Through NOTIFY's ``personal`` filter alone a
    flag change came only at Dovecot's 30 s check."""
    username, password = f"selected-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    rotating_dovecot.add_user(username, password)
    user = ImapUser(username, password, rotating_dovecot.host, rotating_dovecot.port)
    cfg = proxy_config(user, tmp_path)
    cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, status_interval=0.0))
    deadline = 6.0  # Dovecot's own delay is 0.5 s; its fallback 30 s
    oracle = user.connect()
    try:
        async with proxy_client(cfg) as http:
            client = Jmap(http, username, password)
            await client.session()
            events = await open_events(client)
            await events.next()  # the current states
            await wait_watching(client)
            loop = asyncio.get_running_loop()
            assert oracle.select("INBOX")[0] == "OK"
            for n in range(2):
                started = loop.time()
                await external_append(oracle, f"selected {n}")
                await _email_changed(events, client.account_id, started, deadline)
            for sign in ("+FLAGS", "-FLAGS", "+FLAGS"):
                started = loop.time()
                typ, _ = await asyncio.to_thread(oracle.uid, "STORE", "1", sign, "(\\Seen)")
                assert typ == "OK"
                await _email_changed(events, client.account_id, started, deadline)
            started = loop.time()
            await asyncio.to_thread(
                rotating_dovecot.doveadm, "expunge", "-u", username, "mailbox", "INBOX", "uid", "2"
            )
            await _email_changed(events, client.account_id, started, deadline)
            got = await client.ok("Email/get", {"properties": ["keywords"]})
            assert [e["keywords"] for e in got["list"]] == [{"$seen": True}]
            watcher = watcher_of(client)
            assert watcher.mode == "notify" and watcher.rearms == 0
            events.resp.close()
    finally:
        oracle.logout()
    assert (rotating_dovecot.maildir(username) / "dovecot.index.log.2").exists()


async def test_notify_set_again_keeps_reporting_core_push_01(
    dovecot: DovecotServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """After each re-arm NOTIFY itself still reports a change: no refresh of the next
    re-arm needed (``watcher.events`` counts what NOTIFY reported).  A bare ``NOTIFY SET``
    over a live one leaves Dovecot 2.3 with no watch every other time."""
    username, password = f"rearm-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    dovecot.add_user(username, password)
    user = ImapUser(username, password, dovecot.host, dovecot.port)
    cfg = proxy_config(user, tmp_path)
    cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, status_interval=1.5))
    monkeypatch.setattr(NotifyWatch, "rearm_every", 1.5)
    oracle = user.connect()
    try:
        async with proxy_client(cfg) as http:
            client = Jmap(http, username, password)
            await client.session()
            events = await open_events(client)
            await events.next()  # the current states
            await wait_watching(client)
            watcher = watcher_of(client)
            loop = asyncio.get_running_loop()
            for n in range(4):
                rearms = watcher.rearms
                await wait_for(lambda r=rearms: watcher.rearms > r, what="a re-arm")
                await asyncio.sleep(0.1)  # its refresh
                heard = watcher.events
                started = loop.time()
                await external_append(oracle, f"after re-arm {n}")
                await _email_changed(events, client.account_id, started)
                assert watcher.events > heard, f"NOTIFY was silent after re-arm {n + 1}"
            events.resp.close()
    finally:
        oracle.logout()


async def test_notify_without_idle_is_not_sent_idle_core_push_01(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy_client: ProxyClient
) -> None:
    """A server that offers NOTIFY but not IDLE is never sent IDLE; NOTIFY alone still
    reports an APPEND to INBOX (or the next re-arm's refresh finds it)."""
    entered: list[ImapSession] = []
    original = ImapSession.idle_start

    async def idle_start(session: ImapSession) -> None:
        entered.append(session)
        await original(session)

    monkeypatch.setattr(ImapSession, "idle_start", idle_start)
    ensure_dovecot_installed()
    with dovecot_root("dovecot-no-idle") as root:
        server = DovecotServer.start(root, remove_capabilities=("IDLE",))
        try:
            username, password = f"noidle-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
            server.add_user(username, password)
            user = ImapUser(username, password, server.host, server.port)
            cfg = proxy_config(user, tmp_path)
            cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, status_interval=1.0))
            oracle = user.connect()
            try:
                async with proxy_client(cfg) as http:
                    client = Jmap(http, username, password)
                    await client.session()
                    events = await open_events(client)
                    await events.next()  # the current states
                    await wait_watching(client)
                    started = asyncio.get_running_loop().time()
                    await external_append(oracle, "no idle")
                    await _email_changed(events, client.account_id, started, 6.0)
                    watcher = watcher_of(client)
                    await wait_for(lambda: watcher.checks >= 1, what="a check")
                    events.resp.close()
            finally:
                oracle.logout()
        finally:
            server.stop()
    assert "IDLE" not in server.capabilities
    assert entered == []


async def test_notify_is_not_set_again_at_every_check_core_push_01(
    dovecot: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """Every ``status_interval`` the account is refreshed, but NOTIFY is set again only every
    ``NotifyWatch.rearm_every``: a NOTIFY NONE + SET every 2 s made Dovecot 2.3.19 miss half the
    flag changes of a selected 100,000-message INBOX.  A flag change is heard by NOTIFY
    itself between the checks."""
    username, password = f"checks-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    dovecot.add_user(username, password)
    user = ImapUser(username, password, dovecot.host, dovecot.port)
    cfg = proxy_config(user, tmp_path)
    cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, status_interval=0.5))
    oracle = user.connect()
    try:
        async with proxy_client(cfg) as http:
            client = Jmap(http, username, password)
            await client.session()
            events = await open_events(client)
            await events.next()  # the current states
            await wait_watching(client)
            loop = asyncio.get_running_loop()
            await external_append(oracle, "checked")
            await _email_changed(events, client.account_id, loop.time(), deadline=8.0)
            watcher = watcher_of(client)
            await wait_for(lambda: watcher.checks >= 4, what="four checks")
            assert oracle.select("INBOX")[0] == "OK"
            heard = watcher.events
            started = loop.time()
            typ, _ = await asyncio.to_thread(oracle.uid, "STORE", "1", "+FLAGS", "(\\Flagged)")
            assert typ == "OK"
            await _email_changed(events, client.account_id, started, deadline=8.0)
            await wait_for(lambda: watcher.events > heard, timeout=8.0, what="NOTIFY's report")
            assert watcher.rearms == 0
            events.resp.close()
    finally:
        oracle.logout()
