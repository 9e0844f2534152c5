"""Email/set update and destroy (RFC 8621 §4.6, EML-SET-*) against the real Dovecot, every
effect checked through the oracle: flags, moves, copies, and that nothing the user did not
destroy is ever expunged."""

from __future__ import annotations

import imaplib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer
from imapjmap.upstream import imap as writes
from tests.conftest import advertises, dovecot_root
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient


def message(subject: str) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\nbody\r\n"
    ).encode()


def append(oracle: imaplib.IMAP4, mailbox: str, subject: str, flags: str | None = None) -> int:
    typ, data = oracle.append(mailbox, flags, None, message(subject))
    assert typ == "OK"
    match = re.search(rb"APPENDUID \d+ (\d+)", data[0] if isinstance(data[0], bytes) else b"")
    assert match
    return int(match.group(1))


def flags_of(oracle: imaplib.IMAP4, mailbox: str) -> dict[str, set[str]]:
    """subject → flags of every message in the mailbox (\\Deleted ones included)."""
    oracle.select(f'"{mailbox}"', readonly=True)
    typ, data = oracle.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out: dict[str, set[str]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split())  # type: ignore[union-attr]
        subject = item[1].decode().split(":", 1)[1].strip()
        out[subject] = flags - {"\\Recent"}  # session-specific, not the message's
    return out


def assert_removed(
    oracle: imaplib.IMAP4, mailbox: str, subject: str, *, moved: bool = False
) -> None:
    """``subject`` is gone from ``mailbox`` — or, on a server without UIDPLUS (and, for a
    move, without MOVE), left marked \\Deleted: the proxy never expunges what it cannot
    name by UID (``upstream.imap``; the user's client expunges it)."""
    flags = flags_of(oracle, mailbox)
    if advertises(oracle, "UIDPLUS") or (moved and advertises(oracle, "MOVE")):
        assert subject not in flags
    else:
        assert flags[subject] == {"\\Deleted"}


async def boxes(jmap: Jmap) -> dict[str, str]:
    got = await jmap.ok("Mailbox/get", {"properties": ["name"]})
    return {m["name"]: m["id"] for m in got["list"]}


async def email_by_subject(jmap: Jmap, subject: str) -> str:
    got = await jmap.ok("Email/query", {"filter": {"subject": subject}})
    assert len(got["ids"]) == 1, got
    return str(got["ids"][0])


async def get(jmap: Jmap, email_id: str) -> dict[str, Any]:
    got = await jmap.ok("Email/get", {"ids": [email_id], "properties": ["mailboxIds", "keywords"]})
    assert got["list"], got
    result: dict[str, Any] = got["list"][0]
    return result


async def test_keyword_patch_sets_flags(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    append(imap_oracle, "INBOX", "kw one")
    email_id = await email_by_subject(jmap, "kw one")
    result = await jmap.ok(
        "Email/set",
        {
            "update": {
                email_id: {
                    "keywords/$seen": True,
                    "keywords/$flagged": True,
                    "keywords/Custom": True,
                }
            }
        },
    )
    assert result["updated"] == {email_id: None}
    assert flags_of(imap_oracle, "INBOX")["kw one"] >= {
        "\\Seen",
        "\\Flagged",
        "custom",
    } or flags_of(imap_oracle, "INBOX")["kw one"] >= {"\\Seen", "\\Flagged", "Custom"}
    assert (await get(jmap, email_id))["keywords"] == {
        "$seen": True,
        "$flagged": True,
        "custom": True,
    }
    await jmap.ok("Email/set", {"update": {email_id: {"keywords": {"$answered": True}}}})
    assert flags_of(imap_oracle, "INBOX")["kw one"] == {"\\Answered"}


async def test_concurrent_external_flag_is_not_clobbered(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client flags the message between the proxy's sync and its STORE (injected
    right before the STORE): UNCHANGEDSINCE reports it [MODIFIED], and the retry touches
    only the keyword the JMAP client changed."""
    uid = append(imap_oracle, "INBOX", "race")
    email_id = await email_by_subject(jmap, "race")
    original = writes.store_flags
    calls: list[Any] = []

    async def racing_store(
        session: Any, uids: Any, op: str, flags: Any, unchanged_since: int | None = None
    ) -> Any:
        if not calls:
            imap_oracle.select("INBOX")
            imap_oracle.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
        result = await original(session, uids, op, flags, unchanged_since)
        calls.append((op, unchanged_since, set(result.modified)))
        return result

    monkeypatch.setattr(writes, "store_flags", racing_store)
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords": {"$seen": True}}}})
    assert email_id in result["updated"]
    if advertises(imap_oracle, "CONDSTORE"):
        assert calls[0][1] is not None and calls[0][2] == {uid}  # refused: modified meanwhile
    else:  # no UNCHANGEDSINCE: the STORE only adds \Seen, so the other flag is kept anyway
        assert calls[0][1] is None
    assert flags_of(imap_oracle, "INBOX")["race"] == {"\\Seen", "\\Flagged"}
    assert (await get(jmap, email_id))["keywords"] == {"$seen": True, "$flagged": True}


async def test_move_uses_one_mailbox_change(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    append(imap_oracle, "INBOX", "mover")
    email_id = await email_by_subject(jmap, "mover")
    ids = await boxes(jmap)
    result = await jmap.ok(
        "Email/set",
        {
            "update": {
                email_id: {f"mailboxIds/{ids['Inbox']}": None, f"mailboxIds/{ids['Archive']}": True}
            }
        },
    )
    assert email_id in result["updated"]
    assert_removed(imap_oracle, "INBOX", "mover", moved=True)
    assert "mover" in flags_of(imap_oracle, "Archive")
    assert (await get(jmap, email_id))["mailboxIds"] == {ids["Archive"]: True}
    assert await email_by_subject(jmap, "mover") == email_id


async def test_add_and_remove_mailbox_keeps_others_deleted_message(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """Removal is UID EXPUNGE of our own UIDs: a message another client marked \\Deleted in
    the same mailbox survives (docs/design.md, "Writes")."""
    append(imap_oracle, "INBOX", "ours")
    other_uid = append(imap_oracle, "INBOX", "theirs")
    email_id = await email_by_subject(jmap, "ours")
    ids = await boxes(jmap)
    await jmap.ok("Email/set", {"update": {email_id: {f"mailboxIds/{ids['Trash']}": True}}})
    assert (await get(jmap, email_id))["mailboxIds"] == {ids["Inbox"]: True, ids["Trash"]: True}
    assert "ours" in flags_of(imap_oracle, "Trash")
    imap_oracle.select("INBOX")
    imap_oracle.uid("STORE", str(other_uid), "+FLAGS", "(\\Deleted)")
    result = await jmap.ok(
        "Email/set", {"update": {email_id: {f"mailboxIds/{ids['Inbox']}": None}}}
    )
    assert email_id in result["updated"]
    assert_removed(imap_oracle, "INBOX", "ours")
    assert flags_of(imap_oracle, "INBOX")["theirs"] == {"\\Deleted"}


async def test_destroy_removes_every_copy_only(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    append(imap_oracle, "INBOX", "victim")
    other_uid = append(imap_oracle, "INBOX", "bystander")
    email_id = await email_by_subject(jmap, "victim")
    ids = await boxes(jmap)
    await jmap.ok("Email/set", {"update": {email_id: {f"mailboxIds/{ids['Archive']}": True}}})
    imap_oracle.select("INBOX")
    imap_oracle.uid("STORE", str(other_uid), "+FLAGS", "(\\Deleted)")
    result = await jmap.ok("Email/set", {"destroy": [email_id]})
    assert result["destroyed"] == [email_id]
    assert_removed(imap_oracle, "INBOX", "victim")
    assert_removed(imap_oracle, "Archive", "victim")
    assert flags_of(imap_oracle, "INBOX")["bystander"] == {"\\Deleted"}
    got = await jmap.ok("Email/get", {"ids": [email_id]})
    assert got["notFound"] == [email_id]


@pytest.mark.parametrize(
    "patch,prop",
    [
        ({"mailboxIds": {}}, "mailboxIds"),
        ({"mailboxIds/Mnothere": True}, "mailboxIds"),
        ({"keywords/bad(kw": True}, "keywords"),
        ({"keywords": {"$seen": False}}, "keywords"),
        ({"subject": "changed"}, "subject"),
    ],
)
async def test_invalid_updates(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, patch: dict[str, Any], prop: str
) -> None:
    append(imap_oracle, "INBOX", "target")
    email_id = await email_by_subject(jmap, "target")
    result = await jmap.ok("Email/set", {"update": {email_id: patch}})
    error = result["notUpdated"][email_id]
    assert error["type"] == "invalidProperties" and prop in error["properties"]
    assert flags_of(imap_oracle, "INBOX")["target"] == set()


async def test_not_found_will_destroy_and_state(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    append(imap_oracle, "INBOX", "both")
    email_id = await email_by_subject(jmap, "both")
    result = await jmap.ok(
        "Email/set",
        {
            "update": {"Enothere": {"keywords/$seen": True}, email_id: {"keywords/$seen": True}},
            "destroy": [email_id, "Enothere2"],
        },
    )
    assert result["notUpdated"]["Enothere"]["type"] == "notFound"
    assert result["notUpdated"][email_id]["type"] == "willDestroy"
    assert result["notDestroyed"]["Enothere2"]["type"] == "notFound"
    assert result["destroyed"] == [email_id]
    assert result["oldState"] != result["newState"]
    name, args = await jmap.call("Email/set", {"ifInState": result["oldState"], "destroy": ["x"]})
    assert (name, args["type"]) == ("error", "stateMismatch")


async def test_create_of_bytes_the_server_holds_is_already_exists(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, imap_backend: Any
) -> None:
    """Checklist §2.3 (alreadyExists **M** carry existingId) and §12.8: a create whose
    message is byte for byte one the server holds (the client set Message-ID, Date and
    receivedAt) becomes, on Cyrus (one EMAILID per content), a copy of the existing Email:
    refused with ``existingId``, and the copies it wrote removed (CORE-SET-02), also from
    the second mailbox (UID COPY, found by COPYUID).  Dovecot makes a second Email."""
    ids = await boxes(jmap)
    obj: dict[str, Any] = {
        "from": [{"email": "a@example.org"}],
        "to": [{"email": "b@example.org"}],
        "subject": "twice",
        "messageId": ["twice@example.org"],
        "sentAt": "2023-05-06T07:08:09Z",
        "receivedAt": "2023-05-06T07:08:09Z",
        "bodyValues": {"t": {"value": "the same bytes"}},
        "textBody": [{"partId": "t", "type": "text/plain"}],
    }
    first = await jmap.ok(
        "Email/set", {"create": {"c": {**obj, "mailboxIds": {ids["Inbox"]: True}}}}
    )
    first_id = first["created"]["c"]["id"]
    again = {**obj, "mailboxIds": {ids["Archive"]: True, ids["Drafts"]: True}}
    second = await jmap.ok("Email/set", {"create": {"c": again}})
    if isinstance(imap_backend, CyrusServer):
        assert second["created"] is None
        assert second["notCreated"] == {"c": {"type": "alreadyExists", "existingId": first_id}}
        assert flags_of(imap_oracle, "Archive") == {} and flags_of(imap_oracle, "Drafts") == {}
        assert flags_of(imap_oracle, "INBOX") == {"twice": set()}
        assert (await get(jmap, first_id))["mailboxIds"] == {ids["Inbox"]: True}
        return
    assert second["notCreated"] is None and second["created"]["c"]["id"] != first_id
    for mailbox in ("INBOX", "Archive", "Drafts"):
        assert flags_of(imap_oracle, mailbox) == {"twice": set()}


@pytest.fixture(scope="module")
def no_uidplus() -> Iterator[DovecotServer]:
    with dovecot_root() as root:
        server = DovecotServer.start(root, remove_capabilities=("UIDPLUS", "MOVE"))
        yield server
        server.stop()


@pytest.fixture
async def plain_client(
    no_uidplus: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    no_uidplus.add_user("plain", "plain-pw")

    class User:
        username, password, host, port = "plain", "plain-pw", no_uidplus.host, no_uidplus.port

    async with proxy_client(proxy_config(User, tmp_path)) as http:
        jmap = Jmap(http, "plain", "plain-pw")
        await jmap.session()
        yield jmap


async def test_without_uidplus_removal_only_marks_deleted(
    plain_client: Jmap, no_uidplus: DovecotServer
) -> None:
    """No UIDPLUS: no UID EXPUNGE, and a bare EXPUNGE could remove other clients'
    \\Deleted messages — so our copy is marked \\Deleted (hidden from JMAP at once) and left
    for the user's client to expunge."""
    oracle = no_uidplus.connect("plain", "plain-pw")
    oracle.append("INBOX", None, None, message("keep me"))
    email_id = await email_by_subject(plain_client, "keep me")
    ids = await boxes(plain_client)
    result = await plain_client.ok(
        "Email/set",
        {
            "update": {
                email_id: {f"mailboxIds/{ids['Inbox']}": None, f"mailboxIds/{ids['Archive']}": True}
            }
        },
    )
    assert email_id in result["updated"]
    assert flags_of(oracle, "INBOX")["keep me"] == {"\\Deleted"}
    assert "keep me" in flags_of(oracle, "Archive")
    assert (await get(plain_client, email_id))["mailboxIds"] == {ids["Archive"]: True}
    oracle.logout()
