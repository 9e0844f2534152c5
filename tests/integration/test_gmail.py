"""Gmail bridge mode against the EMULATION of Gmail's documented IMAP behaviour
(:mod:`tests.gmail_emulation`; it is not Gmail, which the build machines cannot reach).

The emulation's own state is the oracle for writes (labels, flags, where a message is),
next to a second, plain IMAP connection (stdlib ``imaplib``) for what goes over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import imaplib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from imapjmap.config import AuthConfig, Config, ImapConfig
from imapjmap.errors import AuthenticationFailed
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import BearerToken, ImapSession
from imapjmap.push.watcher import Watcher
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store
from imapjmap.sync.engine import AccountSync
from imapjmap.upstream.imap import ImapUpstream
from tests.gmail_emulation import Account, GmailEmulation, Message, make_message
from tests.integration.conftest import MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.test_blobs import uploaded
from tests.integration.test_outside_changes import another_client_creates_mailboxes

USER = "bob@gmail.test"
PASSWORD = "app-password-1234"
TOKEN = "ya29.emulated-access-token"


@dataclasses.dataclass(frozen=True)
class GmailUser:
    username: str
    password: str
    host: str
    port: int
    token: str
    account: Account
    server: GmailEmulation

    def imap(self) -> imaplib.IMAP4:
        """A plain stdlib IMAP connection to the emulation (run it in a thread)."""
        client = imaplib.IMAP4(self.host, self.port, timeout=30)
        client.login(self.username, self.password)
        return client


def seed(account: Account) -> dict[str, Message]:
    """Seven messages: two labels on one, a thread, a trashed one, an archived one."""
    inbox = account.folder("INBOX")
    sent = account.folder("[Gmail]/Sent Mail")
    trash = account.folder("[Gmail]/Trash")
    all_mail = account.folder("[Gmail]/All Mail")
    assert inbox and sent and trash and all_mail
    welcome = account.append(inbox, make_message("Welcome", message_id="<w@example.org>"))
    both = account.append(inbox, make_message("Two labels", body="Quarterly numbers.\r\n"))
    account.store_labels(both, "+", ["Work"])
    account.store_flags(both, "+", ["\\Flagged"], inbox)
    archived = account.append(all_mail, make_message("Archived"), ["\\Seen"])
    sent_one = account.append(sent, make_message("Sent one", sender="Bob <bob@gmail.test>"))
    trashed = account.append(trash, make_message("Trashed"), ["\\Seen"])
    reply = account.append(
        inbox, make_message("Re: Welcome", in_reply_to="<w@example.org>", sender="Carol <c@x.org>")
    )
    important = account.append(inbox, make_message("Important one"))
    account.store_labels(important, "+", ["\\Important"])
    return {
        "welcome": welcome,
        "both": both,
        "archived": archived,
        "sent": sent_one,
        "trashed": trashed,
        "reply": reply,
        "important": important,
    }


@pytest.fixture
async def gmail_server() -> AsyncIterator[GmailEmulation]:
    server = GmailEmulation()
    await server.start()
    await server.start_profile()
    yield server
    await server.stop()


@pytest.fixture
def gmail_user(gmail_server: GmailEmulation) -> GmailUser:
    account = gmail_server.add_user(USER, password=PASSWORD, token=TOKEN, labels=["Work"])
    return GmailUser(
        USER, PASSWORD, gmail_server.host, gmail_server.port, TOKEN, account, gmail_server
    )


@pytest.fixture
def seeded(gmail_user: GmailUser) -> dict[str, Message]:
    return seed(gmail_user.account)


def gmail_config(user: GmailUser, tmp_path: Path) -> Config:
    cfg = proxy_config(user, tmp_path)
    return dataclasses.replace(cfg, auth=AuthConfig(bearer_profile_url=user.server.profile_url))


@pytest.fixture
async def gm_http(
    gmail_user: GmailUser, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[TestClient[Any, Any]]:
    async with proxy_client(gmail_config(gmail_user, tmp_path)) as client:
        yield client


@pytest.fixture
async def gm(gm_http: TestClient[Any, Any], gmail_user: GmailUser, seeded: Any) -> Jmap:
    client = Jmap(gm_http, gmail_user.username, gmail_user.password)
    await client.session()
    return client


@dataclasses.dataclass
class BearerJmap(Jmap):
    token: str = ""

    def auth(self, username: str | None = None, password: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def mailboxes(client: Jmap) -> dict[str, dict[str, Any]]:
    got = await client.ok("Mailbox/get", {"ids": None})
    return {m["name"]: m for m in got["list"]}


async def emails_by_subject(client: Jmap) -> dict[str, dict[str, Any]]:
    ids = (await client.ok("Email/query", {}))["ids"]
    got = await client.ok(
        "Email/get",
        {"ids": ids, "properties": ["subject", "mailboxIds", "keywords", "threadId"]},
    )
    out = {e["subject"]: e for e in got["list"]}
    assert len(out) == len(ids), "an Email appears twice"
    return out


def selected(account: Account) -> set[str]:
    """The folders some connection SELECTed or EXAMINEd."""
    out = set()
    for line in account.commands:
        verb, _, rest = line.partition(" ")
        if verb.upper() in ("SELECT", "EXAMINE"):
            out.add(rest.split(" (")[0].strip('"'))
    return out


# --- read -----------------------------------------------------------------------------------


async def test_labels_are_mailboxes_and_only_three_folders_are_synced(
    gm: Jmap, gmail_user: GmailUser
) -> None:
    boxes = await mailboxes(gm)
    roles = {name: box["role"] for name, box in boxes.items()}
    assert roles["Inbox"] == "inbox"  # MBX-02
    assert roles["All Mail"] == "all"
    assert roles["Sent Mail"] == "sent"
    assert roles["Trash"] == "trash"
    assert roles["Spam"] == "junk"
    assert roles["Starred"] == "flagged"
    assert roles["Important"] == "important"
    assert roles["Work"] is None
    assert boxes["All Mail"]["parentId"] == boxes["[Gmail]"]["id"]
    # Gmail refuses to rename or delete its system folders, and to create below [Gmail]:
    # myRights (MBX-03) offers only what the server allows
    for name in ("[Gmail]", "All Mail", "Trash", "Spam", "Sent Mail", "Starred", "Inbox"):
        rights = boxes[name]["myRights"]
        assert not rights["mayRename"] and not rights["mayDelete"], (name, rights)
    assert not boxes["[Gmail]"]["myRights"]["mayCreateChild"]
    assert boxes["Work"]["myRights"]["mayRename"] and boxes["Work"]["myRights"]["mayDelete"]
    # counts come from the labels of the All Mail messages (MBX-04)
    assert boxes["Inbox"]["totalEmails"] == 4
    assert boxes["Inbox"]["unreadEmails"] == 4
    assert boxes["Inbox"]["totalThreads"] == 3  # Welcome and its reply are one thread
    assert boxes["Work"]["totalEmails"] == 1
    assert boxes["All Mail"]["totalEmails"] == 6
    assert boxes["Trash"]["totalEmails"] == 1
    assert boxes["Starred"]["totalEmails"] == 1
    assert boxes["Sent Mail"]["totalEmails"] == 1
    assert boxes["Important"]["totalEmails"] == 1
    # Gmail mode selects All Mail, Trash and Spam only; labels are never opened
    assert selected(gmail_user.account) <= {"[Gmail]/All Mail", "[Gmail]/Trash", "[Gmail]/Spam"}
    statuses = [c for c in gmail_user.account.commands if c.upper().startswith("STATUS")]
    assert statuses and all("[Gmail]/" in c for c in statuses)


async def test_localised_folder_names_are_found_by_special_use(
    tmp_path: Path, proxy_client: ProxyClient
) -> None:
    server = GmailEmulation()
    await server.start()
    names = {
        "[Gmail]/All Mail": "[Google Mail]/Alle Nachrichten",
        "[Gmail]/Trash": "[Google Mail]/Papierkorb",
        "[Gmail]/Spam": "[Google Mail]/Spam",
        "[Gmail]/Sent Mail": "[Google Mail]/Gesendet",
    }
    account = server.add_user(USER, password=PASSWORD, names=names)
    seed_de = account.append(account.folder("INBOX"), make_message("Hallo"))  # type: ignore[arg-type]
    user = GmailUser(USER, PASSWORD, server.host, server.port, TOKEN, account, server)
    try:
        async with proxy_client(gmail_config(user, tmp_path)) as http:
            client = Jmap(http, USER, PASSWORD)
            boxes = await mailboxes(client)
            assert boxes["Alle Nachrichten"]["role"] == "all"
            assert boxes["Papierkorb"]["role"] == "trash"
            assert boxes["Gesendet"]["role"] == "sent"
            emails = await emails_by_subject(client)
            assert set(emails["Hallo"]["mailboxIds"]) == {
                boxes["Alle Nachrichten"]["id"], boxes["Inbox"]["id"],
            }  # fmt: skip
            assert emails["Hallo"]["id"] == f"M{seed_de.msgid}"
            assert selected(account) <= set(names.values()) - {"[Google Mail]/Gesendet"}
    finally:
        await server.stop()


async def test_an_email_in_two_labels_is_one_email(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    boxes = await mailboxes(gm)
    emails = await emails_by_subject(gm)
    assert len(emails) == 7  # every message once, however many labels
    both = emails["Two labels"]
    assert set(both["mailboxIds"]) == {
        boxes["All Mail"]["id"],
        boxes["Inbox"]["id"],
        boxes["Work"]["id"],
        boxes["Starred"]["id"],
    }
    assert both["keywords"] == {"$flagged": True}  # \\Starred and \\Flagged are one (EML-KW-01)
    assert both["id"] == f"M{seeded['both'].msgid}"  # Email id from X-GM-MSGID
    assert both["threadId"] == f"T{seeded['both'].thrid}"  # Thread id from X-GM-THRID
    assert emails["Re: Welcome"]["threadId"] == emails["Welcome"]["threadId"]
    assert set(emails["Archived"]["mailboxIds"]) == {boxes["All Mail"]["id"]}
    assert set(emails["Trashed"]["mailboxIds"]) == {boxes["Trash"]["id"]}
    assert set(emails["Sent one"]["mailboxIds"]) == {
        boxes["All Mail"]["id"],
        boxes["Sent Mail"]["id"],
    }
    in_work = await gm.ok(
        "Email/query", {"filter": {"inMailbox": boxes["Work"]["id"]}, "calculateTotal": True}
    )
    assert in_work["ids"] == [both["id"]]
    assert in_work["total"] == boxes["Work"]["totalEmails"]  # EML-QRY-01


async def test_a_body_is_read_from_all_mail(gm: Jmap, gmail_user: GmailUser) -> None:
    emails = await emails_by_subject(gm)
    got = await gm.ok(
        "Email/get",
        {
            "ids": [emails["Two labels"]["id"]],
            "properties": ["bodyValues"],
            "fetchAllBodyValues": True,
        },
    )
    (value,) = got["list"][0]["bodyValues"].values()
    assert value["value"] == "Quarterly numbers.\n"
    fetched = [c for c in gmail_user.account.commands if "BODY.PEEK[]" in c.upper()]
    assert fetched and selected(gmail_user.account) <= {
        "[Gmail]/All Mail",
        "[Gmail]/Trash",
        "[Gmail]/Spam",
    }


async def test_label_changes_made_elsewhere_are_seen(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    boxes = await mailboxes(gm)
    state = (await gm.ok("Email/get", {"ids": []}))["state"]
    gmail_user.account.store_labels(seeded["archived"], "+", ["Work", "\\Inbox"])
    changes = await gm.ok("Email/changes", {"sinceState": state})
    archived = f"M{seeded['archived'].msgid}"
    assert changes["updated"] == [archived] and not changes["created"] and not changes["destroyed"]
    got = await gm.ok("Email/get", {"ids": [archived], "properties": ["mailboxIds"]})
    assert set(got["list"][0]["mailboxIds"]) == {
        boxes["All Mail"]["id"],
        boxes["Inbox"]["id"],
        boxes["Work"]["id"],
    }


async def test_non_ascii_nested_labels(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    """Labels are mailbox names in modified UTF-7 on the wire, both ways, and "/" nests them."""
    gmail_user.account.create_label("Reisen/Übersicht")
    gmail_user.account.store_labels(seeded["archived"], "+", ["Reisen/Übersicht"])
    boxes = await mailboxes(gm)
    assert boxes["Übersicht"]["parentId"] == boxes["Reisen"]["id"]
    assert boxes["Übersicht"]["totalEmails"] == 1
    welcome = f"M{seeded['welcome'].msgid}"
    await gm.ok(
        "Email/set", {"update": {welcome: {f"mailboxIds/{boxes['Übersicht']['id']}": True}}}
    )
    assert gmail_user.account.labels_of("Welcome") == {"\\Inbox", "Reisen/Übersicht"}
    stores = [c for c in gmail_user.account.commands if "+X-GM-LABELS" in c]
    assert stores and "Reisen/&ANw-bersicht" in stores[-1]
    assert (await mailboxes(gm))["Übersicht"]["totalEmails"] == 2


# --- write ----------------------------------------------------------------------------------


async def test_mailbox_ids_become_label_stores_on_all_mail(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    boxes = await mailboxes(gm)
    welcome = f"M{seeded['welcome'].msgid}"
    result = await gm.ok(
        "Email/set",
        {
            "update": {
                welcome: {
                    f"mailboxIds/{boxes['Work']['id']}": True,
                    f"mailboxIds/{boxes['Inbox']['id']}": None,  # archive
                }
            }
        },
    )
    assert result["updated"] == {welcome: None}
    assert gmail_user.account.labels_of("Welcome") == {"Work"}
    stores = [c for c in gmail_user.account.commands if "X-GM-LABELS" in c.upper()]
    assert any("+X-GM-LABELS (Work)" in c for c in stores)
    assert any("-X-GM-LABELS (\\Inbox)" in c for c in stores)

    def over_the_wire() -> bytes:
        client = gmail_user.imap()
        try:
            client.select('"[Gmail]/All Mail"', readonly=True)
            typ, data = client.uid("SEARCH", "X-GM-MSGID", str(seeded["welcome"].msgid))
            uid = data[0].split()[0].decode()
            typ, data = client.uid("FETCH", uid, "(X-GM-LABELS)")
            assert typ == "OK"
            return bytes(data[0])  # type: ignore[arg-type]
        finally:
            client.logout()

    assert b'X-GM-LABELS ("Work")' in await asyncio.to_thread(over_the_wire)
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert set(got["list"][0]["mailboxIds"]) == {boxes["All Mail"]["id"], boxes["Work"]["id"]}
    after = await mailboxes(gm)
    assert after["Work"]["totalEmails"] == 2
    assert after["Inbox"]["totalEmails"] == 3


async def test_flagged_keyword_is_the_starred_label(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    welcome = f"M{seeded['welcome'].msgid}"
    await gm.ok(
        "Email/set", {"update": {welcome: {"keywords/$flagged": True, "keywords/$seen": True}}}
    )
    assert "\\Starred" in gmail_user.account.labels_of("Welcome")
    assert {"\\Flagged", "\\Seen"} <= seeded["welcome"].flags
    boxes = await mailboxes(gm)
    assert boxes["Starred"]["totalEmails"] == 2
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["keywords", "mailboxIds"]})
    assert got["list"][0]["keywords"] == {"$flagged": True, "$seen": True}
    assert boxes["Starred"]["id"] in got["list"][0]["mailboxIds"]
    both = f"M{seeded['both'].msgid}"
    await gm.ok("Email/set", {"update": {both: {f"mailboxIds/{boxes['Starred']['id']}": None}}})
    assert "\\Starred" not in gmail_user.account.labels_of("Two labels")
    assert "\\Flagged" not in seeded["both"].flags
    got = await gm.ok("Email/get", {"ids": [both], "properties": ["keywords"]})
    assert got["list"][0]["keywords"] == {}


async def test_destroy_moves_to_trash_then_expunges_there(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    archived, trashed = f"M{seeded['archived'].msgid}", f"M{seeded['trashed'].msgid}"
    result = await gm.ok("Email/set", {"destroy": [archived, trashed]})
    assert sorted(result["destroyed"]) == sorted([archived, trashed])
    assert seeded["archived"].msgid not in gmail_user.account.messages  # gone for ever
    assert seeded["trashed"].msgid not in gmail_user.account.messages
    log = gmail_user.account.commands
    move = next(i for i, c in enumerate(log) if c.upper().startswith("UID MOVE"))
    assert "[Gmail]/Trash" in log[move]
    assert any(c.upper().startswith("UID EXPUNGE") for c in log[move:])
    got = await gm.ok("Email/get", {"ids": [archived, trashed]})
    assert sorted(got["notFound"]) == sorted([archived, trashed])


async def test_moving_to_the_trash_and_back_keeps_the_id(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    boxes = await mailboxes(gm)
    state = (await gm.ok("Email/get", {"ids": []}))["state"]
    welcome = f"M{seeded['welcome'].msgid}"
    await gm.ok("Email/set", {"update": {welcome: {"mailboxIds": {boxes["Trash"]["id"]: True}}}})
    assert seeded["welcome"].place == "trash"
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert got["list"][0]["mailboxIds"] == {boxes["Trash"]["id"]: True}
    await gm.ok(
        "Email/set",
        {
            "update": {
                welcome: {"mailboxIds": {boxes["Inbox"]["id"]: True, boxes["Work"]["id"]: True}}
            }
        },
    )
    assert seeded["welcome"].place == "mail"
    assert gmail_user.account.labels_of("Welcome") == {"\\Inbox", "Work"}
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert set(got["list"][0]["mailboxIds"]) == {
        boxes["All Mail"]["id"], boxes["Inbox"]["id"], boxes["Work"]["id"],
    }  # fmt: skip
    changes = await gm.ok("Email/changes", {"sinceState": state})
    assert welcome in changes["updated"] and not changes["destroyed"]  # CORE-CHG-02


async def test_no_false_destroy_while_gmail_catches_up(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    """After our label write the message is missing from every view for a moment (the
    emulation's lag knob, standing in for eventual consistency): the Email must never be
    reported destroyed, and its new label shows once Gmail shows it."""
    boxes = await mailboxes(gm)
    state = (await gm.ok("Email/get", {"ids": []}))["state"]
    welcome = f"M{seeded['welcome'].msgid}"
    gmail_user.account.lag = 0.6
    await gm.ok("Email/set", {"update": {welcome: {f"mailboxIds/{boxes['Work']['id']}": True}}})
    gmail_user.account.lag = 0.0
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert got["list"], "the Email vanished while Gmail caught up"
    changes = await gm.ok("Email/changes", {"sinceState": state})
    assert not changes["destroyed"]
    await asyncio.sleep(0.8)
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert boxes["Work"]["id"] in got["list"][0]["mailboxIds"]
    changes = await gm.ok("Email/changes", {"sinceState": state})
    assert changes["updated"] == [welcome] and not changes["destroyed"] and not changes["created"]


async def test_create_lands_in_the_label_and_is_found_in_all_mail(
    gm: Jmap, gmail_user: GmailUser
) -> None:
    boxes = await mailboxes(gm)
    result = await gm.ok(
        "Email/set",
        {
            "create": {
                "d1": {
                    "mailboxIds": {boxes["Work"]["id"]: True},
                    "from": [{"email": USER}],
                    "subject": "Created here",
                    "bodyValues": {"b": {"value": "hi"}},
                    "textBody": [{"partId": "b", "type": "text/plain"}],
                }
            }
        },
    )
    created = result["created"]["d1"]
    message = gmail_user.account.find("Created here")
    assert created["id"] == f"M{message.msgid}"
    assert message.labels == {"Work"}


async def test_import_into_two_labels_is_one_message(gm: Jmap, gmail_user: GmailUser) -> None:
    boxes = await mailboxes(gm)
    blob = await uploaded(
        gm, make_message("Imported", message_id="<imp@example.org>"), "message/rfc822"
    )
    body = await gm.request(
        [
            [
                "Email/import",
                {
                    "accountId": gm.account_id,
                    "emails": {
                        "k1": {
                            "blobId": blob["blobId"],
                            "mailboxIds": {boxes["Inbox"]["id"]: True, boxes["Work"]["id"]: True},
                            "keywords": {"$seen": True},
                        }
                    },
                },
                "i",
            ]
        ]
    )
    (name, result, _) = body["methodResponses"][0]
    assert name == "Email/import" and result["notCreated"] is None, result
    message = gmail_user.account.find("Imported")
    assert result["created"]["k1"]["id"] == f"M{message.msgid}"
    assert message.labels == {"\\Inbox", "Work"}  # APPEND to INBOX, then COPY adds Work
    got = await gm.ok("Email/get", {"ids": [f"M{message.msgid}"], "properties": ["mailboxIds"]})
    assert set(got["list"][0]["mailboxIds"]) == {
        boxes["All Mail"]["id"], boxes["Inbox"]["id"], boxes["Work"]["id"],
    }  # fmt: skip


async def test_labels_are_created_renamed_and_destroyed_as_mailboxes(
    gm: Jmap, gmail_user: GmailUser, seeded: dict[str, Message]
) -> None:
    created = await gm.ok("Mailbox/set", {"create": {"p": {"name": "Projects"}}})
    projects = created["created"]["p"]["id"]
    assert gmail_user.account.folder("Projects") is not None
    welcome = f"M{seeded['welcome'].msgid}"
    await gm.ok("Email/set", {"update": {welcome: {f"mailboxIds/{projects}": True}}})
    assert "Projects" in gmail_user.account.labels_of("Welcome")
    renamed = await gm.ok("Mailbox/set", {"update": {projects: {"name": "Plans"}}})
    assert renamed["updated"] == {projects: None} and renamed["notUpdated"] is None, renamed
    assert gmail_user.account.labels_of("Welcome") == {"\\Inbox", "Plans"}
    boxes = await mailboxes(gm)
    # a rename by a JMAP client keeps the id (MBX-01), though Gmail has no mailbox ids
    assert boxes["Plans"]["id"] == projects
    assert boxes["Plans"]["totalEmails"] == 1
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert projects in got["list"][0]["mailboxIds"]
    moved = await gm.ok("Mailbox/set", {"update": {projects: {"parentId": boxes["Work"]["id"]}}})
    assert moved["updated"] == {projects: None} and moved["notUpdated"] is None, moved
    assert "Work/Plans" in gmail_user.account.labels_of("Welcome")
    boxes = await mailboxes(gm)
    assert boxes["Plans"]["id"] == projects
    assert boxes["Plans"]["parentId"] == boxes["Work"]["id"]
    assert boxes["Plans"]["totalEmails"] == 1
    result = await gm.ok(
        "Mailbox/set", {"destroy": [boxes["Plans"]["id"]], "onDestroyRemoveEmails": True}
    )
    assert result["destroyed"] == [boxes["Plans"]["id"]], result
    # a label's folder holds no message of its own: the Email stays, in its other mailboxes
    assert gmail_user.account.labels_of("Welcome") == {"\\Inbox"}
    got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
    assert set(got["list"][0]["mailboxIds"]) == {boxes["All Mail"]["id"], boxes["Inbox"]["id"]}


async def test_system_folders_are_not_renamed_or_destroyed_mbx_03(
    gm: Jmap, gmail_user: GmailUser
) -> None:
    boxes = await mailboxes(gm)
    gmail, all_mail = boxes["[Gmail]"]["id"], boxes["All Mail"]["id"]
    got = await gm.ok(
        "Mailbox/set",
        {
            "update": {all_mail: {"name": "Everything"}},
            "destroy": [gmail],
            "create": {"c": {"name": "Mine", "parentId": gmail}},
        },
    )
    assert got["notUpdated"][all_mail]["type"] == "forbidden", got
    assert got["notDestroyed"][gmail]["type"] == "forbidden", got
    assert got["notCreated"]["c"]["type"] == "forbidden", got
    sent = [c.split()[0].upper() for c in gmail_user.account.commands]
    assert not {"RENAME", "DELETE", "CREATE"} & set(sent)  # refused before asking Gmail


async def test_label_created_by_another_client_is_seen_at_once_mbx_01(
    gm: Jmap, gmail_user: GmailUser
) -> None:
    """The sequence of ``test_outside_changes`` with labels (X, Y) instead of folders."""
    await another_client_creates_mailboxes(gm, gmail_user.imap, push=False)


async def test_without_condstore_labels_are_read_again_each_refresh(
    tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """Gmail advertises CONDSTORE today; without it every refresh re-reads the flags and
    labels of All Mail, and label changes are still seen."""
    from tests.gmail_emulation import CAPABILITIES

    server = GmailEmulation(c for c in CAPABILITIES if c != "CONDSTORE")
    await server.start()
    await server.start_profile()
    account = server.add_user(USER, password=PASSWORD, labels=["Work"])
    seeded = seed(account)
    user = GmailUser(USER, PASSWORD, server.host, server.port, TOKEN, account, server)
    try:
        async with proxy_client(gmail_config(user, tmp_path)) as http:
            client = Jmap(http, USER, PASSWORD)
            boxes = await mailboxes(client)
            assert boxes["Inbox"]["totalEmails"] == 4
            account.store_labels(seeded["archived"], "+", ["Work"])
            archived = f"M{seeded['archived'].msgid}"
            got = await client.ok("Email/get", {"ids": [archived], "properties": ["mailboxIds"]})
            assert boxes["Work"]["id"] in got["list"][0]["mailboxIds"]
            welcome = f"M{seeded['welcome'].msgid}"
            await client.ok(
                "Email/set", {"update": {welcome: {f"mailboxIds/{boxes['Inbox']['id']}": None}}}
            )
            assert account.labels_of("Welcome") == set()
            assert (await mailboxes(client))["Inbox"]["totalEmails"] == 3
    finally:
        await server.stop()


# --- query ----------------------------------------------------------------------------------


async def test_text_conditions_use_x_gm_raw(gm: Jmap, gmail_user: GmailUser) -> None:
    emails = await emails_by_subject(gm)
    found = await gm.ok("Email/query", {"filter": {"text": "quarterly numbers"}})
    assert found["ids"] == [emails["Two labels"]["id"]]
    searches = [c for c in gmail_user.account.commands if c.upper().startswith("UID SEARCH")]
    assert any('X-GM-RAW "\\"quarterly numbers\\""' in c for c in searches), searches
    boxes = await mailboxes(gm)
    scoped = await gm.ok(
        "Email/query", {"filter": {"inMailbox": boxes["Inbox"]["id"], "text": "welcome"}}
    )
    assert set(scoped["ids"]) == {emails["Welcome"]["id"], emails["Re: Welcome"]["id"]}
    assert selected(gmail_user.account) <= {"[Gmail]/All Mail", "[Gmail]/Trash", "[Gmail]/Spam"}
    inbox = gmail_user.account.folder("INBOX")
    assert inbox is not None
    gmail_user.account.append(inbox, make_message("Postkarte", body="Grüße aus Köln\r\n"))
    found = await gm.ok("Email/query", {"filter": {"text": "grüße aus köln"}})
    emails = await emails_by_subject(gm)
    assert found["ids"] == [emails["Postkarte"]["id"]]
    assert any("CHARSET UTF-8 X-GM-RAW" in c for c in gmail_user.account.commands)


async def test_trailing_stars_are_dropped_from_x_gm_raw(gm: Jmap, gmail_user: GmailUser) -> None:
    """Webmails append "*" to each word; Gmail's phrase search has no such prefix, so the
    words go without it (as in every other mode)."""
    emails = await emails_by_subject(gm)
    found = await gm.ok("Email/query", {"filter": {"text": "quarterly* numbers*"}})
    assert found["ids"] == [emails["Two labels"]["id"]]
    searches = [c for c in gmail_user.account.commands if "X-GM-RAW" in c]
    assert searches and all("*" not in c for c in searches), searches
    assert any('X-GM-RAW "\\"quarterly numbers\\""' in c for c in searches), searches


# --- auth -----------------------------------------------------------------------------------


async def test_bearer_token_logs_in_with_xoauth2(
    gm_http: TestClient[Any, Any],
    gmail_user: GmailUser,
    seeded: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = BearerJmap(gm_http, "", "", token=TOKEN)
    session = await client.session()  # CORE-SESS-01 with a Bearer token
    assert session["username"] == USER
    assert gmail_user.server.xoauth2_attempts == [USER]  # SASL XOAUTH2 with the profile's user
    emails = await emails_by_subject(client)
    assert "Two labels" in emails
    basic = Jmap(gm_http, USER, PASSWORD)
    assert (await basic.session())["primaryAccounts"][MAIL] == client.account_id
    assert TOKEN not in caplog.text
    encoded = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode()
    assert encoded not in caplog.text


async def test_a_refused_token_is_401(gm_http: TestClient[Any, Any], gmail_user: GmailUser) -> None:
    resp = await gm_http.get(
        "/.well-known/jmap", headers={"Authorization": "Bearer ya29.not-a-token"}
    )
    assert resp.status == 401
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    # the profile knows the token but IMAP refuses it (IMAP access off): 401 as well
    gmail_user.server.imap_refuses.add(TOKEN)
    resp = await gm_http.get("/.well-known/jmap", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 401
    assert gmail_user.server.xoauth2_attempts == [USER]


async def test_an_app_password_still_works(gm: Jmap, gmail_user: GmailUser) -> None:
    session = await gm.session()
    assert session["username"] == USER
    assert not gmail_user.server.xoauth2_attempts


@pytest.mark.parametrize("sasl_ir", [True, False])
async def test_session_xoauth2_with_and_without_sasl_ir(
    gmail_user: GmailUser, sasl_ir: bool
) -> None:
    server = gmail_user.server
    if not sasl_ir:
        server.pre_auth_capabilities = tuple(
            c for c in server.pre_auth_capabilities if c != "SASL-IR"
        )
    cfg = ImapConfig(host=gmail_user.host, port=gmail_user.port, security="none")
    session = await ImapSession.connect(cfg, USER, BearerToken(TOKEN))
    try:
        assert session.profile.labels and session.has("X-GM-EXT-1")
        await session.noop()
    finally:
        await session.close()
    # a refused token: Gmail's error challenge is answered empty, then the login fails and
    # the wire stays in sync (no BAD, no hang)
    with pytest.raises(AuthenticationFailed):
        await ImapSession.connect(cfg, USER, BearerToken("ya29.wrong"))
    assert server.xoauth2_attempts == [USER, USER]
    off = dataclasses.replace(cfg, gmail="off")
    plain = await ImapSession.connect(off, USER, PASSWORD)
    try:
        assert not plain.profile.labels  # imap.gmail = "off": the same server is plain IMAP
    finally:
        await plain.close()


# --- push -----------------------------------------------------------------------------------


async def test_the_idle_watcher_notices_an_append(
    gmail_user: GmailUser, seeded: dict[str, Message], tmp_path: Path
) -> None:
    cfg = ImapConfig(host=gmail_user.host, port=gmail_user.port, security="none", pool_size=2)
    store = await Store.open(str(tmp_path / "push.sqlite3"))
    pool = ImapPool(cfg, USER, PASSWORD)
    await store.run(lambda tx: q.ensure_account(tx, "A1", USER))
    sync = AccountSync(store, "A1")
    pokes: list[int] = []

    async def poke() -> None:
        pokes.append(1)

    watcher = Watcher("A1", ImapUpstream(pool), sync, poke, poll_interval=3600)
    try:
        watcher.start()
        for _ in range(200):
            if watcher.mode == "idle" and pokes:
                break
            await asyncio.sleep(0.02)
        assert watcher.mode == "idle"
        idling = [c for c in gmail_user.account.commands if c.upper().startswith("EXAMINE")]
        # IDLE on All Mail, not INBOX (which Gmail mode never opens otherwise either)
        assert any("[Gmail]/All Mail" in c for c in idling)
        assert not any("INBOX" in c.upper() for c in idling)
        before = len(pokes)
        inbox = gmail_user.account.folder("INBOX")
        assert inbox is not None
        new = gmail_user.account.append(inbox, make_message("Pushed in"))
        for _ in range(200):
            if len(pokes) > before:
                break
            await asyncio.sleep(0.02)
        assert len(pokes) > before, "the watcher did not notice the APPEND"

        def where(tx: Any) -> tuple[dict[str, bool] | None, dict[str, str]]:
            row = em.email(tx, "A1", f"M{new.msgid}")
            names = {m.id: m.imap_name for m in q.live_mailboxes(tx, "A1")}
            return (row.mailbox_ids if row else None), names

        mailbox_ids, names = await store.run(where)
        assert mailbox_ids is not None
        assert {names[m] for m in mailbox_ids} == {"INBOX", "[Gmail]/All Mail"}
    finally:
        await watcher.stop()
        await sync.aclose()
        await pool.aclose()
        await store.aclose()
