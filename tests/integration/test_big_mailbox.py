"""What the proxy asks of Dovecot about a big INBOX (sync/engine.py Rules 5 and 8,
sync/emails.py), counted at a small size on a real Dovecot.

Dovecot opens a mailbox to answer its STATUS, its EXAMINE and a UID SEARCH of every
message: at a million messages each took it seconds (``bench/million.py``), where the
STATUS of the mailbox a connection has selected is answered from that view in
milliseconds.  These tests pin down that a first request, a push refresh and a refresh
after a change in two mailboxes open INBOX no more than once and never list every UID of
it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devservers.dovecot import DovecotServer
from imapjmap.http import views
from imapjmap.http.app import make_app
from imapjmap.imap.commands import Command
from imapjmap.imap.session import ImapSession
from imapjmap.sync import emails as se
from tests.conftest import SeededUser
from tests.integration.conftest import Jmap, proxy_config


class Sent:
    """Every command the proxy sends: (task, connection, mailbox selected, text)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[tuple[asyncio.Task[Any] | None, int, str | None, str]] = []
        real = ImapSession._run

        async def run(session: ImapSession, command: Command, what: str, *args: Any) -> Any:
            selected = session.selected.name if session.selected is not None else None
            text = command.parts[0]
            self.commands.append((asyncio.current_task(), id(session), selected, text))
            return await real(session, command, what, *args)

        monkeypatch.setattr(ImapSession, "_run", run)

    def of(self, task: asyncio.Task[Any] | None) -> Iterator[tuple[int, str | None, str]]:
        return ((conn, box, text) for t, conn, box, text in self.commands if t is task)


def opens_of_inbox(commands: list[tuple[int, str | None, str]]) -> list[str]:
    """The commands for which Dovecot opens INBOX: its EXAMINE or SELECT, a STATUS of it
    (alone or in a LIST-STATUS) from a connection that has it not selected."""
    opened = []
    for _, selected, text in commands:
        verb = text.split(" ", 1)[0].upper()
        selects = verb in ("EXAMINE", "SELECT") and text.split(" ")[1].strip('"') == "INBOX"
        status = (verb == "STATUS" and "INBOX" in text and "MESSAGES" in text) or (
            verb == "LIST" and "STATUS (" in text
        )
        if selects or (status and selected != "INBOX"):
            opened.append(text)
    return opened


async def test_first_request_opens_inbox_once_and_lists_no_uid_of_it(
    dovecot: DovecotServer,
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first request's refresh examines INBOX before its LIST-STATUS (whose STATUS of
    INBOX then comes from that view) and syncs it there without examining it again; the
    newest batch is found by message number, and the UIDs below it are searched by the
    fill, on a connection of its own.  Before, Dovecot opened INBOX for the LIST-STATUS,
    again for the EXAMINE, and listed every UID of it (34 s at a million messages).
    MBX-04: the counts are the upstream's once the fill is done."""
    monkeypatch.setattr(se, "BATCH", 3)  # INBOX (15 messages) takes a first batch and a fill
    sent = Sent(monkeypatch)
    async with TestClient(TestServer(make_app(proxy_config(seeded_user, tmp_path)))) as http:
        jmap = Jmap(http, seeded_user.username, seeded_user.password)
        await jmap.session()
        sent.commands.clear()
        await jmap.ok("Mailbox/get", {"ids": None})
        refresh = sent.commands[0][0]
        first = list(sent.of(refresh))
        await http.server.app[views.SERVICES].sync_for(jmap.account_id).wait_filled()
        boxes = (await jmap.ok("Mailbox/get", {"ids": None}))["list"]

    assert opens_of_inbox(first) == ["EXAMINE INBOX"], first
    in_inbox = [text for _, box, text in first if box == "INBOX"]
    searches = [t for t in in_inbox if t.startswith("UID SEARCH")]
    assert searches == ["UID SEARCH RETURN (ALL) 13:*"], in_inbox  # the newest 3 of 15
    fills = [text for task, _, box, text in sent.commands if task is not refresh and box == "INBOX"]
    assert "UID SEARCH RETURN (ALL) UID 1:12" in fills, fills
    totals = {b["name"]: b["totalEmails"] for b in boxes if b["name"] in ("Inbox", "INBOX")}
    assert list(totals.values()) == [seeded_user.counts["INBOX"]], totals


async def test_a_move_out_of_inbox_is_synced_without_reopening_inbox(
    dovecot: DovecotServer,
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another client moves a message from INBOX to Archive: the refresh syncs Archive on a
    spare connection and INBOX on the one that keeps it examined, which selects nothing
    else (sync/engine.py Rule 8).  Before, Archive was examined on that connection and
    INBOX opened again after it (8-9 s for Dovecot at a million messages).  The Email keeps
    its id and now lies in Archive alone (docs/design.md, "Ids")."""
    sent = Sent(monkeypatch)
    async with TestClient(TestServer(make_app(proxy_config(seeded_user, tmp_path)))) as http:
        jmap = Jmap(http, seeded_user.username, seeded_user.password)
        await jmap.session()
        boxes = {b["name"]: b["id"] for b in (await jmap.ok("Mailbox/get", {"ids": None}))["list"]}
        inbox = next(v for k, v in boxes.items() if k in ("Inbox", "INBOX"))
        await http.server.app[views.SERVICES].sync_for(jmap.account_id).wait_filled()
        newest = {"property": "receivedAt", "isAscending": False}
        query = {"filter": {"inMailbox": inbox}, "sort": [newest], "limit": 1}
        (moved,) = (await jmap.ok("Email/query", query))["ids"]
        oracle = seeded_user.connect()
        try:
            oracle.select("INBOX")
            _, data = oracle.uid("SEARCH", "ALL")
            newest_uid = data[0].split()[-1].decode()
            assert oracle.uid("MOVE", newest_uid, "Archive")[0] == "OK"
        finally:
            oracle.logout()
        sent.commands.clear()
        await jmap.ok("Mailbox/get", {"ids": None})
        refresh = sent.commands[0][0]
        commands = list(sent.of(refresh))
        got = await jmap.ok("Email/get", {"ids": [moved], "properties": ["mailboxIds"]})

    assert opens_of_inbox(commands) == [], commands
    keeper = next(conn for conn, _, text in commands if text.startswith("LIST"))
    elsewhere = [text for conn, _, text in commands if conn != keeper]
    assert any(text.startswith("EXAMINE Archive") for text in elsewhere), commands
    assert [text for conn, _, text in commands if conn == keeper and "EXAMINE" in text] == []
    assert got["list"][0]["mailboxIds"] == {boxes["Archive"]: True}
