"""Email/set create (RFC 8621 §4.6, CHECKLIST 12.8) against the real Dovecot: every effect
checked through the oracle (the bytes, flags and mailboxes of what was appended) and read
back through Email/get."""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
from typing import Any

import pytest

from imapjmap.errors import ImapCommandFailed
from imapjmap.upstream import imap as upstream_imap
from tests.conftest import advertises
from tests.integration.conftest import Jmap

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"


async def upload(jmap: Jmap, data: bytes, content_type: str) -> dict[str, Any]:
    resp = await jmap.http.post(
        f"/jmap/upload/{jmap.account_id}/",
        data=data,
        headers={**jmap.auth(), "Content-Type": content_type},
    )
    assert resp.status == 201, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def boxes(jmap: Jmap) -> dict[str, str]:
    """Mailbox ids by name, and by role for the special ones ("inbox", "drafts" ...)."""
    got = await jmap.ok("Mailbox/get", {"properties": ["name", "role"]})
    by_name = {m["name"]: m["id"] for m in got["list"]}
    return by_name | {m["role"]: m["id"] for m in got["list"] if m["role"]}


def fetch_all(oracle: imaplib.IMAP4, mailbox: str) -> list[dict[str, Any]]:
    """Every message of the mailbox: uid, flags, size, internaldate and octets."""
    typ, _ = oracle.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK"
    typ, data = oracle.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    out = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode()
        flags = set(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split())  # type: ignore[union-attr]
        out.append(
            {
                "uid": int(re.search(r"UID (\d+)", meta).group(1)),  # type: ignore[union-attr]
                "flags": flags - {"\\Recent"},
                "size": int(re.search(r"RFC822\.SIZE (\d+)", meta).group(1)),  # type: ignore[union-attr]
                # date-day-fixed is " 6" (Cyrus) or "06" (Dovecot), RFC 3501: one form here
                "internaldate": re.sub(
                    r"^ ",
                    "0",
                    re.search(r'INTERNALDATE "([^"]+)"', meta).group(1),  # type: ignore[union-attr]
                ),
                "raw": item[1],
            }
        )
    return out


def draft(drafts: str, pdf_blob: str) -> dict[str, Any]:
    return {
        "mailboxIds": {drafts: True},
        "keywords": {"$draft": True, "$seen": True},
        "from": [{"name": "Zoë Sender", "email": "zoe@example.org"}],
        "to": [{"name": "Bob", "email": "bob@example.net"}],
        "subject": "Quarterly report — draft",
        "bodyValues": {
            "text": {"value": "Hello Bob,\nthe report is attached.\n"},
            "html": {"value": "<p>Hello Bob,</p><p>the report is attached.</p>"},
        },
        "textBody": [{"partId": "text", "type": "text/plain"}],
        "htmlBody": [{"partId": "html", "type": "text/html"}],
        "attachments": [{"blobId": pdf_blob, "type": "application/pdf", "name": "report.pdf"}],
    }


async def test_eml_set_create_draft_with_text_html_and_upload(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """CHECKLIST 12.8 create + EML-KW-01: a draft lands in Drafts with \\Draft \\Seen."""
    blob = await upload(jmap, PDF, "application/pdf")
    drafts = (await boxes(jmap))["Drafts"]
    result = await jmap.ok("Email/set", {"create": {"d1": draft(drafts, blob["blobId"])}})
    assert result["notCreated"] is None, result
    created = result["created"]["d1"]
    assert set(created) == {"id", "blobId", "threadId", "size"}

    (stored,) = fetch_all(imap_oracle, "Drafts")
    assert stored["flags"] == {"\\Draft", "\\Seen"}
    assert stored["size"] == created["size"] == len(stored["raw"])
    message = email.message_from_bytes(stored["raw"], policy=email.policy.default)
    assert message["Subject"] == "Quarterly report — draft"
    assert message["From"].addresses[0].display_name == "Zoë Sender"
    assert message["Message-ID"] and message["Date"] and message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/mixed"
    body, attachment = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/html"]
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content() == PDF
    assert b"\r\n" in stored["raw"] and b"\n" not in stored["raw"].replace(b"\r\n", b"")

    got = await jmap.ok(
        "Email/get",
        {
            "ids": [created["id"]],
            "fetchAllBodyValues": True,
            "properties": [
                "id",
                "blobId",
                "threadId",
                "size",
                "mailboxIds",
                "keywords",
                "subject",
                "from",
                "to",
                "bodyValues",
                "textBody",
                "htmlBody",
                "attachments",
                "hasAttachment",
            ],
        },
    )
    (mail,) = got["list"]
    assert {k: mail[k] for k in ("id", "blobId", "threadId", "size")} == created
    assert mail["mailboxIds"] == {drafts: True}
    assert mail["keywords"] == {"$draft": True, "$seen": True}
    assert mail["subject"] == "Quarterly report — draft"
    assert mail["from"] == [{"name": "Zoë Sender", "email": "zoe@example.org"}]
    values = {v["value"] for v in mail["bodyValues"].values()}
    assert values == {
        "Hello Bob,\nthe report is attached.\n",
        "<p>Hello Bob,</p><p>the report is attached.</p>",
    }
    (att,) = mail["attachments"]
    assert (att["name"], att["type"], att["size"], att["disposition"]) == (
        "report.pdf",
        "application/pdf",
        len(PDF),
        "attachment",
    )
    assert mail["hasAttachment"] is True

    resp = await jmap.http.get(
        f"/jmap/download/{jmap.account_id}/{created['blobId']}/m.eml", headers=jmap.auth()
    )
    assert resp.status == 200
    assert await resp.read() == stored["raw"]


async def test_eml_set_create_in_two_mailboxes_copies(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """One Email in two mailboxes: APPEND then UID COPY, one JMAP Email with both ids."""
    ids = await boxes(jmap)
    obj = {
        "mailboxIds": {ids["Drafts"]: True, ids["inbox"]: True},
        "subject": "two places",
        "bodyValues": {"t": {"value": "x"}},
        "textBody": [{"partId": "t"}],
        "receivedAt": "2023-05-06T07:08:09Z",
    }
    result = await jmap.ok("Email/set", {"create": {"c": obj}})
    created = result["created"]["c"]
    (in_drafts,) = fetch_all(imap_oracle, "Drafts")
    (in_inbox,) = fetch_all(imap_oracle, "INBOX")
    assert in_drafts["raw"] == in_inbox["raw"]
    assert in_drafts["internaldate"] == "06-May-2023 07:08:09 +0000"
    got = await jmap.ok(
        "Email/get", {"ids": [created["id"]], "properties": ["mailboxIds", "receivedAt"]}
    )
    assert got["list"][0] == {
        "id": created["id"],
        "mailboxIds": {ids["Drafts"]: True, ids["inbox"]: True},
        "receivedAt": "2023-05-06T07:08:09Z",
    }


async def test_eml_set_create_mailbox_by_creation_id(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """CORE-CID-01: mailboxIds keys may be #creationId of a Mailbox created earlier."""
    body = await jmap.request(
        [
            [
                "Mailbox/set",
                {"accountId": jmap.account_id, "create": {"mb": {"name": "Project"}}},
                "0",
            ],
            [
                "Email/set",
                {
                    "accountId": jmap.account_id,
                    "create": {
                        "e": {
                            "mailboxIds": {"#mb": True},
                            "subject": "filed",
                            "textBody": [{"partId": "t"}],
                            "bodyValues": {"t": {"value": "x"}},
                        }
                    },
                },
                "1",
            ],
        ]
    )
    (_, mailbox_result, _), (_, email_result, _) = body["methodResponses"]
    project = mailbox_result["created"]["mb"]["id"]
    email_id = email_result["created"]["e"]["id"]
    assert len(fetch_all(imap_oracle, "Project")) == 1
    got = await jmap.ok("Email/get", {"ids": [email_id], "properties": ["mailboxIds"]})
    assert got["list"][0]["mailboxIds"] == {project: True}


async def test_eml_set_create_refusals_leave_nothing_behind(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """CHECKLIST 12.8: invalid creates and unknown blobs are refused; nothing is appended."""
    drafts = (await boxes(jmap))["Drafts"]
    base = {"mailboxIds": {drafts: True}}
    result = await jmap.ok(
        "Email/set",
        {
            "create": {
                "no-mailbox": {"subject": "x"},
                "empty-mailboxes": {"mailboxIds": {}},
                "unknown-mailbox": {"mailboxIds": {"nope": True}},
                "unknown-creation-id": {"mailboxIds": {"#nope": True}},
                "bad-keyword": {**base, "keywords": {"bad(": True}},
                "bad-received": {**base, "receivedAt": "yesterday"},
                "headers": {**base, "headers": [{"name": "X", "value": "y"}]},
                "both-bodies": {
                    **base,
                    "bodyStructure": {"partId": "t"},
                    "textBody": [{"partId": "t"}],
                    "bodyValues": {"t": {"value": "x"}},
                },
                "no-blob": {**base, "attachments": [{"blobId": "Unothere"}]},
            }
        },
    )
    assert result["created"] is None
    errors = result["notCreated"]
    assert {k: (v["type"], v.get("properties")) for k, v in errors.items()} == {
        "no-mailbox": ("invalidProperties", ["mailboxIds"]),
        "empty-mailboxes": ("invalidProperties", ["mailboxIds"]),
        "unknown-mailbox": ("invalidProperties", ["mailboxIds"]),
        "unknown-creation-id": ("invalidProperties", ["mailboxIds"]),
        "bad-keyword": ("invalidProperties", ["keywords"]),
        "bad-received": ("invalidProperties", ["receivedAt"]),
        "headers": ("invalidProperties", ["headers"]),
        "both-bodies": ("invalidProperties", ["bodyStructure", "textBody"]),
        "no-blob": ("blobNotFound", None),
    }
    assert errors["no-blob"]["notFound"] == ["Unothere"]
    assert fetch_all(imap_oracle, "Drafts") == []


async def test_eml_set_create_is_atomic_when_a_copy_is_refused(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CORE-SET-02: the server refuses the second COPY (injected NO [OVERQUOTA]); the copy
    already made and the appended original are removed, and the create reports overQuota."""
    real_copy = upstream_imap.copy
    calls: list[str] = []

    async def copy_then_refuse(session: Any, uids: Any, target: str) -> Any:
        calls.append(target)
        if len(calls) == 2:
            raise ImapCommandFailed("UID COPY", code="OVERQUOTA", text="quota exceeded")
        return await real_copy(session, uids, target)

    monkeypatch.setattr(upstream_imap, "copy", copy_then_refuse)
    ids = await boxes(jmap)
    obj = {
        "mailboxIds": {ids["drafts"]: True, ids["archive"]: True, ids["inbox"]: True},
        "subject": "not kept",
        "bodyValues": {"t": {"value": "x"}},
        "textBody": [{"partId": "t"}],
    }
    result = await jmap.ok("Email/set", {"create": {"c": obj}})
    assert result["created"] is None
    assert result["notCreated"]["c"]["type"] == "overQuota"
    assert len(calls) == 2
    uidplus = advertises(imap_oracle, "UIDPLUS")
    for mailbox in ("Drafts", "Archive", "INBOX"):
        left = fetch_all(imap_oracle, mailbox)
        if not uidplus:  # no UID EXPUNGE: what was written is only marked \Deleted
            left = [m for m in left if m["flags"] != {"\\Deleted"}]
        assert left == [], mailbox
    got = await jmap.ok("Email/query", {"filter": {"subject": "not kept"}})
    assert got["ids"] == []
