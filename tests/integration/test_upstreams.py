"""What each kind of upstream shows that the others cannot (README "Upstream servers").

The backend-independent tests already run against Dovecot, Cyrus and a Dovecot without
extensions (``imap_backend`` in tests/conftest.py).  Here:

* Cyrus (RFC 8474 OBJECTID): our Mailbox, Email and Thread ids ARE its MAILBOXID, EMAILID
  and THREADID — the strings Cyrus's own JMAP uses — and they survive COPY, MOVE (RFC 8474
  §5.1) and a rename; the oracle reads them with STATUS and FETCH.
* Cyrus has no NOTIFY: push comes from the watcher's IDLE on INBOX.
* Every backend: the profile its login chooses from its CAPABILITY and ID answer; a server
  with neither NOTIFY nor IDLE is polled.
* Every backend: the IMAP commands a request costs when nothing changed upstream, as the
  README documents them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.config import ImapConfig, PushConfig
from imapjmap.http import views
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from imapjmap.upstream.profiles import choose
from tests.conftest import ImapServer, ImapUser, advertises, dovecot_root
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of
from tests.integration.pushkit import external_append, open_events, wait_for, watcher_of


def message(subject: str, msgid: str, reply_to: str | None = None) -> bytes:
    head = (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{msgid}>\r\n"
    )
    if reply_to:
        head += f"In-Reply-To: <{reply_to}>\r\nReferences: <{reply_to}>\r\n"
    return (head + "\r\nHello\r\n").encode()


@pytest.fixture
def cyrus_user(cyrus: CyrusServer) -> ImapUser:
    username, password = f"objectid-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    cyrus.add_user(username, password)
    return ImapUser(username, password, cyrus.host, cyrus.port)


@pytest.fixture
async def cyrus_jmap(
    cyrus_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    async with proxy_client(proxy_config(cyrus_user, tmp_path)) as http:
        client = Jmap(http, cyrus_user.username, cyrus_user.password)
        await client.session()
        yield client


def mailbox_ids(oracle: imaplib.IMAP4) -> dict[str, str]:
    """IMAP name → MAILBOXID, each asked on its own (see devservers.cyrus on why)."""
    typ, data = oracle.list('""', "*")
    assert typ == "OK", data
    out = {}
    for line in data:
        assert isinstance(line, bytes)
        name = line.decode().rsplit(" ", 1)[1].strip('"')
        typ, status = oracle.status(f'"{name}"', "(MAILBOXID)")
        assert typ == "OK", status
        found = re.search(rb"MAILBOXID \(([^)]+)\)", status[0] or b"")
        assert found, status
        out[name] = found.group(1).decode()
    return out


def object_ids(oracle: imaplib.IMAP4, mailbox: str) -> dict[str, tuple[str, str]]:
    """Subject → (EMAILID, THREADID) of each message in ``mailbox``."""
    typ, _ = oracle.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK"
    typ, data = oracle.uid("FETCH", "1:*", "(EMAILID THREADID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head = item[0].decode()
        email_id = re.search(r"EMAILID \(([^)]+)\)", head)
        thread_id = re.search(r"THREADID \(([^)]+)\)", head)
        assert email_id and thread_id, head  # conversations: yes, so never THREADID NIL
        subject = item[1].decode().split(":", 1)[1].strip()
        out[subject] = (email_id.group(1), thread_id.group(1))
    oracle.unselect()
    return out


async def jmap_view(jmap: Jmap) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Mailbox name → id, and subject → {id, threadId, mailboxIds} through the proxy."""
    boxes = await jmap.ok("Mailbox/get", {"properties": ["name", "parentId"]})
    names = {m["id"]: m["name"] for m in boxes["list"]}
    ids = (await jmap.ok("Email/query", {}))["ids"]
    got = await jmap.ok(
        "Email/get", {"ids": ids, "properties": ["subject", "threadId", "mailboxIds"]}
    )
    emails = {e["subject"]: e for e in got["list"]}
    return {name: box_id for box_id, name in names.items()}, emails


async def test_objectid_ids_are_the_servers_own(cyrus_jmap: Jmap, cyrus_user: ImapUser) -> None:
    oracle = cyrus_user.connect()
    try:
        assert advertises(oracle, "OBJECTID")
        assert oracle.create("Projects")[0] == "OK"
        for subject, msgid, parent in (
            ("plan", "plan@example.org", None),
            ("Re: plan", "reply@example.org", "plan@example.org"),
            ("alone", "alone@example.org", None),
        ):
            typ, data = oracle.append("INBOX", None, None, message(subject, msgid, parent))
            assert typ == "OK", data

        boxes, emails = await jmap_view(cyrus_jmap)
        upstream = mailbox_ids(oracle)
        # Cyrus names INBOX "INBOX"; JMAP calls it "Inbox" (RFC 8621 §2)
        assert boxes["Inbox"] == upstream["INBOX"]
        for name in ("Drafts", "Sent", "Trash", "Junk", "Archive", "Projects"):
            assert boxes[name] == upstream[name], name
        server = object_ids(oracle, "INBOX")
        assert set(server) == set(emails) == {"plan", "Re: plan", "alone"}
        for subject, (email_id, thread_id) in server.items():
            assert emails[subject]["id"] == email_id, subject
            assert emails[subject]["threadId"] == thread_id, subject
        assert emails["plan"]["threadId"] == emails["Re: plan"]["threadId"]
        assert emails["alone"]["threadId"] != emails["plan"]["threadId"]

        # RFC 8474 §5.1: COPY and MOVE keep EMAILID, so the ids do not move either
        oracle.select("INBOX")
        typ, data = oracle.uid("SEARCH", "SUBJECT", '"alone"')
        assert typ == "OK" and data[0], data
        alone_uid = data[0].decode().split()[0]
        typ, data = oracle.uid("SEARCH", "HEADER", "Message-ID", '"<reply@example.org>"')
        assert typ == "OK" and data[0], data
        reply_uid = data[0].decode().split()[0]
        assert oracle.uid("COPY", alone_uid, "Archive")[0] == "OK"
        assert oracle.uid("MOVE", reply_uid, "Projects")[0] == "OK"
        oracle.unselect()
        assert oracle.rename("Projects", "Work")[0] == "OK"

        after_boxes, after = await jmap_view(cyrus_jmap)
        assert {s: e["id"] for s, e in after.items()} == {s: e["id"] for s, e in emails.items()}
        assert after["alone"]["mailboxIds"] == {boxes["Inbox"]: True, boxes["Archive"]: True}
        assert after["Re: plan"]["mailboxIds"] == {boxes["Projects"]: True}
        assert after_boxes["Work"] == boxes["Projects"]  # MAILBOXID survives a rename
        assert object_ids(oracle, "Archive")["alone"][0] == emails["alone"]["id"]
        assert object_ids(oracle, "Work")["Re: plan"] == server["Re: plan"]
    finally:
        oracle.logout()


async def test_push_without_notify_comes_from_idle(cyrus_jmap: Jmap, cyrus_user: ImapUser) -> None:
    """Cyrus has no NOTIFY: the watcher IDLEs on INBOX (idled makes that immediate)."""
    oracle = cyrus_user.connect()
    try:
        assert not advertises(oracle, "NOTIFY")
        events = await open_events(cyrus_jmap)
        await events.next()  # the current states

        def idling() -> bool:
            watcher = watcher_of(cyrus_jmap)
            return watcher is not None and watcher.mode == "idle"

        await wait_for(idling, what="the IDLE watcher")
        await asyncio.sleep(0.2)  # IDLE issued
        started = asyncio.get_running_loop().time()
        await external_append(oracle, "arrives by idle")
        changed: dict[str, str] = {}
        while "Email" not in changed:
            event = await events.next(timeout=10)
            changed.update(event.data["changed"][cyrus_jmap.account_id])
        assert asyncio.get_running_loop().time() - started < 5  # not the 60 s poll
        assert (await jmap_view(cyrus_jmap))[1].keys() == {"arrives by idle"}
        events.resp.close()
    finally:
        oracle.logout()


async def test_push_from_another_mailbox_without_notify_core_push_01(
    cyrus_jmap: Jmap, cyrus_user: ImapUser
) -> None:
    """Outside INBOX, IDLE sees nothing: the watcher compares a LIST-STATUS every
    ``push.status_interval`` seconds (2 by default), so an APPEND to another mailbox is
    pushed within 3 s, not at the next ``push.poll_interval`` (60 s)."""
    oracle = cyrus_user.connect()
    try:
        assert oracle.create("Projects")[0] == "OK"
        boxes = {m["name"]: m for m in (await cyrus_jmap.ok("Mailbox/get", {"ids": None}))["list"]}
        events = await open_events(cyrus_jmap)
        await events.next()  # the current states

        def idling() -> bool:
            watcher = watcher_of(cyrus_jmap)
            return watcher is not None and watcher.mode == "idle"

        await wait_for(idling, what="the IDLE watcher")
        await asyncio.sleep(0.2)  # its first LIST-STATUS taken
        for subject in ("first elsewhere", "second elsewhere"):
            started = asyncio.get_running_loop().time()
            await external_append(oracle, subject, "Projects")
            changed: dict[str, str] = {}
            while "Email" not in changed:
                event = await events.next(timeout=10)
                changed.update(event.data["changed"][cyrus_jmap.account_id])
            assert asyncio.get_running_loop().time() - started < 3, subject
        projects = boxes["Projects"]["id"]
        got = await cyrus_jmap.ok("Email/query", {"filter": {"inMailbox": projects}})
        assert len(got["ids"]) == 2
        events.resp.close()
    finally:
        oracle.logout()


async def test_a_change_made_before_the_watcher_started_is_pushed_core_push_01(
    cyrus_jmap: Jmap, cyrus_user: ImapUser
) -> None:
    """The first ``state`` event comes from the cache, which may be behind the server: the
    watcher refreshes once as it starts, so what changed before it listened is pushed too
    (its first LIST-STATUS alone would take that state as the baseline)."""
    oracle = cyrus_user.connect()
    try:
        assert oracle.create("Projects")[0] == "OK"
        await cyrus_jmap.ok("Mailbox/get", {"ids": None})
        await external_append(oracle, "before the stream", "Projects")
        events = await open_events(cyrus_jmap)
        first = (await events.next()).data["changed"][cyrus_jmap.account_id]
        changed: dict[str, str] = {}
        while changed.get("Email", first["Email"]) == first["Email"]:
            event = await events.next(timeout=3)
            changed.update(event.data["changed"][cyrus_jmap.account_id])
        got = await cyrus_jmap.ok("Email/query", {})
        assert len(got["ids"]) == 1
        events.resp.close()
    finally:
        oracle.logout()


async def test_an_unchanged_list_status_refreshes_nothing(
    cyrus_user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """The comparison costs the upstream one LIST-STATUS and nothing else while nothing
    moves: no refresh (no SELECT, no store write) and no push."""
    cfg = proxy_config(cyrus_user, tmp_path)
    cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, status_interval=0.1))
    async with proxy_client(cfg) as http:
        client = Jmap(http, cyrus_user.username, cyrus_user.password)
        await client.session()
        await client.ok("Mailbox/get", {"ids": None})  # the first sync, before listening
        events = await open_events(client)
        await events.next()  # the current states
        await wait_for(lambda: watcher_of(client), what="the watcher")
        watcher = watcher_of(client)
        await wait_for(lambda: watcher.lists >= 2, what="a comparison")
        # every instance's refreshes: only the watcher's would, and it must not
        syncs = [app[views.SERVICES].sync_for(client.account_id) for app in apps_of(http)]
        refreshes, lists = [sync.refreshes for sync in syncs], watcher.lists
        await wait_for(lambda: watcher.lists >= lists + 5, what="five more comparisons")
        assert [sync.refreshes for sync in syncs] == refreshes
        assert await events.none_within(0.2)
        events.resp.close()


async def test_cost_of_a_request_when_nothing_changed(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's numbers for a request when nothing changed upstream: ONE command with
    LIST-STATUS and CONDSTORE (Dovecot, Cyrus: rights come with the LIST, RFC 8440).
    Without LIST-STATUS, one STATUS per mailbox; without CONDSTORE no cursor moves on a flag
    change, so every mailbox is opened again, and each non-empty one's flags fetched (UID
    FETCH FLAGS) and its UIDs listed (UID SEARCH) to see expunges."""
    for mailbox in ("INBOX", "Archive"):
        for n in range(2):
            raw = message(f"{mailbox} {n}", f"{mailbox}.{n}.{secrets.token_hex(4)}@example.org")
            assert imap_oracle.append(mailbox, None, None, raw)[0] == "OK"
    mailboxes = len((await jmap.ok("Mailbox/get", {"ids": None}))["list"])  # first sync
    for _ in apps_of(jmap.http):  # and each instance's first request for the login
        await jmap.ok("Mailbox/get", {"ids": []})
    caplog.set_level(logging.DEBUG, logger="imapjmap.imap.session")
    caplog.clear()
    await jmap.ok("Email/query", {})
    sent = [
        r.getMessage().split(" > ", 1)[1].split(" ", 2)[1]
        for r in caplog.records
        if r.name == "imapjmap.imap.session" and " > " in r.getMessage()
    ]
    list_status = advertises(imap_oracle, "LIST-STATUS")
    condstore = advertises(imap_oracle, "CONDSTORE")
    if list_status and condstore:
        assert sent == ["LIST"]
        return
    assert sent.count("LIST") == 1, sent
    assert sent.count("STATUS") == (0 if list_status else mailboxes), sent
    if not condstore:
        assert sent.count("SELECT") + sent.count("EXAMINE") == mailboxes, sent
        assert sent.count("UID") == 2 * 2, sent  # the two non-empty mailboxes
        assert sent.count("UNSELECT") <= 1, sent


async def test_a_change_in_the_largest_mailbox_costs_no_reopening(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, caplog: pytest.LogCaptureFixture
) -> None:
    """Dovecot (engine Rule 5): the refresh keeps the largest mailbox selected, so another
    client's new message and flag change there cost a LIST with a NOOP behind it and a
    FETCH CHANGEDSINCE ... VANISHED on the open mailbox (RFC 7162 §3.2.6), never a SELECT
    of it (100+ ms for a big Maildir).  Every upstream: the changes are seen at once
    (EML-CHG-01)."""
    for n in range(3):
        raw = message(f"big {n}", f"big.{n}.{secrets.token_hex(4)}@example.org")
        assert imap_oracle.append("INBOX", None, None, raw)[0] == "OK"
    await jmap.ok("Mailbox/get", {"ids": None})  # first sync; INBOX is the largest
    state = (await jmap.ok("Email/get", {"ids": []}))["state"]
    new_id = f"new.{secrets.token_hex(4)}@example.org"
    assert imap_oracle.append("INBOX", None, None, message("new", new_id))[0] == "OK"
    assert imap_oracle.select("INBOX")[0] == "OK"
    assert imap_oracle.uid("STORE", "1", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert imap_oracle.close()[0] == "OK"
    caplog.set_level(logging.DEBUG, logger="imapjmap.imap.session")
    caplog.clear()
    changes = await jmap.ok("Email/changes", {"sinceState": state})
    sent = [
        r.getMessage().split(" > ", 1)[1]
        for r in caplog.records
        if r.name == "imapjmap.imap.session" and " > " in r.getMessage()
    ]
    assert len(changes["created"]) == 1 and len(changes["updated"]) == 1, changes
    got = await jmap.ok(
        "Email/get",
        {"ids": changes["created"] + changes["updated"], "properties": ["keywords", "messageId"]},
    )
    by_id = {e["id"]: e for e in got["list"]}
    assert by_id[changes["created"][0]]["messageId"] == [new_id]
    assert by_id[changes["updated"][0]]["keywords"].get("$flagged") is True
    dovecot = advertises(imap_oracle, "NOTIFY")  # of our upstreams, only Dovecot has it
    if dovecot and advertises(imap_oracle, "QRESYNC") and advertises(imap_oracle, "LIST-STATUS"):
        verbs = [line.split(" ", 2)[1] for line in sent]
        assert "SELECT" not in verbs and "EXAMINE" not in verbs, sent
        assert "NOOP" in sent[0] and verbs[0] == "LIST", sent
        assert any("CHANGEDSINCE" in line and "VANISHED" in line for line in sent), sent


async def test_the_login_chooses_the_servers_profile(
    imap_backend: ImapServer, imap_user: ImapUser
) -> None:
    """The profile comes from the real server's CAPABILITY and ID answer, and the pool
    that adopts the login carries it (docs/design.md, "Servers")."""
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none")
    session = await ImapSession.connect(cfg, imap_user.username, imap_user.password)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    try:
        profile = session.profile
        assert profile == choose(session.capabilities, session.server_id, cfg)
        pool.adopt(session)
        assert pool.profile is profile
    finally:
        await pool.aclose()
    if isinstance(imap_backend, CyrusServer):
        assert session.server_id["name"] == "Cyrus IMAPD"
        assert (profile.kind, profile.message_items, profile.mailbox_id_item) == (
            "cyrus",
            ("EMAILID", "THREADID"),
            "MAILBOXID",
        )
        assert (profile.push, profile.push_lists, profile.anchor) == ("idle", True, False)
        return
    assert session.server_id == {"name": "Dovecot"}
    assert (profile.kind, profile.message_items, profile.mailbox_id_item) == (
        "dovecot",
        ("X-GUID",),
        "X-GUID",
    )
    assert profile.push == "notify" and not profile.labels
    # the anchor needs LIST-STATUS, which the minimal Dovecot does not offer
    assert profile.anchor is ("LIST-STATUS" in session.capabilities)


@pytest.fixture(scope="module")
def silent_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot that advertises neither NOTIFY nor IDLE."""
    ensure_dovecot_installed()
    with dovecot_root("dovecot-silent") as root:
        server = DovecotServer.start(root, remove_capabilities=("NOTIFY", "IDLE"))
        yield server
        server.stop()


async def test_push_without_notify_or_idle_polls(
    silent_dovecot: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """The profile's "poll" strategy: with neither NOTIFY nor IDLE the watcher refreshes
    every ``push.poll_interval`` seconds, and an APPEND by another client is pushed."""
    user = ImapUser(f"poll-{secrets.token_hex(4)}", "pw", silent_dovecot.host, silent_dovecot.port)
    silent_dovecot.add_user(user.username, user.password)
    cfg = dataclasses.replace(proxy_config(user, tmp_path), push=PushConfig(poll_interval=0.5))
    async with proxy_client(cfg) as http:
        jmap = Jmap(http, user.username, user.password)
        await jmap.session()
        events = await open_events(jmap)
        await events.next()  # the current states

        def polling() -> bool:
            watcher = watcher_of(jmap)
            return watcher is not None and watcher.mode == "poll"

        await wait_for(polling, what="the polling watcher")
        oracle = user.connect()
        try:
            await external_append(oracle, "arrives by polling")
        finally:
            oracle.logout()
        changed: dict[str, str] = {}
        while "Email" not in changed:
            event = await events.next(timeout=10)
            changed.update(event.data["changed"][jmap.account_id])
        assert (await jmap_view(jmap))[1].keys() == {"arrives by polling"}
        events.resp.close()
