"""The sync engine against the real Dovecot: changes made by another IMAP client show up
through Email/changes, Email/query and Mailbox counts; ids survive MOVE and COPY; replies
share threads; ``\\Deleted`` hides.  Run on every sync path: QRESYNC, CONDSTORE only, and a
server with neither (the capabilities are removed from Dovecot's CAPABILITY); and on Cyrus,
where RFC 8474 OBJECTID gives the ids (MAILBOXID, EMAILID, THREADID)."""

from __future__ import annotations

import imaplib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer
from imapjmap.sync import emails as se
from tests.conftest import dovecot_root
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient

_counter = itertools.count()

PATHS = {
    "qresync": (),
    "condstore": ("QRESYNC",),
    "plain": ("QRESYNC", "CONDSTORE"),
}
Server = DovecotServer | CyrusServer


@pytest.fixture(scope="module", params=[*PATHS, "cyrus"])
def sync_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "cyrus":
        yield request.getfixturevalue("cyrus")  # the session's Cyrus (tests/conftest.py)
        return
    with dovecot_root() as root:
        server = DovecotServer.start(root, remove_capabilities=PATHS[request.param])
        yield server
        server.stop()


class User:
    def __init__(self, server: Server) -> None:
        self.username = f"sync{next(_counter)}"
        self.password = "pw-" + self.username
        self.host, self.port = server.host, server.port
        server.add_user(self.username, self.password)


@pytest.fixture
async def client(
    sync_server: Server, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    user = User(sync_server)
    async with proxy_client(proxy_config(user, tmp_path)) as http:
        jmap = Jmap(http, user.username, user.password)
        await jmap.session()
        yield jmap


@pytest.fixture
def oracle(client: Jmap, sync_server: Server) -> Iterator[imaplib.IMAP4]:
    conn = imaplib.IMAP4(sync_server.host, sync_server.port)
    conn.login(client.username, client.password)
    yield conn
    conn.logout()


def message(subject: str, msgid: str, reply_to: str | None = None) -> bytes:
    head = (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{msgid}>\r\n"
    )
    if reply_to:
        head += f"In-Reply-To: <{reply_to}>\r\nReferences: <{reply_to}>\r\n"
    return (head + "\r\nHello\r\n").encode()


def append(oracle: imaplib.IMAP4, mailbox: str, raw: bytes, flags: str | None = None) -> int:
    typ, data = oracle.append(mailbox, flags, None, raw)
    assert typ == "OK", data
    text = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
    return int(text.split("APPENDUID ")[1].split()[1].rstrip("]"))


async def mailbox_ids(jmap: Jmap) -> dict[str, str]:
    got = await jmap.ok("Mailbox/get", {"properties": ["name"]})
    return {m["name"]: m["id"] for m in got["list"]}


async def email_state(jmap: Jmap) -> str:
    state: str = (await jmap.ok("Email/get", {"ids": []}))["state"]
    return state


async def query(jmap: Jmap, mailbox: str) -> list[str]:
    ids: list[str] = (
        await jmap.ok(
            "Email/query", {"filter": {"inMailbox": mailbox}, "sort": [{"property": "receivedAt"}]}
        )
    )["ids"]
    return ids


async def by_subject(jmap: Jmap, mailbox: str) -> dict[str, str]:
    """subject → email id (messages appended in one second share receivedAt)."""
    ids = await query(jmap, mailbox)
    got = await jmap.ok("Email/get", {"ids": ids, "properties": ["subject"]})
    return {e["subject"]: e["id"] for e in got["list"]}


async def get(jmap: Jmap, email_id: str) -> dict[str, Any]:
    got = await jmap.ok(
        "Email/get",
        {
            "ids": [email_id],
            "properties": ["mailboxIds", "keywords", "threadId", "subject", "size", "receivedAt"],
        },
    )
    assert got["notFound"] == [], got
    result: dict[str, Any] = got["list"][0]
    return result


async def test_external_append_flag_expunge(client: Jmap, oracle: imaplib.IMAP4) -> None:
    boxes = await mailbox_ids(client)
    inbox = boxes["Inbox"]
    state = await email_state(client)
    append(oracle, "INBOX", message("first", "m1@x"))
    append(oracle, "INBOX", message("second", "m2@x"), "(\\Seen)")
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert len(changes["created"]) == 2 and not changes["updated"]
    subjects = await by_subject(client, inbox)
    first, second = subjects["first"], subjects["second"]
    assert (await get(client, second))["keywords"] == {"$seen": True}
    mailbox = (await client.ok("Mailbox/get", {"ids": [inbox]}))["list"][0]
    assert (mailbox["totalEmails"], mailbox["unreadEmails"]) == (2, 1)

    state = changes["newState"]
    oracle.select("INBOX")
    oracle.uid("STORE", "1", "+FLAGS", "(\\Flagged $Forwarded)")
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert changes["updated"] == [first] and not changes["created"]
    assert (await get(client, first))["keywords"] == {"$flagged": True, "$forwarded": True}

    state = changes["newState"]
    oracle.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
    oracle.expunge()
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert changes["destroyed"] == [second]
    assert await query(client, inbox) == [first]


async def test_deleted_flag_hides_without_expunge_eml_kw_01(
    client: Jmap, oracle: imaplib.IMAP4
) -> None:
    inbox = (await mailbox_ids(client))["Inbox"]
    append(oracle, "INBOX", message("doomed", "d1@x"))
    (email_id,) = await query(client, inbox)
    state = await email_state(client)
    oracle.select("INBOX")
    oracle.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert changes["destroyed"] == [email_id]
    assert await query(client, inbox) == []
    mailbox = (await client.ok("Mailbox/get", {"ids": [inbox]}))["list"][0]
    assert mailbox["totalEmails"] == 0
    # another client takes the flag back: the same Email comes back
    oracle.uid("STORE", "1", "-FLAGS", "(\\Deleted)")
    assert await query(client, inbox) == [email_id]


async def test_move_and_copy_keep_the_email_id(client: Jmap, oracle: imaplib.IMAP4) -> None:
    boxes = await mailbox_ids(client)
    append(oracle, "INBOX", message("mover", "mv@x"))
    (email_id,) = await query(client, boxes["Inbox"])
    state = await email_state(client)
    oracle.select("INBOX")
    typ, _ = oracle.uid("MOVE", "1", "Archive")
    assert typ == "OK"
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert changes["updated"] == [email_id], changes
    assert not changes["created"] and not changes["destroyed"]
    assert (await get(client, email_id))["mailboxIds"] == {boxes["Archive"]: True}
    oracle.select("Archive")
    assert oracle.uid("COPY", "1", "Trash")[0] == "OK"
    assert (await get(client, email_id))["mailboxIds"] == {
        boxes["Archive"]: True,
        boxes["Trash"]: True,
    }


async def test_mailbox_rename_keeps_email_mailbox_ids(client: Jmap, oracle: imaplib.IMAP4) -> None:
    assert oracle.create("Projects")[0] == "OK"
    append(oracle, "Projects", message("plan", "p1@x"))
    box = (await mailbox_ids(client))["Projects"]
    (email_id,) = await query(client, box)
    assert oracle.rename("Projects", '"Old Projects"')[0] == "OK"  # imaplib does not quote
    assert (await mailbox_ids(client))["Old Projects"] == box
    assert (await get(client, email_id))["mailboxIds"] == {box: True}
    assert await query(client, box) == [email_id]


async def test_reply_shares_thread_thr_01(client: Jmap, oracle: imaplib.IMAP4) -> None:
    inbox = (await mailbox_ids(client))["Inbox"]
    append(oracle, "INBOX", message("Plans", "root@x"))
    append(oracle, "INBOX", message("Re: Plans", "reply@x", reply_to="root@x"))
    append(oracle, "INBOX", message("Unrelated", "other@x"))
    subjects = await by_subject(client, inbox)
    root, reply, other = subjects["Plans"], subjects["Re: Plans"], subjects["Unrelated"]
    thread = (await get(client, root))["threadId"]
    assert (await get(client, reply))["threadId"] == thread
    assert (await get(client, other))["threadId"] != thread
    threads = await client.ok("Thread/get", {"ids": [thread]})
    assert sorted(threads["list"][0]["emailIds"]) == sorted([root, reply])
    mailbox = (await client.ok("Mailbox/get", {"ids": [inbox]}))["list"][0]
    assert (mailbox["totalEmails"], mailbox["totalThreads"]) == (3, 2)


async def test_reply_arriving_before_its_parent_joins_later(
    client: Jmap, oracle: imaplib.IMAP4
) -> None:
    inbox = (await mailbox_ids(client))["Inbox"]
    append(oracle, "INBOX", message("Re: Late", "child@x", reply_to="parent@x"))
    (child,) = await query(client, inbox)
    append(oracle, "INBOX", message("Late", "parent@x"))
    subjects = await by_subject(client, inbox)
    assert subjects["Re: Late"] == child
    parent = subjects["Late"]
    assert (await get(client, parent))["threadId"] == (await get(client, child))["threadId"]


async def test_delete_and_recreate_mailbox_uidvalidity(client: Jmap, oracle: imaplib.IMAP4) -> None:
    assert oracle.create("Phoenix")[0] == "OK"
    append(oracle, "Phoenix", message("old", "old@x"))
    old_box = (await mailbox_ids(client))["Phoenix"]
    (old_email,) = await query(client, old_box)
    state = await email_state(client)
    assert oracle.delete("Phoenix")[0] == "OK"
    assert oracle.create("Phoenix")[0] == "OK"
    append(oracle, "Phoenix", message("new", "new@x"))
    new_box = (await mailbox_ids(client))["Phoenix"]
    assert new_box != old_box
    (new_email,) = await query(client, new_box)
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert changes["destroyed"] == [old_email]
    assert changes["created"] == [new_email]


# the path each server's INBOX takes once synced: Dovecot keeps INBOX selected between
# refreshes where it has QRESYNC (sync/engine.py Rule 5), Cyrus is selected again
SECOND_PATH = {
    "qresync": se.Path.QRESYNC_SELECTED,
    "condstore": se.Path.CHANGEDSINCE,
    "plain": se.Path.REFETCH,
    "cyrus": se.Path.QRESYNC,
}


async def test_each_server_takes_its_sync_path(
    client: Jmap, oracle: imaplib.IMAP4, request: pytest.FixtureRequest, monkeypatch: Any
) -> None:
    """The path a mailbox's changes are read by (``sync.emails.choose_path``) is the one
    its server's extensions allow, and the changes it reads all arrive: a new message, a
    flag change and an expunge together."""
    taken: list[tuple[str, se.Path]] = []
    choose = se.choose_path

    def spy(*args: Any, **kwargs: Any) -> se.Path:
        path = choose(*args, **kwargs)
        taken.append((args[2], path))
        return path

    monkeypatch.setattr(se, "choose_path", spy)
    append(oracle, "INBOX", message("one", "p1@x"))
    append(oracle, "INBOX", message("two", "p2@x"))
    inbox = (await mailbox_ids(client))["Inbox"]
    before = await by_subject(client, inbox)
    assert ("INBOX", se.Path.FULL) in taken
    state = await email_state(client)
    taken.clear()
    append(oracle, "INBOX", message("three", "p3@x"))
    oracle.select("INBOX")
    oracle.uid("STORE", "1", "+FLAGS", "(\\Seen)")
    oracle.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
    oracle.expunge()
    changes = await client.ok("Email/changes", {"sinceState": state})
    # without CONDSTORE every mailbox is read again on every refresh: INBOX's path counts
    expected = SECOND_PATH[request.node.callspec.params["sync_server"]]
    assert [path for name, path in taken if name == "INBOX"] == [expected]
    assert changes["updated"] == [before["one"]]
    assert changes["destroyed"] == [before["two"]]
    assert len(changes["created"]) == 1
    assert (await get(client, before["one"]))["keywords"] == {"$seen": True}


async def test_nothing_changed_means_no_new_state(client: Jmap, oracle: imaplib.IMAP4) -> None:
    append(oracle, "INBOX", message("still", "s@x"))
    state = await email_state(client)
    assert await email_state(client) == state
    changes = await client.ok("Email/changes", {"sinceState": state})
    assert changes["newState"] == state and changes["created"] == []


async def test_sender_and_reply_to_are_null_when_absent(
    client: Jmap, oracle: imaplib.IMAP4
) -> None:
    """ENVELOPE copies From into Sender and Reply-To when they are absent (RFC 3501
    §7.4.2); the cache must still say null (RFC 8621 §4.1.2.3)."""
    inbox = (await mailbox_ids(client))["Inbox"]
    append(oracle, "INBOX", message("plain", "plain@x"))
    raw = message("with", "with@x").replace(
        b"Subject:", b"Sender: Sec <sec@example.org>\r\nReply-To: r@example.org\r\nSubject:"
    )
    append(oracle, "INBOX", raw)
    subjects = await by_subject(client, inbox)
    got = await client.ok(
        "Email/get",
        {"ids": [subjects["plain"], subjects["with"]], "properties": ["sender", "replyTo", "from"]},
    )
    by_id = {e["id"]: e for e in got["list"]}
    assert by_id[subjects["plain"]]["sender"] is None
    assert by_id[subjects["plain"]]["replyTo"] is None
    assert by_id[subjects["with"]]["sender"] == [{"name": "Sec", "email": "sec@example.org"}]
    assert by_id[subjects["with"]]["replyTo"] == [{"name": None, "email": "r@example.org"}]
