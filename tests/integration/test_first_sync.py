"""The first request of a first sync (sync/engine.py, sync/emails.py): what it asks the
upstream, and what runs beside it, on a real Dovecot.

The request waits for the newest batch of every mailbox; the rest of a big mailbox fills in
behind it.  What the request pays beyond that batch is what these tests pin down: the
biggest mailbox is opened once, and the fill starts only once the request's own IMAP work is
done.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from devservers.dovecot import DovecotServer
from imapjmap.http import views
from imapjmap.imap.session import ImapSession, SelectInfo
from imapjmap.sync import emails as se
from imapjmap.sync import engine
from tests.conftest import SeededUser
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of


async def wait_filled(http: TestClient[Any, Any], account_id: str) -> None:
    """Until no first sync fills in on any instance (whichever one ran it)."""
    for app in apps_of(http):
        await app[views.SERVICES].sync_for(account_id).wait_filled()


async def test_first_request_opens_the_anchor_once(
    dovecot: DovecotServer,
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """The mailbox the refresh keeps selected (INBOX) is examined once, before the listing,
    and stays selected on its connection while the other mailboxes are synced on another, so
    the request does not open it a second time (on Dovecot each open of a 100,000-message
    Maildir costs 100 ms or more, seconds at a million).  MBX-04: the counts are those of
    the upstream."""
    monkeypatch.setattr(se, "BATCH", 3)  # INBOX takes a first batch and a fill
    opened: list[tuple[asyncio.Task[Any] | None, str, int]] = []  # task, mailbox, connection
    real_select = ImapSession.select

    async def select(self: ImapSession, name: str, *args: Any, **kw: Any) -> SelectInfo:
        opened.append((asyncio.current_task(), name, id(self)))
        return await real_select(self, name, *args, **kw)

    monkeypatch.setattr(ImapSession, "select", select)
    async with proxy_client(proxy_config(seeded_user, tmp_path)) as http:
        jmap = Jmap(http, seeded_user.username, seeded_user.password)
        await jmap.session()
        await jmap.ok("Mailbox/get", {"ids": None})
        first_request = list(opened)
        await wait_filled(http, jmap.account_id)
        boxes = (await jmap.ok("Mailbox/get", {"ids": None}))["list"]

    refresh = first_request[0][0]  # the fills select in tasks of their own
    mine = [(name, conn) for task, name, conn in first_request if task is refresh]
    names = [name for name, _ in mine]
    assert names.count("INBOX") == 1, names
    assert len(set(names)) == len(names), names
    # kept selected for the next refresh: its connection selected nothing else
    keeper = next(conn for name, conn in mine if name == "INBOX")
    assert [name for name, conn in mine if conn == keeper] == ["INBOX"], names
    totals = {b["name"]: b["totalEmails"] for b in boxes if b["name"] in ("Inbox", "INBOX")}
    assert list(totals.values()) == [seeded_user.counts["INBOX"]], totals


async def test_fill_waits_for_the_first_request(
    dovecot: DovecotServer,
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """No FETCH of the fill goes out while the refresh that started it is still working:
    the fill's connection, FETCH and parsing would make the request wait for a core.  The
    refresh's last step is held up here long enough for a fill that did not wait to start."""
    monkeypatch.setattr(se, "BATCH", 3)
    fetched_during_refresh: list[bool] = []
    refreshing = asyncio.Event()
    real_unparsed = ImapSession.execute_unparsed
    real_refresh = engine.AccountSync._refresh
    real_settle = engine.AccountSync._settle

    async def execute_unparsed(self: ImapSession, *args: Any, **kw: Any) -> Any:
        fetched_during_refresh.append(refreshing.is_set())
        return await real_unparsed(self, *args, **kw)

    async def refresh(self: engine.AccountSync, *args: Any) -> None:
        refreshing.set()
        try:
            await real_refresh(self, *args)
        finally:
            refreshing.clear()

    async def settle(self: engine.AccountSync, *args: Any) -> None:
        await asyncio.sleep(0.5)
        await real_settle(self, *args)

    monkeypatch.setattr(ImapSession, "execute_unparsed", execute_unparsed)
    monkeypatch.setattr(engine.AccountSync, "_refresh", refresh)
    monkeypatch.setattr(engine.AccountSync, "_settle", settle)
    async with proxy_client(proxy_config(seeded_user, tmp_path)) as http:
        jmap = Jmap(http, seeded_user.username, seeded_user.password)
        await jmap.session()
        await jmap.ok("Mailbox/get", {"ids": None})
        await wait_filled(http, jmap.account_id)
        ids = (await jmap.ok("Email/query", {}))["ids"]

    assert fetched_during_refresh, "no mailbox was big enough for a fill"
    assert not any(fetched_during_refresh)
    assert len(ids) == sum(seeded_user.counts.values())


@pytest.mark.one_instance(
    "the anchor is kept selected on one instance's own IMAP connection: the other"
    " instance's first refresh, during the fill, has no mailbox selected yet"
)
async def test_a_refresh_during_a_fill_lists_with_the_anchor_selected(
    dovecot: DovecotServer,
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """While INBOX fills in, a request's refresh still sends its LIST-STATUS on a connection
    that holds INBOX selected (Rule 5 of sync/engine.py): the fill takes a connection of its
    own instead of the one that keeps the anchor.  A LIST-STATUS from a connection without
    INBOX selected makes Dovecot open it to answer its STATUS, which at a million messages
    took 11-15 s for every request during the whole fill.  MBX-04: the counts are the
    upstream's once the fill is done."""
    monkeypatch.setattr(se, "BATCH", 3)  # INBOX takes a first batch and a fill
    filling, release = asyncio.Event(), asyncio.Event()
    real_fill = se.MailboxSync.fill
    listed_with: list[str | None] = []  # the mailbox selected where each LIST went out
    real_list = ImapSession.list_mailboxes

    async def fill(self: se.MailboxSync, *args: Any, **kw: Any) -> None:
        if self.mailbox.imap_name == "INBOX":
            filling.set()
            await release.wait()  # the fill holds its connection meanwhile
        await real_fill(self, *args, **kw)

    async def list_mailboxes(self: ImapSession, *args: Any, **kw: Any) -> Any:
        if filling.is_set() and not release.is_set():
            listed_with.append(self.selected.name if self.selected is not None else None)
        return await real_list(self, *args, **kw)

    monkeypatch.setattr(se.MailboxSync, "fill", fill)
    monkeypatch.setattr(ImapSession, "list_mailboxes", list_mailboxes)
    async with proxy_client(proxy_config(seeded_user, tmp_path)) as http:
        jmap = Jmap(http, seeded_user.username, seeded_user.password)
        await jmap.session()
        await jmap.ok("Mailbox/get", {"ids": None})
        await asyncio.wait_for(filling.wait(), 30)
        await jmap.ok("Mailbox/get", {"ids": None})  # refreshes: a fill is not complete
        release.set()
        await wait_filled(http, jmap.account_id)
        boxes = (await jmap.ok("Mailbox/get", {"ids": None}))["list"]

    assert listed_with == ["INBOX"]
    totals = {b["name"]: b["totalEmails"] for b in boxes if b["name"] in ("Inbox", "INBOX")}
    assert list(totals.values()) == [seeded_user.counts["INBOX"]], totals
