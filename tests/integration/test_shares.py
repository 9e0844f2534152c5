"""Other users' folders shared with a login, as JMAP accounts of its session (README
"Shared folders"; ``imapjmap.upstream.shares``, ``imapjmap.http.shares``).

Each test runs against a Dovecot with the ACL plugins and a shared namespace
(``shared/OWNER/``) and against Cyrus (``Other Users/OWNER/``, shared folders are native).
The owners share with ``SETACL`` and unshare with ``DELETEACL`` on plain IMAP connections;
those connections, the owners' and the sharee's, are the oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import imaplib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.config import PushConfig
from imapjmap.http import views
from imapjmap.store import queries as q
from imapjmap.upstream import imap as imap_upstream
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.pushkit import (
    open_events,
    push_receiver,
    push_services,
    wait_for,
    watcher_of,
)

SharingServer = DovecotServer | CyrusServer


@pytest.fixture(scope="session")
def dovecot_acl() -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    with dovecot_root("dovecot-acl") as root:
        server = DovecotServer.start(root, acl=True)
        yield server
        server.stop()


@pytest.fixture(params=["dovecot-acl", "cyrus"])
def sharing(request: pytest.FixtureRequest) -> SharingServer:
    name = "dovecot_acl" if request.param == "dovecot-acl" else "cyrus"
    server: SharingServer = request.getfixturevalue(name)
    return server


@dataclasses.dataclass
class Owner:
    user: ImapUser
    imap: imaplib.IMAP4

    def share(self, folder: str, who: str, rights: str) -> None:
        typ, data = self.imap.setacl(_q(folder), who, rights)
        assert typ == "OK", data

    def unshare(self, folder: str, who: str) -> None:
        typ, data = self.imap.deleteacl(_q(folder), who)
        assert typ == "OK", data

    def folder(self, name: str, *subjects: str) -> None:
        typ, data = self.imap.create(_q(name))
        assert typ == "OK", data
        for subject in subjects:
            typ, data = self.imap.append(_q(name), "(\\Seen)", None, _message(subject))
            assert typ == "OK", data


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _message(subject: str) -> bytes:
    return (
        f"From: Owner <owner@example.org>\r\nTo: team@example.org\r\nSubject: {subject}\r\n"
        f"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.org>\r\n\r\nHello\r\n"
    ).encode()


def _user(server: SharingServer, role: str) -> ImapUser:
    username, password = f"{role}-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    server.add_user(username, password)
    return ImapUser(username, password, server.host, server.port)


@pytest.fixture
def owners(sharing: SharingServer) -> Iterator[tuple[Owner, Owner]]:
    """alice shares Projects read-write; carol shares Notes read-only (with whom: the test)."""
    made = []
    for role in ("alice", "carol"):
        user = _user(sharing, role)
        made.append(Owner(user, user.connect()))
    alice, carol = made
    alice.folder("Projects", "plan A", "plan B")
    carol.folder("Notes", "note 1")
    yield alice, carol
    for owner in made:
        with contextlib.suppress(Exception):
            owner.imap.logout()


@pytest.fixture
def bob(sharing: SharingServer) -> ImapUser:
    return _user(sharing, "bob")


@pytest.fixture
async def bob_jmap(bob: ImapUser, tmp_path: Path, proxy_client: ProxyClient) -> AsyncIterator[Jmap]:
    async with proxy_client(proxy_config(bob, tmp_path)) as client:
        jmap = Jmap(client, bob.username, bob.password)
        await jmap.session()
        yield jmap


def _shares(session: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The session's accounts other than the primary one, by name."""
    primary = session["primaryAccounts"][MAIL]
    return {a["name"]: a | {"id": i} for i, a in session["accounts"].items() if i != primary}


async def _call(jmap: Jmap, account_id: str, name: str, args: dict[str, Any]) -> list[Any]:
    body = await jmap.request([[name, {"accountId": account_id, **args}, "c0"]])
    response: list[Any] = body["methodResponses"][0]
    return response


async def _ok(jmap: Jmap, account_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    response = await _call(jmap, account_id, name, args)
    assert response[0] == name, response
    result: dict[str, Any] = response[1]
    return result


async def _subjects(jmap: Jmap, account_id: str) -> set[str]:
    query = await _ok(jmap, account_id, "Email/query", {})
    got = await _ok(jmap, account_id, "Email/get", {"ids": query["ids"], "properties": ["subject"]})
    return {email["subject"] for email in got["list"]}


async def test_shares_are_accounts_of_the_session_core_sess_03(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """Each owner's shared folders are one account: not personal, read-only exactly when no
    folder of it lets the sharee write; the personal account keeps its own folders only."""
    alice, carol = owners
    alice.share("Projects", bob.username, "lrswipkxte")
    carol.share("Notes", bob.username, "lr")
    session = await bob_jmap.session()
    shares = _shares(session)
    assert set(shares) == {alice.user.username, carol.user.username}, session["accounts"]
    rw, ro = shares[alice.user.username], shares[carol.user.username]
    assert not rw["isPersonal"] and not ro["isPersonal"]
    assert not rw["isReadOnly"] and ro["isReadOnly"]
    assert MAIL in rw["accountCapabilities"]
    assert not rw["accountCapabilities"][MAIL]["mayCreateTopLevelMailbox"]
    assert set(session["primaryAccounts"].values()) == {bob_jmap.account_id}

    own = await bob_jmap.ok("Mailbox/get", {"ids": None})
    assert "Projects" not in {m["name"] for m in own["list"]}
    assert all(not m["name"].startswith(("shared", "Other Users")) for m in own["list"])

    projects = await _ok(bob_jmap, rw["id"], "Mailbox/get", {"ids": None})
    assert [m["name"] for m in projects["list"]] == ["Projects"]
    rights = projects["list"][0]["myRights"]
    assert rights["mayReadItems"] and rights["mayAddItems"] and rights["maySetKeywords"]
    assert projects["list"][0]["parentId"] is None
    notes = await _ok(bob_jmap, ro["id"], "Mailbox/get", {"ids": None})
    assert [m["name"] for m in notes["list"]] == ["Notes"]
    rights = notes["list"][0]["myRights"]
    assert rights["mayReadItems"] and not rights["mayAddItems"]
    assert not rights["maySetKeywords"] and not rights["mayRemoveItems"]

    assert await _subjects(bob_jmap, rw["id"]) == {"plan A", "plan B"}
    assert await _subjects(bob_jmap, ro["id"]) == {"note 1"}
    assert await _subjects(bob_jmap, bob_jmap.account_id) == set()


async def test_unsharing_removes_the_account_core_sess_06(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """DELETEACL by the owner: the next session has no such account, its state changed,
    and the account id is accountNotFound."""
    _, carol = owners
    carol.share("Notes", bob.username, "lr")
    before = await bob_jmap.session()
    notes = _shares(before)[carol.user.username]["id"]
    assert await _subjects(bob_jmap, notes) == {"note 1"}
    carol.unshare("Notes", bob.username)
    # an API response tells the client that the session changed (its sessionState)
    body = await bob_jmap.request([["Mailbox/get", {"accountId": bob_jmap.account_id}, "c0"]])
    assert body["sessionState"] != before["state"]
    after = await bob_jmap.session()
    assert _shares(after) == {} and after["state"] != before["state"]
    assert after["state"] == body["sessionState"]
    response = await _call(bob_jmap, notes, "Mailbox/get", {"ids": None})
    assert response[0] == "error" and response[1]["type"] == "accountNotFound"
    # nothing of what bob may no longer read stays in the cache
    app = bob_jmap.http.server.app
    assert app is not None
    store = app[views.SERVICES].store
    assert await store.read(lambda tx: q.account(tx, notes)) is None
    assert await store.read(lambda tx: q.live_mailboxes(tx, notes)) == []


async def test_another_login_cannot_reach_a_share_account(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap, sharing: SharingServer
) -> None:
    """A share's account id belongs to the login it was shared with: another login that
    names it (even one the same folder is shared with) gets accountNotFound."""
    alice, _ = owners
    dave = _user(sharing, "dave")
    alice.share("Projects", bob.username, "lr")
    alice.share("Projects", dave.username, "lr")
    bobs = _shares(await bob_jmap.session())[alice.user.username]["id"]
    dave_jmap = Jmap(bob_jmap.http, dave.username, dave.password)
    daves = _shares(await dave_jmap.session())[alice.user.username]["id"]
    assert daves != bobs
    for account in (bobs, bob_jmap.account_id):
        response = await _call(dave_jmap, account, "Email/query", {})
        assert response[0] == "error" and response[1]["type"] == "accountNotFound"
    assert await _subjects(dave_jmap, daves) == {"plan A", "plan B"}


async def _email_ids(jmap: Jmap, account_id: str) -> dict[str, str]:
    query = await _ok(jmap, account_id, "Email/query", {})
    got = await _ok(jmap, account_id, "Email/get", {"ids": query["ids"], "properties": ["subject"]})
    return {email["subject"]: email["id"] for email in got["list"]}


def _flags(owner: Owner, folder: str) -> dict[str, str]:
    """Subject -> FLAGS of each message in the owner's ``folder`` (the oracle)."""
    typ, data = owner.imap.select(_q(folder), readonly=True)
    assert typ == "OK", data
    typ, data = owner.imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    out = {}
    for item in data:
        if isinstance(item, tuple):
            subject = item[1].decode().split(":", 1)[1].strip()
            out[subject] = item[0].decode()
    owner.imap.close()
    return out


def _folders(user: ImapUser) -> set[str]:
    client = user.connect()
    try:
        typ, data = client.list()
        assert typ == "OK", data
        return {raw.decode().rsplit(' "/" ', 1)[1].strip('"') for raw in data if raw}
    finally:
        client.logout()


async def _shared(owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap) -> tuple[str, str]:
    """alice's Projects shared read-write, carol's Notes read-only: their account ids."""
    alice, carol = owners
    alice.share("Projects", bob.username, "lrswipkxte")
    carol.share("Notes", bob.username, "lr")
    shares = _shares(await bob_jmap.session())
    return shares[alice.user.username]["id"], shares[carol.user.username]["id"]


async def test_a_read_only_share_refuses_writes_with_forbidden_mbx_03(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """Every write the rights do not allow is forbidden before anything is sent; the
    owner's folder is as it was, and nothing landed in the sharee's own account."""
    _, carol = owners
    _, ro = await _shared(owners, bob, bob_jmap)
    before = _flags(carol, "Notes")
    note = (await _email_ids(bob_jmap, ro))["note 1"]
    (notes,) = (await _ok(bob_jmap, ro, "Mailbox/get", {"ids": None}))["list"]
    got = await _ok(
        bob_jmap,
        ro,
        "Email/set",
        {
            "update": {note: {"keywords/$flagged": True}},
            "create": {"d": {"mailboxIds": {notes["id"]: True}, "subject": "mine"}},
        },
    )
    assert got["notUpdated"][note]["type"] == "forbidden", got
    assert got["notCreated"]["d"]["type"] == "forbidden", got
    got = await _ok(bob_jmap, ro, "Email/set", {"destroy": [note]})
    assert got["notDestroyed"][note]["type"] == "forbidden", got
    got = await _ok(
        bob_jmap,
        ro,
        "Mailbox/set",
        {
            "create": {"child": {"name": "x", "parentId": notes["id"]}, "top": {"name": "y"}},
            "destroy": [notes["id"]],
        },
    )
    assert got["notCreated"]["child"]["type"] == "forbidden", got
    assert got["notCreated"]["top"]["type"] == "forbidden", got
    assert got["notDestroyed"][notes["id"]]["type"] == "forbidden", got
    assert _flags(carol, "Notes") == before
    assert not {"x", "y", "Notes/x"} & _folders(bob)


async def test_a_read_write_share_takes_writes(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """Keywords, a new message, a destroy and a child folder land in the owner's folder."""
    alice, _ = owners
    rw, _ = await _shared(owners, bob, bob_jmap)
    ids = await _email_ids(bob_jmap, rw)
    (projects,) = (await _ok(bob_jmap, rw, "Mailbox/get", {"ids": None}))["list"]
    got = await _ok(
        bob_jmap,
        rw,
        "Email/set",
        {
            "update": {ids["plan A"]: {"keywords/$flagged": True}},
            "destroy": [ids["plan B"]],
            "create": {"d": {"mailboxIds": {projects["id"]: True}, "subject": "plan C"}},
        },
    )
    assert ids["plan A"] in got["updated"] and got["destroyed"] == [ids["plan B"]], got
    assert "d" in got["created"], got
    flags = _flags(alice, "Projects")
    assert set(flags) == {"plan A", "plan C"}
    assert "\\Flagged" in flags["plan A"]
    got = await _ok(
        bob_jmap, rw, "Mailbox/set", {"create": {"c": {"name": "Sub", "parentId": projects["id"]}}}
    )
    assert "c" in got["created"], got
    assert "Projects/Sub" in _folders(alice.user)
    assert await _subjects(bob_jmap, rw) == {"plan A", "plan C"}


@pytest.mark.parametrize("sharing", ["dovecot-acl"], indirect=True)
async def test_rights_taken_back_before_a_write_give_forbidden(
    owners: tuple[Owner, Owner],
    bob: ImapUser,
    bob_jmap: Jmap,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner takes the write rights back after the request's refresh, just before the
    STORE: the server's refusal is forbidden, not serverFail, and nothing is reported done.
    (Dovecot only: Cyrus reads the rights when a session selects the mailbox, so a session
    that has it open still writes, and the proxy rightly reports that write done.)"""
    alice, _ = owners
    rw, _ = await _shared(owners, bob, bob_jmap)
    plan = (await _email_ids(bob_jmap, rw))["plan A"]
    original = imap_upstream.store_flags

    async def revoked_first(*args: Any, **kwargs: Any) -> Any:
        alice.share("Projects", bob.username, "lr")
        return await original(*args, **kwargs)

    monkeypatch.setattr(imap_upstream, "store_flags", revoked_first)
    got = await _ok(bob_jmap, rw, "Email/set", {"update": {plan: {"keywords/$flagged": True}}})
    assert got["notUpdated"][plan]["type"] == "forbidden", got
    assert "\\Flagged" not in _flags(alice, "Projects")["plan A"]


def _raw_and_date(user: ImapUser | Owner, folder: str, subject: str) -> tuple[bytes, str]:
    """The exact octets and INTERNALDATE of the message ``subject`` in ``folder``."""
    client = user.imap if isinstance(user, Owner) else user.connect()
    try:
        typ, data = client.select(_q(folder), readonly=True)
        assert typ == "OK", data
        typ, data = client.search(None, "SUBJECT", f'"{subject}"')
        assert typ == "OK" and data[0], (subject, data)
        number = data[0].split()[-1].decode()
        typ, data = client.fetch(number, "(INTERNALDATE BODY.PEEK[])")
        assert typ == "OK", data
        head, raw = data[0]
        date = head.decode().split('INTERNALDATE "', 1)[1].split('"', 1)[0]
        client.close()
        return raw, date
    finally:
        if not isinstance(user, Owner):
            client.logout()


async def _inbox(jmap: Jmap) -> str:
    boxes = await jmap.ok("Mailbox/get", {"ids": None})
    return next(m["id"] for m in boxes["list"] if m["role"] == "inbox")


async def test_email_copy_out_of_a_read_only_share_keeps_everything_mail_copy_01(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """RFC 8621 §4.7: the copy has the original's content, keywords and receivedAt; the
    original stays (a read-only share); the copy is the sharee's own Email."""
    alice, _ = owners
    alice.imap.append(_q("Projects"), "(\\Flagged $label1)", None, _message("plan D"))
    alice.share("Projects", bob.username, "lr")
    ro = _shares(await bob_jmap.session())[alice.user.username]["id"]
    original_id = (await _email_ids(bob_jmap, ro))["plan D"]
    props = ["keywords", "receivedAt", "size", "subject", "blobId"]
    (original,) = (
        await _ok(bob_jmap, ro, "Email/get", {"ids": [original_id], "properties": props})
    )["list"]
    inbox = await _inbox(bob_jmap)
    got = await bob_jmap.ok(
        "Email/copy",
        {"fromAccountId": ro, "create": {"c": {"id": original_id, "mailboxIds": {inbox: True}}}},
    )
    assert got["fromAccountId"] == ro and got["notCreated"] is None, got
    made = got["created"]["c"]
    assert made["size"] == original["size"] and {"id", "blobId", "threadId"} <= set(made)
    (copy,) = (await bob_jmap.ok("Email/get", {"ids": [made["id"]], "properties": props}))["list"]
    assert copy["keywords"] == original["keywords"] and "$flagged" in copy["keywords"]
    assert copy["receivedAt"] == original["receivedAt"]
    assert copy["subject"] == "plan D"
    # the oracle: the same octets and INTERNALDATE in bob's INBOX; alice still has hers
    assert _raw_and_date(bob, "INBOX", "plan D") == _raw_and_date(alice, "Projects", "plan D")
    resp = await bob_jmap.http.get(
        f"/jmap/download/{ro}/{original['blobId']}/m.eml", headers=bob_jmap.auth()
    )
    assert resp.status == 200 and await resp.read() == _raw_and_date(bob, "INBOX", "plan D")[0]


async def test_email_copy_with_on_success_destroy_original_moves_it_mail_copy_02(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """Copied out of a read-write share with onSuccessDestroyOriginal: an implicit Email/set
    destroys the original (its response follows), and the owner's folder no longer has it;
    other keywords and receivedAt may be given."""
    alice, _ = owners
    rw, _ = await _shared(owners, bob, bob_jmap)
    plan = (await _email_ids(bob_jmap, rw))["plan B"]
    inbox = await _inbox(bob_jmap)
    state = await _ok(bob_jmap, rw, "Email/get", {"ids": []})
    body = await bob_jmap.request(
        [
            [
                "Email/copy",
                {
                    "accountId": bob_jmap.account_id,
                    "fromAccountId": rw,
                    "create": {
                        "m": {
                            "id": plan,
                            "mailboxIds": {inbox: True},
                            "keywords": {"$answered": True},
                            "receivedAt": "2025-01-02T03:04:05Z",
                        }
                    },
                    "onSuccessDestroyOriginal": True,
                    "destroyFromIfInState": state["state"],
                },
                "c0",
            ]
        ]
    )
    (name1, copied, _), (name2, destroyed, _) = body["methodResponses"]
    assert (name1, name2) == ("Email/copy", "Email/set"), body
    assert destroyed["accountId"] == rw and destroyed["destroyed"] == [plan], destroyed
    made = copied["created"]["m"]["id"]
    (copy,) = (
        await bob_jmap.ok("Email/get", {"ids": [made], "properties": ["keywords", "receivedAt"]})
    )["list"]
    assert copy == {
        "id": made,
        "keywords": {"$answered": True},
        "receivedAt": "2025-01-02T03:04:05Z",
    }
    assert set(_flags(alice, "Projects")) == {"plan A"}
    assert await _subjects(bob_jmap, rw) == {"plan A"}


async def test_email_copy_into_a_read_only_share_is_forbidden(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    _, carol = owners
    _, ro = await _shared(owners, bob, bob_jmap)
    client = bob.connect()
    client.append("INBOX", None, None, _message("mine"))
    client.logout()
    mine = (await _email_ids(bob_jmap, bob_jmap.account_id))["mine"]
    (notes,) = (await _ok(bob_jmap, ro, "Mailbox/get", {"ids": None}))["list"]
    got = await _ok(
        bob_jmap,
        ro,
        "Email/copy",
        {
            "fromAccountId": bob_jmap.account_id,
            "create": {"c": {"id": mine, "mailboxIds": {notes["id"]: True}}},
        },
    )
    assert got["notCreated"]["c"]["type"] == "forbidden", got
    assert set(_flags(carol, "Notes")) == {"note 1"}


async def test_blob_copy_out_of_a_share_core_bin_04(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """RFC 8620 §6.3: a blob of the share becomes one of the login's own account (the same
    octets), usable there; an id the share cannot read is blobNotFound."""
    alice, _ = owners
    alice.share("Projects", bob.username, "lr")
    share = _shares(await bob_jmap.session())[alice.user.username]["id"]
    plan = (await _email_ids(bob_jmap, share))["plan A"]
    (email,) = (await _ok(bob_jmap, share, "Email/get", {"ids": [plan], "properties": ["blobId"]}))[
        "list"
    ]
    got = await bob_jmap.ok(
        "Blob/copy", {"fromAccountId": share, "blobIds": [email["blobId"], "Gnosuchblob"]}
    )
    new_id = got["copied"][email["blobId"]]
    assert got["notCopied"]["Gnosuchblob"]["type"] == "blobNotFound"
    resp = await bob_jmap.http.get(
        f"/jmap/download/{bob_jmap.account_id}/{new_id}/m.eml", headers=bob_jmap.auth()
    )
    assert resp.status == 200
    assert await resp.read() == _raw_and_date(alice, "Projects", "plan A")[0]
    inbox = await _inbox(bob_jmap)
    imported = await bob_jmap.ok(
        "Email/import", {"emails": {"i": {"blobId": new_id, "mailboxIds": {inbox: True}}}}
    )
    assert "i" in imported["created"], imported


async def test_a_change_by_the_owner_reaches_the_sharees_eventsource_core_push_01(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """The sharee's EventSource carries the share's states with its own (one StateChange
    per event, RFC 8620 §7.1), and a message the owner adds to the shared folder moves the
    share's Email state there; the new state is the one Email/get then answers."""
    alice, _ = owners
    alice.share("Projects", bob.username, "lr")
    share = _shares(await bob_jmap.session())[alice.user.username]["id"]
    before = (await _ok(bob_jmap, share, "Email/get", {"ids": []}))["state"]
    events = await open_events(bob_jmap)
    try:
        first = await events.next()
        assert first.name == "state" and first.id is not None
        assert set(first.data["changed"]) == {bob_jmap.account_id, share}, first.data
        assert first.data["changed"][share]["Email"] == before
        alice.imap.append(_q("Projects"), None, None, _message("plan Z"))
        while True:  # the login's own account may speak too (its watcher's first refresh)
            event = await events.next(timeout=15)
            moved = event.data["changed"].get(share, {}).get("Email")
            if moved is not None and moved != before:
                break
        assert event.id is not None
        now = (await _ok(bob_jmap, share, "Email/get", {"ids": []}))["state"]
        assert moved == now
        assert "plan Z" in await _subjects(bob_jmap, share)
    finally:
        events.resp.close()


async def test_a_shares_changes_and_queries_follow_the_owner_core_chg_01(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """A share has its own states: what the owner adds and removes comes out of the share's
    Email/changes and Mailbox/changes, and Email/query filters in its mailboxes; the login's
    own account's state does not move."""
    alice, _ = owners
    alice.share("Projects", bob.username, "lr")
    share = _shares(await bob_jmap.session())[alice.user.username]["id"]
    ids = await _email_ids(bob_jmap, share)
    (projects,) = (await _ok(bob_jmap, share, "Mailbox/get", {"ids": None}))["list"]
    email_state = (await _ok(bob_jmap, share, "Email/get", {"ids": []}))["state"]
    mailbox_state = (await _ok(bob_jmap, share, "Mailbox/get", {"ids": []}))["state"]
    own_state = (await bob_jmap.ok("Email/get", {"ids": []}))["state"]
    alice.imap.append(_q("Projects"), None, None, _message("plan E"))
    alice.imap.append(_q("Projects"), None, None, _message("plan F"))
    typ, data = alice.imap.select(_q("Projects"))
    assert typ == "OK", data
    typ, data = alice.imap.search(None, "SUBJECT", '"plan B"')
    alice.imap.store(data[0].split()[0].decode(), "+FLAGS", "\\Deleted")
    alice.imap.expunge()
    alice.imap.close()
    changes = await _ok(bob_jmap, share, "Email/changes", {"sinceState": email_state})
    assert changes["destroyed"] == [ids["plan B"]] and len(changes["created"]) == 2, changes
    new = set(changes["created"])
    boxes = await _ok(bob_jmap, share, "Mailbox/changes", {"sinceState": mailbox_state})
    assert boxes["updated"] == [projects["id"]], boxes  # totalEmails 2 -> 3
    found = await _ok(
        bob_jmap,
        share,
        "Email/query",
        {
            "filter": {"inMailbox": projects["id"], "text": "plan"},
            "sort": [{"property": "subject"}],
        },
    )
    assert found["ids"][0] == ids["plan A"] and set(found["ids"][1:]) == new, found
    assert (await bob_jmap.ok("Email/get", {"ids": []}))["state"] == own_state


async def test_a_change_by_the_owner_reaches_the_sharees_websocket_push(
    owners: tuple[Owner, Owner], bob: ImapUser, bob_jmap: Jmap
) -> None:
    """RFC 8887 push: with WebSocketPushEnable, a message the owner adds to the shared
    folder comes as a StateChange of the share's account, with a pushState."""
    alice, _ = owners
    alice.share("Projects", bob.username, "lr")
    share = _shares(await bob_jmap.session())[alice.user.username]["id"]
    before = (await _ok(bob_jmap, share, "Email/get", {"ids": []}))["state"]
    ws = await bob_jmap.http.ws_connect("/jmap/ws/", protocols=("jmap",), headers=bob_jmap.auth())
    try:
        await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
        await wait_for(lambda: watcher_of(bob_jmap, share), what="the share's watcher")
        await asyncio.sleep(0.5)  # its first listing, which a change must come after
        alice.imap.append(_q("Projects"), None, None, _message("plan W"))
        while True:
            async with asyncio.timeout(15):
                change = await ws.receive_json()
            assert change["@type"] == "StateChange" and change["pushState"], change
            moved = change["changed"].get(share, {}).get("Email")
            if moved is not None and moved != before:
                break
        assert moved == (await _ok(bob_jmap, share, "Email/get", {"ids": []}))["state"]
    finally:
        await ws.close()


async def test_a_change_by_the_owner_reaches_the_sharees_push_subscription_core_push_02(
    owners: tuple[Owner, Owner], bob: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """RFC 8620 §7.2: the sharee's PushSubscription carries the share's StateChanges like
    its own account's; a message the owner adds to the shared folder moves the share's
    Email state in a POST, the state Email/get then answers.  Once the owner takes the
    share back, the subscription no longer listens to it."""
    alice, _ = owners
    alice.share("Projects", bob.username, "lr")
    cfg = dataclasses.replace(
        proxy_config(bob, tmp_path),
        push=PushConfig(allowed_url_prefixes=("http://127.0.0.1:",)),
    )
    async with push_receiver() as receiver, proxy_client(cfg) as http:
        jmap = Jmap(http, bob.username, bob.password)
        share = _shares(await jmap.session())[alice.user.username]["id"]
        before = (await _ok(jmap, share, "Email/get", {"ids": []}))["state"]
        create = {"s": {"deviceClientId": "dev", "url": receiver.url, "types": ["Email"]}}
        body = await jmap.request([["PushSubscription/set", {"create": create}, "p"]])
        sub_id = body["methodResponses"][0][1]["created"]["s"]["id"]
        _, verification = await receiver.next()
        update = {sub_id: {"verificationCode": verification["verificationCode"]}}
        body = await jmap.request([["PushSubscription/set", {"update": update}, "p"]])
        assert sub_id in body["methodResponses"][0][1]["updated"], body
        await wait_for(lambda: watcher_of(jmap, share), what="the share's watcher")
        await asyncio.sleep(0.5)  # its first listing, which a change must come after
        alice.imap.append(_q("Projects"), None, None, _message("plan V"))
        while True:  # the login's own account may speak too (its watcher's first refresh)
            _, change = await receiver.next(timeout=15)
            assert change["@type"] == "StateChange", change
            moved = change["changed"].get(share, {}).get("Email")
            if moved is not None and moved != before:
                break
        assert moved == (await _ok(jmap, share, "Email/get", {"ids": []}))["state"]

        alice.unshare("Projects", bob.username)
        assert share not in (await jmap.session())["accounts"]
        # on every instance (each runs a delivery of every subscription it knows; the others
        # hear of the share taken back through the cluster)
        services = push_services(jmap)

        def listening() -> list[tuple[int, int]]:
            return [
                (service.hub.listeners(share), service.hub.listeners(jmap.account_id))
                for service in services
            ]

        await wait_for(lambda: listening() == [(0, 1)] * len(services), what="no share listener")
