"""Fair sharing of the cache between accounts, through the HTTP API against real Dovecot.

One account's Email/query is made endless by failure injection (its cache read runs a
recursive query that never ends by itself), which makes the ordering deterministic: another
account's ``Mailbox/get`` must answer while it runs, and the endless read must end at the
time budget with a method error that names the limit (CORE-ERR-10: the next call still runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devservers.dovecot import DovecotServer
from imapjmap.config import CacheConfig
from imapjmap.http import views
from imapjmap.http.app import SWITCH_INTERVAL, make_app
from imapjmap.methods.email import query as email_query
from imapjmap.store.db import Store
from tests.conftest import ImapUser, advertises
from tests.integration.conftest import Jmap, proxy_config

ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"
BUDGET = 3.0


def _user(dovecot: DovecotServer, name: str) -> ImapUser:
    username, password = f"{name}-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    dovecot.add_user(username, password)
    return ImapUser(username, password, dovecot.host, dovecot.port)


async def _until(condition: Any, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.mark.one_instance(
    "one instance's fairness: its cache's read gate and transaction budget, and another"
    " account's request answered by the same instance while the heavy read runs there"
)
async def test_one_accounts_endless_query_neither_delays_another_account_nor_runs_on(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heavy_user, light_user = _user(dovecot, "heavy"), _user(dovecot, "light")
    base = proxy_config(heavy_user, tmp_path)
    cfg = dataclasses.replace(
        base, cache=CacheConfig(path=base.cache.path, max_transaction_seconds=BUDGET)
    )
    app = make_app(cfg)
    before = sys.getswitchinterval()
    async with TestClient(TestServer(app)) as http:
        # reader threads hand the GIL to the event loop quickly while the app runs
        assert sys.getswitchinterval() == min(before, SWITCH_INTERVAL)
        heavy = Jmap(http, heavy_user.username, heavy_user.password)
        light = Jmap(http, light_user.username, light_user.password)
        await heavy.session()
        await light.session()
        await heavy.ok("Mailbox/get", {})  # both accounts synced before the race
        await light.ok("Mailbox/get", {})
        store: Store = app[views.SERVICES].store

        original = email_query._page

        def endless_for_heavy(runner: Any, args: Any) -> Any:
            if runner.account_id == heavy.account_id:
                runner.tx.scalar(ENDLESS)
            return original(runner, args)

        monkeypatch.setattr(email_query, "_page", endless_for_heavy)
        query = asyncio.ensure_future(
            heavy.request(
                [
                    ["Email/query", {"accountId": heavy.account_id}, "q"],
                    ["Mailbox/get", {"accountId": heavy.account_id, "ids": []}, "m"],
                ]
            )
        )
        await _until(lambda: store._reads.held(heavy.account_id) > 0, "the heavy read started")

        answered = await light.ok("Mailbox/get", {})
        assert not query.done()  # the light account answered while the heavy read ran
        assert any(box["role"] == "inbox" for box in answered["list"])

        body = await asyncio.wait_for(query, 60)  # the budget ended it; nothing else would
        (error, after) = body["methodResponses"]
        assert error[0] == "error" and error[1]["type"] == "serverFail"
        assert "cache.max_transaction_seconds" in error[1]["description"]
        assert after[0] == "Mailbox/get"  # the next call of the request still ran
        assert store._reads.held(heavy.account_id) == 0
        monkeypatch.setattr(email_query, "_page", original)
        assert (await heavy.ok("Email/query", {}))["ids"] == []
    assert sys.getswitchinterval() == before


async def test_a_request_that_finds_nothing_new_upstream_takes_no_write_transaction(
    jmap: Jmap,
    proxy_http: TestClient[Any, Any],
    imap_oracle: imaplib.IMAP4,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer is one for every account: a refresh that finds the upstream as cached
    (the usual case) only reads, so cheap requests never queue for it; a change made by
    another client still reaches the next request (CORE-STATE-01: a new state)."""
    store: Store = proxy_http.server.app[views.SERVICES].store
    writes: list[str] = []
    original = Store.run

    async def counted(self: Store, fn: Any, *, account: str = "") -> Any:
        writes.append(account)
        return await original(self, fn, account=account)

    inbox = await _inbox(jmap)  # the first sync writes, of course
    monkeypatch.setattr(Store, "run", counted)
    before = (await jmap.ok("Email/query", {"filter": {"inMailbox": inbox}}))["queryState"]
    opened = await jmap.request(
        [
            ["Mailbox/get", {"accountId": jmap.account_id}, "m"],
            ["Email/query", {"accountId": jmap.account_id}, "q"],
        ]
    )
    assert [r[0] for r in opened["methodResponses"]] == ["Mailbox/get", "Email/query"]
    if advertises(imap_oracle, "CONDSTORE"):
        assert writes == []
    # else every refresh re-reads the flags and records them: the documented cost of such
    # servers (no cursor moves on a flag change)
    assert store._writes.held(jmap.account_id) == 0

    message = b"From: a@example.com\r\nSubject: new\r\n\r\nnew upstream\r\n"
    typ, data = imap_oracle.append("INBOX", "", imaplib.Time2Internaldate(0), message)
    assert typ == "OK", data
    after = await jmap.ok("Email/query", {"filter": {"inMailbox": inbox}})
    assert writes  # the sync recorded the new message
    assert after["queryState"] != before and len(after["ids"]) == 1


async def _inbox(jmap: Jmap) -> str:
    boxes = await jmap.ok("Mailbox/get", {"properties": ["role"]})
    return str(next(box["id"] for box in boxes["list"] if box["role"] == "inbox"))
