"""Email/import, Email/parse and Email/copy (RFC 8621 §4.7-§4.9, checklist §12.8) through the
proxy in front of the real Dovecot; every effect of an import is checked with the oracle."""

from __future__ import annotations

import email.utils
import imaplib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer
from tests.conftest import advertises, dovecot_root
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.test_blobs import MESSAGE, PNG, USING_BLOB, download, uploaded

PLAIN = (
    b"From: Carol <carol@example.org>\r\nTo: dave@example.org\r\nSubject: Imported\r\n"
    b"Date: Tue, 3 Mar 2026 09:00:00 +0000\r\nMessage-ID: <imported@example.org>\r\n"
    b"\r\nHello from an import.\r\n"
)


async def mailbox_ids(jmap: Jmap) -> dict[str, str]:
    got = await jmap.ok("Mailbox/get", {"properties": ["name"]})
    return {m["name"]: m["id"] for m in got["list"]}


def fetch(oracle: imaplib.IMAP4, mailbox: str) -> list[dict[str, Any]]:
    """Every message of ``mailbox``: uid, flags, INTERNALDATE (epoch seconds), bytes."""
    typ, _ = oracle.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK"
    typ, data = oracle.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    out: list[dict[str, Any]] = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        head = item[0].decode()
        match = re.search(r'INTERNALDATE "([^"]+)"', head)
        assert match, head
        parsed = email.utils.parsedate_tz(_rfc2822(match[1]))
        assert parsed is not None, head
        stamp = email.utils.mktime_tz(parsed)
        flags = re.search(r"FLAGS \(([^)]*)\)", head)
        uid = re.search(r"UID (\d+)", head)
        assert flags and uid, head
        out.append(
            {
                "uid": int(uid[1]),
                "flags": set(flags[1].split()) - {"\\Recent"},
                "date": stamp,
                "raw": item[1],
            }
        )
    return out


def _rfc2822(internaldate: str) -> str:
    """``03-Mar-2026 09:00:00 +0000`` → ``03 Mar 2026 09:00:00 +0000`` for email.utils."""
    return internaldate.replace("-", " ", 2)


def count(oracle: imaplib.IMAP4, mailbox: str) -> int:
    typ, data = oracle.status(f'"{mailbox}"', "(MESSAGES)")
    assert typ == "OK"
    line = data[0]
    assert isinstance(line, bytes)
    found = re.search(rb"MESSAGES (\d+)", line)
    assert found
    return int(found[1])


# -- Email/import -----------------------------------------------------------------------------


async def test_import_into_two_mailboxes_checked_over_imap(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    boxes = await mailbox_ids(jmap)
    blob = await uploaded(jmap, PLAIN, "message/rfc822")
    old = await jmap.ok("Email/get", {"ids": []})
    body = await jmap.request(
        [
            [
                "Email/import",
                {
                    "accountId": jmap.account_id,
                    "emails": {
                        "k1": {
                            "blobId": blob["blobId"],
                            "mailboxIds": {boxes["Inbox"]: True, boxes["Archive"]: True},
                            "keywords": {"$seen": True, "$Flagged": True, "project-x": True},
                            "receivedAt": "2024-01-15T10:30:00Z",
                        }
                    },
                },
                "i",
            ]
        ],
        createdIds={},
    )
    (name, result, _) = body["methodResponses"][0]
    assert name == "Email/import", result
    assert result["notCreated"] is None and result["oldState"] == old["state"]
    assert result["newState"] != result["oldState"]
    created = result["created"]["k1"]
    assert set(created) == {"id", "blobId", "threadId", "size"}
    assert created["size"] == len(PLAIN)
    assert body["createdIds"] == {"k1": created["id"]}  # CORE-CID-04

    when = 1705314600  # 2024-01-15T10:30:00Z
    for mailbox in ("INBOX", "Archive"):
        (message,) = fetch(imap_oracle, mailbox)
        assert message["raw"] == PLAIN
        assert message["date"] == when
        assert message["flags"] == {"\\Seen", "\\Flagged", "project-x"}
    got = (
        await jmap.ok(
            "Email/get",
            {
                "ids": [created["id"]],
                "properties": [
                    "mailboxIds",
                    "keywords",
                    "receivedAt",
                    "blobId",
                    "threadId",
                    "subject",
                ],
            },
        )
    )["list"][0]
    assert got["mailboxIds"] == {boxes["Inbox"]: True, boxes["Archive"]: True}
    assert got["keywords"] == {"$seen": True, "$flagged": True, "project-x": True}
    assert got["receivedAt"] == "2024-01-15T10:30:00Z"
    assert (got["blobId"], got["threadId"]) == (created["blobId"], created["threadId"])
    resp = await download(jmap, created["blobId"], "message/rfc822")
    assert await resp.read() == PLAIN  # CORE-BIN-05: the Email's blob is the exact octets


async def test_import_blob_uploaded_in_the_same_request_core_cid_01(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    inbox = (await mailbox_ids(jmap))["Inbox"]
    text = MESSAGE.decode()
    body = await jmap.request(
        [
            [
                "Blob/upload",
                {
                    "accountId": jmap.account_id,
                    "create": {"b": {"data": [{"data:asText": text}], "type": "message/rfc822"}},
                },
                "u",
            ],
            [
                "Email/import",
                {
                    "accountId": jmap.account_id,
                    "emails": {"m": {"blobId": "#b", "mailboxIds": {inbox: True}}},
                },
                "i",
            ],
            [
                "Email/get",
                {
                    "accountId": jmap.account_id,
                    "ids": ["#m"],
                    "properties": ["subject", "keywords", "hasAttachment"],
                },
                "g",
            ],
        ],
        using=USING_BLOB,
    )
    _, (_, imported, _), (_, got, _) = body["methodResponses"]
    assert imported["created"]["m"]["size"] == len(MESSAGE), imported
    assert got["list"][0]["subject"] == "With a picture"
    assert got["list"][0]["keywords"] == {} and got["list"][0]["hasAttachment"] is True
    (message,) = fetch(imap_oracle, "INBOX")
    assert message["raw"] == MESSAGE and message["flags"] == set()


def deduplicates(backend: Any) -> bool:
    """Cyrus gives byte-identical messages ONE EMAILID (its message GUID): by our id rule
    (EMAILID first) a new APPEND of bytes it holds is a copy of the Email that exists.
    Dovecot's X-GUID is new for each APPEND, so there the same bytes make a new Email."""
    return isinstance(backend, CyrusServer)


async def import_one(jmap: Jmap, blob_id: str, *mailboxes: str, **extra: Any) -> dict[str, Any]:
    """One Email/import of ``blob_id`` into ``mailboxes``: its created object or SetError."""
    item = {"blobId": blob_id, "mailboxIds": dict.fromkeys(mailboxes, True), **extra}
    result = await jmap.ok("Email/import", {"emails": {"c": item}})
    return (result["created"] or result["notCreated"])["c"]  # type: ignore[no-any-return]


async def test_import_of_a_message_blob_makes_a_new_email(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, imap_backend: Any
) -> None:
    """Checklist §12.8 / §2.3: a server that holds one Email per content answers
    ``alreadyExists`` with ``existingId`` (RFC 8621 §4.8), and the copy is taken back
    (CORE-SET-02: a refused create leaves nothing behind)."""
    boxes = await mailbox_ids(jmap)
    assert imap_oracle.append("INBOX", None, None, PLAIN)[0] == "OK"
    (original,) = (await jmap.ok("Email/query", {}))["ids"]
    blob_id = (await jmap.ok("Email/get", {"ids": [original], "properties": ["blobId"]}))["list"][
        0
    ]["blobId"]
    result = await import_one(jmap, blob_id, boxes["Drafts"], keywords={"$draft": True})
    if deduplicates(imap_backend):
        assert result == {"type": "alreadyExists", "existingId": original}
        assert fetch(imap_oracle, "Drafts") == []  # no copy, not even a \Deleted one
        (kept,) = fetch(imap_oracle, "INBOX")
        assert kept["raw"] == PLAIN and kept["flags"] == set()
        got = await jmap.ok("Email/get", {"ids": [original], "properties": ["mailboxIds"]})
        assert got["list"][0]["mailboxIds"] == {boxes["Inbox"]: True}
        return
    new = result["id"]
    assert new != original  # a new APPEND of the same bytes is a new message
    (message,) = fetch(imap_oracle, "Drafts")
    assert message["raw"] == PLAIN and message["flags"] == {"\\Draft"}


async def test_import_of_the_same_bytes_twice(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, imap_backend: Any
) -> None:
    """Checklist §12.8 (Email/import: "If the server forbids duplicates it uses
    `alreadyExists` with `existingId`") and §2.3 (alreadyExists **M** carry existingId);
    CORE-SET-02: the refused import leaves no copy behind, not even a \\Deleted one where
    UIDPLUS lets us expunge our own UID.  Dovecot makes a second Email (new X-GUID)."""
    inbox = (await mailbox_ids(jmap))["Inbox"]
    blob_id = (await uploaded(jmap, PLAIN, "message/rfc822"))["blobId"]
    when = {"receivedAt": "2024-01-15T10:30:00Z"}
    first = await import_one(jmap, blob_id, inbox, **when)
    second = await import_one(jmap, blob_id, inbox, **when)
    if deduplicates(imap_backend):
        assert second == {"type": "alreadyExists", "existingId": first["id"]}
        assert advertises(imap_oracle, "UIDPLUS")
        (kept,) = fetch(imap_oracle, "INBOX")
        assert kept["raw"] == PLAIN and kept["flags"] == set()
    else:
        assert set(second) == {"id", "blobId", "threadId", "size"}
        assert second["id"] != first["id"]
        assert [m["raw"] for m in fetch(imap_oracle, "INBOX")] == [PLAIN, PLAIN]
    ids = (await jmap.ok("Email/query", {}))["ids"]
    assert sorted(ids) == sorted({first["id"], second.get("id", first["id"])})
    got = await jmap.ok("Email/get", {"ids": [first["id"]], "properties": ["mailboxIds"]})
    assert got["list"][0]["mailboxIds"] == {inbox: True}


async def test_import_of_the_same_bytes_into_other_mailboxes(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, imap_backend: Any
) -> None:
    """Checklist §12.8 / §2.3 (alreadyExists with existingId) when the existing Email is in
    another mailbox than the import's: the Email would merely gain mailboxes, but the
    client asked for a new Email, so the import is refused and both copies it wrote (the
    APPEND and the UID COPY, found by COPYUID) are removed (CORE-SET-02)."""
    boxes = await mailbox_ids(jmap)
    blob_id = (await uploaded(jmap, PLAIN, "message/rfc822"))["blobId"]
    when = {"receivedAt": "2024-01-15T10:30:00Z"}
    first = await import_one(jmap, blob_id, boxes["Inbox"], **when)
    second = await import_one(jmap, blob_id, boxes["Archive"], boxes["Drafts"], **when)
    if deduplicates(imap_backend):
        assert second == {"type": "alreadyExists", "existingId": first["id"]}
        assert fetch(imap_oracle, "Archive") == [] and fetch(imap_oracle, "Drafts") == []
        assert [m["raw"] for m in fetch(imap_oracle, "INBOX")] == [PLAIN]
        wanted = {first["id"]: {boxes["Inbox"]: True}}
    else:
        assert second["id"] != first["id"]
        for mailbox in ("INBOX", "Archive", "Drafts"):
            assert [m["raw"] for m in fetch(imap_oracle, mailbox)] == [PLAIN]
        wanted = {
            first["id"]: {boxes["Inbox"]: True},
            second["id"]: {boxes["Archive"]: True, boxes["Drafts"]: True},
        }
    got = await jmap.ok("Email/get", {"ids": list(wanted), "properties": ["mailboxIds"]})
    assert {e["id"]: e["mailboxIds"] for e in got["list"]} == wanted


async def test_import_of_the_same_bytes_twice_in_one_call(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, imap_backend: Any
) -> None:
    """Checklist §12.8 / §2.3: two imports of one call that become ONE Email: the first
    creates it, the second is ``alreadyExists`` naming it, and only its copy is removed."""
    boxes = await mailbox_ids(jmap)
    blob_id = (await uploaded(jmap, PLAIN, "message/rfc822"))["blobId"]
    item = {"blobId": blob_id, "receivedAt": "2024-01-15T10:30:00Z"}
    result = await jmap.ok(
        "Email/import",
        {
            "emails": {
                "a": {**item, "mailboxIds": {boxes["Inbox"]: True}},
                "b": {**item, "mailboxIds": {boxes["Inbox"]: True, boxes["Archive"]: True}},
            }
        },
    )
    first = result["created"]["a"]["id"]
    if deduplicates(imap_backend):
        assert set(result["created"]) == {"a"}
        assert result["notCreated"] == {"b": {"type": "alreadyExists", "existingId": first}}
        assert [m["raw"] for m in fetch(imap_oracle, "INBOX")] == [PLAIN]
        assert fetch(imap_oracle, "Archive") == []
    else:
        assert result["notCreated"] is None and result["created"]["b"]["id"] != first
        assert [m["raw"] for m in fetch(imap_oracle, "INBOX")] == [PLAIN, PLAIN]
        assert [m["raw"] for m in fetch(imap_oracle, "Archive")] == [PLAIN]
    got = await jmap.ok("Email/get", {"ids": [first], "properties": ["mailboxIds"]})
    assert got["list"][0]["mailboxIds"] == {boxes["Inbox"]: True}


async def test_import_errors(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    boxes = await mailbox_ids(jmap)
    inbox = boxes["Inbox"]
    good = (await uploaded(jmap, PLAIN))["blobId"]
    png = (await uploaded(jmap, PNG, "image/png"))["blobId"]
    result = await jmap.ok(
        "Email/import",
        {
            "emails": {
                "nosuchblob": {"blobId": "Unosuchblob", "mailboxIds": {inbox: True}},
                "unknowncid": {"blobId": "#nothing", "mailboxIds": {inbox: True}},
                "nomailbox": {"blobId": good, "mailboxIds": {}},
                "badmailbox": {"blobId": good, "mailboxIds": {"Mnosuchmailbox": True}},
                "badkeyword": {
                    "blobId": good,
                    "mailboxIds": {inbox: True},
                    "keywords": {"a(b": True},
                },
                "baddate": {"blobId": good, "mailboxIds": {inbox: True}, "receivedAt": "yesterday"},
                "unknownprop": {"blobId": good, "mailboxIds": {inbox: True}, "subject": "x"},
                "notamessage": {"blobId": png, "mailboxIds": {inbox: True}},
            }
        },
    )
    errors = result["notCreated"]
    assert result["created"] is None
    # RFC 8621 §4.8: a blobId "not found" is invalidProperties (blobNotFound is Email/set's)
    for key in ("nosuchblob", "unknowncid"):
        assert errors[key]["type"] == "invalidProperties", errors[key]
        assert errors[key]["properties"] == ["blobId"]
    for key, prop in (
        ("nomailbox", "mailboxIds"),
        ("badmailbox", "mailboxIds"),
        ("badkeyword", "keywords"),
        ("baddate", "receivedAt"),
        ("unknownprop", "subject"),
    ):
        assert errors[key]["type"] == "invalidProperties", key
        assert errors[key]["properties"] == [prop], key
    assert errors["notamessage"]["type"] == "invalidEmail"
    assert result["oldState"] == result["newState"]
    assert count(imap_oracle, "INBOX") == 0  # nothing landed


async def test_import_state_mismatch_core_set_01(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    inbox = (await mailbox_ids(jmap))["Inbox"]
    good = (await uploaded(jmap, PLAIN))["blobId"]
    name, body = await jmap.call(
        "Email/import",
        {"ifInState": "nope", "emails": {"a": {"blobId": good, "mailboxIds": {inbox: True}}}},
    )
    assert (name, body["type"]) == ("error", "stateMismatch")
    assert count(imap_oracle, "INBOX") == 0
    state = (await jmap.ok("Email/get", {"ids": []}))["state"]
    result = await jmap.ok(
        "Email/import",
        {"ifInState": state, "emails": {"a": {"blobId": good, "mailboxIds": {inbox: True}}}},
    )
    assert result["oldState"] == state and "a" in result["created"]


async def test_import_argument_errors(jmap: Jmap) -> None:
    args: dict[str, Any]
    for args in (
        {},
        {"emails": []},
        {"emails": {"a": 1}},
        {"emails": {}, "colour": 1},
        {"emails": {"not an id": {}}},
        {"emails": {}, "ifInState": 3},
    ):
        name, body = await jmap.call("Email/import", args)
        assert (name, body["type"]) == ("error", "invalidArguments"), args
    many: dict[str, Any] = {f"c{i}": {} for i in range(1001)}
    name, body = await jmap.call("Email/import", {"emails": many})
    assert body["type"] == "requestTooLarge"


async def test_import_over_quota_is_over_quota(
    proxy_http: Any, imap_user: Any, dovecot: DovecotServer
) -> None:
    # a 1 KiB quota for this user, set before anyone logs in (Dovecot reads it at login)
    path = dovecot.passwd_path / imap_user.username
    path.write_text(path.read_text().rstrip("\n") + "::userdb_quota_rule=*:storage=1K\n")
    jmap = Jmap(proxy_http, imap_user.username, imap_user.password)
    await jmap.session()
    oracle = imap_user.connect()
    try:
        typ, data = oracle.getquotaroot("INBOX")
        assert typ == "OK" and b"STORAGE 0 1)" in b" ".join(data[1]), data
        boxes = await mailbox_ids(jmap)
        inbox, archive = boxes["Inbox"], boxes["Archive"]
        big = (await uploaded(jmap, PLAIN + b"x" * 4096))["blobId"]
        # one copy fits in the quota, two do not: the COPY is refused after the APPEND
        pair = (await uploaded(jmap, PLAIN + b"y" * (600 - len(PLAIN))))["blobId"]
        small = (await uploaded(jmap, PLAIN))["blobId"]
        result = await jmap.ok(
            "Email/import",
            {
                "emails": {
                    "big": {"blobId": big, "mailboxIds": {inbox: True}},
                    "pair": {"blobId": pair, "mailboxIds": {inbox: True, archive: True}},
                    "small": {"blobId": small, "mailboxIds": {inbox: True}},
                }
            },
        )
        assert result["notCreated"]["big"]["type"] == "overQuota"
        assert result["notCreated"]["pair"]["type"] == "overQuota"
        assert list(result["created"]) == ["small"]
        # the half-done import was taken back: each import lands whole or not at all
        assert [m["raw"] for m in fetch(oracle, "INBOX")] == [PLAIN]
        assert fetch(oracle, "Archive") == []
        emails = await jmap.ok("Email/query", {})
        assert emails["ids"] == [result["created"]["small"]["id"]]
    finally:
        oracle.logout()


# -- servers without UIDPLUS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_uidplus() -> Iterator[DovecotServer]:
    # not under pytest's temporary directory: another pytest run starting makes that
    # unreadable to Dovecot's auth process (tests.conftest.dovecot_root)
    with dovecot_root("dovecot-nouidplus") as root:
        server = DovecotServer.start(root, remove_capabilities=("UIDPLUS",))
        yield server
        server.stop()


@pytest.fixture
async def plain_jmap(
    no_uidplus: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    no_uidplus.add_user("importer", "importer-pw")

    class User:
        host, port = no_uidplus.host, no_uidplus.port

    async with proxy_client(proxy_config(User(), tmp_path)) as http:
        client = Jmap(http, "importer", "importer-pw")
        await client.session()
        yield client


async def test_import_without_uidplus_finds_the_message_by_message_id(
    plain_jmap: Jmap, no_uidplus: DovecotServer
) -> None:
    oracle = imaplib.IMAP4(no_uidplus.host, no_uidplus.port)
    oracle.login("importer", "importer-pw")
    try:
        assert "UIDPLUS" not in oracle.capabilities
        # an older message with the same Message-ID must not be taken for the new one
        assert oracle.append("INBOX", None, None, PLAIN)[0] == "OK"
        boxes = await mailbox_ids(plain_jmap)
        (older,) = (await plain_jmap.ok("Email/query", {}))["ids"]
        blob_id = (await uploaded(plain_jmap, PLAIN))["blobId"]
        result = await plain_jmap.ok(
            "Email/import",
            {
                "emails": {
                    "n": {
                        "blobId": blob_id,
                        "mailboxIds": {boxes["Inbox"]: True, boxes["Archive"]: True},
                        "keywords": {"$seen": True},
                    }
                }
            },
        )
        new = result["created"]["n"]["id"]
        assert new != older
        got = (
            await plain_jmap.ok(
                "Email/get", {"ids": [new], "properties": ["mailboxIds", "keywords"]}
            )
        )["list"][0]
        assert got == {
            "id": new,
            "mailboxIds": {boxes["Inbox"]: True, boxes["Archive"]: True},
            "keywords": {"$seen": True},
        }
        assert [m["flags"] for m in fetch(oracle, "INBOX")] == [set(), {"\\Seen"}]
        (archived,) = fetch(oracle, "Archive")
        assert archived["raw"] == PLAIN and archived["flags"] == {"\\Seen"}
    finally:
        oracle.logout()


# -- Email/parse ------------------------------------------------------------------------------


async def test_parse_an_uploaded_message_with_an_attachment(jmap: Jmap) -> None:
    blob_id = (await uploaded(jmap, MESSAGE, "message/rfc822"))["blobId"]
    result = await jmap.ok("Email/parse", {"blobIds": [blob_id], "fetchTextBodyValues": True})
    assert result["notParsable"] is None and result["notFound"] is None
    parsed = result["parsed"][blob_id]
    assert set(parsed) == {
        "messageId",
        "inReplyTo",
        "references",
        "sender",
        "from",
        "to",
        "cc",
        "bcc",
        "replyTo",
        "subject",
        "sentAt",
        "hasAttachment",
        "preview",
        "bodyValues",
        "textBody",
        "htmlBody",
        "attachments",
    }
    assert parsed["subject"] == "With a picture"
    assert parsed["from"] == [{"name": "Alice", "email": "alice@example.org"}]
    assert parsed["messageId"] == ["pic@example.org"]
    assert parsed["hasAttachment"] is True and parsed["preview"] == "See the picture."
    (text,) = parsed["textBody"]
    assert parsed["bodyValues"][text["partId"]]["value"] == "See the picture."
    (attachment,) = parsed["attachments"]
    assert (attachment["name"], attachment["type"], attachment["size"]) == (
        "dot.png",
        "image/png",
        len(PNG),
    )
    resp = await download(jmap, attachment["blobId"], "image/png", "dot.png")
    assert resp.status == 200 and await resp.read() == PNG  # CORE-BIN-05


async def test_parse_metadata_is_null(jmap: Jmap) -> None:
    blob_id = (await uploaded(jmap, PLAIN))["blobId"]
    result = await jmap.ok(
        "Email/parse",
        {
            "blobIds": [blob_id],
            "properties": [
                "id",
                "blobId",
                "threadId",
                "mailboxIds",
                "keywords",
                "receivedAt",
                "size",
                "subject",
                "header:X-Missing:asText",
                "bodyStructure",
            ],
            "bodyProperties": ["partId", "blobId"],
        },
    )
    parsed = result["parsed"][blob_id]
    assert parsed["id"] is None and parsed["threadId"] is None
    assert parsed["mailboxIds"] is None and parsed["keywords"] is None
    assert parsed["receivedAt"] is None
    assert (parsed["blobId"], parsed["size"]) == (blob_id, len(PLAIN))
    assert parsed["subject"] == "Imported" and parsed["header:X-Missing:asText"] is None
    part = parsed["bodyStructure"]
    assert part["partId"] == "1" and part["blobId"].startswith("B" + blob_id)
    resp = await download(jmap, part["blobId"], "text/plain")
    assert await resp.read() == b"Hello from an import.\r\n"


async def test_parse_not_parsable_not_found_and_limits(jmap: Jmap) -> None:
    png = (await uploaded(jmap, PNG, "image/png"))["blobId"]
    result = await jmap.ok("Email/parse", {"blobIds": [png, "Unosuchblob", "Gnosuchemail"]})
    assert result["parsed"] is None
    assert result["notParsable"] == [png]
    assert result["notFound"] == ["Unosuchblob", "Gnosuchemail"]
    for args in (
        {},
        {"blobIds": "x"},
        {"blobIds": [], "properties": ["nope"]},
        {"blobIds": [], "bodyProperties": ["nope"]},
        {"blobIds": [], "colour": 1},
    ):
        name, body = await jmap.call("Email/parse", args)
        assert (name, body["type"]) == ("error", "invalidArguments"), args
    name, body = await jmap.call("Email/parse", {"blobIds": [f"U{i}" for i in range(1001)]})
    assert body["type"] == "requestTooLarge"


async def test_parse_a_stored_email_and_an_attached_message(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    outer = (
        b"From: x@example.org\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: text/plain\r\n\r\nsee below\r\n--B\r\n"
        b"Content-Type: message/rfc822\r\n\r\n" + PLAIN + b"\r\n--B--\r\n"
    )
    assert imap_oracle.append("INBOX", None, None, outer)[0] == "OK"
    (email_id,) = (await jmap.ok("Email/query", {}))["ids"]
    email_obj = (
        await jmap.ok("Email/get", {"ids": [email_id], "properties": ["blobId", "attachments"]})
    )["list"][0]
    inner = email_obj["attachments"][0]["blobId"]
    result = await jmap.ok(
        "Email/parse",
        {"blobIds": [email_obj["blobId"], inner], "properties": ["subject", "textBody"]},
    )
    assert result["parsed"][email_obj["blobId"]]["subject"] == "Fwd"
    assert result["parsed"][inner]["subject"] == "Imported"
    inner_text = result["parsed"][inner]["textBody"][0]["blobId"]
    resp = await download(jmap, inner_text, "text/plain")
    assert await resp.read() == b"Hello from an import.\r\n"


# -- Email/copy -------------------------------------------------------------------------------


async def test_copy_within_one_account_is_invalid_arguments_core_copy_01(jmap: Jmap) -> None:
    name, body = await jmap.call(
        "Email/copy",
        {"fromAccountId": jmap.account_id, "create": {"c": {"id": "Mx", "mailboxIds": {}}}},
    )
    assert (name, body["type"]) == ("error", "invalidArguments")
    assert "Email/set" in body["description"]


async def test_copy_from_an_unknown_account_core_copy_01(jmap: Jmap) -> None:
    name, body = await jmap.call(
        "Email/copy",
        {
            "fromAccountId": "Asomeoneelse",
            "create": {"c": {"id": "Mx"}},
            "onSuccessDestroyOriginal": True,
        },
    )
    assert (name, body["type"]) == ("error", "fromAccountNotFound")


async def test_copy_argument_errors(jmap: Jmap) -> None:
    args: dict[str, Any]
    for args in (
        {"create": {}},
        {"fromAccountId": 1, "create": {}},
        {"fromAccountId": "Ax"},
        {"fromAccountId": "Ax", "create": {"c": {}}},
        {"fromAccountId": "Ax", "create": {}, "ifInState": 1},
        {"fromAccountId": "Ax", "create": {}, "onSuccessDestroyOriginal": "yes"},
        {"fromAccountId": "Ax", "create": {}, "colour": 1},
    ):
        name, body = await jmap.call("Email/copy", args)
        assert (name, body["type"]) == ("error", "invalidArguments"), args
    name, body = await jmap.call(
        "Email/copy", {"accountId": "Anotmine", "fromAccountId": "Ax", "create": {}}
    )
    assert body["type"] == "accountNotFound"
