"""Other users' folders shared with a login, as JMAP accounts of its session (README
"Shared folders"; ``imapjmap.upstream.shares``, ``imapjmap.http.shares``).

Each test runs against a Dovecot with the ACL plugins and a shared namespace
(``shared/OWNER/``) and against Cyrus (``Other Users/OWNER/``, shared folders are native).
The owners share with ``SETACL`` and unshare with ``DELETEACL`` on plain IMAP connections;
those connections, the owners' and the sharee's, are the oracle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import imaplib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.http.app import make_app
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import MAIL, Jmap, proxy_config

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
async def bob_jmap(bob: ImapUser, tmp_path: Path) -> AsyncIterator[Jmap]:
    app = make_app(proxy_config(bob, tmp_path))
    async with TestClient(TestServer(app)) as client:
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
