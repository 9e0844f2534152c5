"""The Email read path against the real Dovecot (checklist EML-GET-*, EML-QRY-*, THR-*,
SNP-*, CORE-BIN-*, CORE-QCH-*): messages are written with a plain IMAP connection (the
oracle), then read through the proxy; blobs are compared byte for byte with what the
oracle fetches."""

from __future__ import annotations

import base64
import imaplib
import time
from typing import Any

import pytest

from tests.integration.conftest import Jmap

PDF = b"%PDF-1.4\n% not really a pdf \xff\xfe\n"

REPORT = (
    b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly report\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <report@example.org>\r\nX-Tracking: alpha\r\n\r\n"
    b"Please look at the budget numbers before Friday.\r\n"
)
REPLY = (
    b"From: Bob <bob@example.net>\r\nTo: Alice <alice@example.org>\r\n"
    b"Subject: Re: Quarterly report\r\nDate: Mon, 2 Mar 2026 11:00:00 +0000\r\n"
    b"Message-ID: <reply@example.org>\r\nIn-Reply-To: <report@example.org>\r\n"
    b"References: <report@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="figures.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PDF) + b"\r\n--b1--\r\n"
)
GREETING = (
    "From: =?utf-8?q?=C3=89mile?= <emile@example.fr>\r\nTo: bob@example.net\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Mon, 2 Mar 2026 12:00:00 +0100\r\n"
    "Message-ID: <greeting@example.fr>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Eine Überraschung für dich.\r\n"
).encode()


def append(oracle: imaplib.IMAP4, mailbox: str, raw: bytes, when: float, flags: str = "") -> None:
    typ, data = oracle.append(mailbox, flags or None, imaplib.Time2Internaldate(when), raw)
    assert typ == "OK", data


async def roles(jmap: Jmap) -> dict[str, str]:
    got = await jmap.ok("Mailbox/get", {"properties": ["role"]})
    return {m["role"]: m["id"] for m in got["list"] if m["role"]}


async def by_subject(jmap: Jmap, ids: list[str]) -> dict[str, dict[str, Any]]:
    got = await jmap.ok("Email/get", {"ids": ids, "properties": ["subject", "threadId"]})
    return {e["subject"]: e for e in got["list"]}


@pytest.fixture
async def mail(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> dict[str, Any]:
    """Three messages: a report and its reply (one thread) in INBOX, a greeting in Archive."""
    now = time.time()
    append(imap_oracle, "INBOX", REPORT, now - 300)
    append(imap_oracle, "INBOX", REPLY, now - 200, "(\\Seen)")
    append(imap_oracle, "Archive", GREETING, now - 100, "(\\Flagged)")
    boxes = await roles(jmap)
    everything = await jmap.ok("Email/query", {})
    subjects = await by_subject(jmap, everything["ids"])
    return {
        "inbox": boxes["inbox"],
        "archive": boxes["archive"],
        "report": subjects["Quarterly report"]["id"],
        "reply": subjects["Re: Quarterly report"]["id"],
        "greeting": subjects["Grüße"]["id"],
        "thread": subjects["Quarterly report"]["threadId"],
    }


async def test_open_a_mailbox_query_get_thread_in_one_request(
    jmap: Jmap, mail: dict[str, Any]
) -> None:
    body = await jmap.request(
        [
            [
                "Email/query",
                {
                    "accountId": jmap.account_id,
                    "filter": {"inMailbox": mail["inbox"]},
                    "sort": [{"property": "receivedAt", "isAscending": False}],
                    "collapseThreads": False,
                    "calculateTotal": True,
                    "limit": 50,
                },
                "q",
            ],
            [
                "Email/get",
                {
                    "accountId": jmap.account_id,
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": [
                        "threadId",
                        "subject",
                        "from",
                        "keywords",
                        "preview",
                        "receivedAt",
                        "hasAttachment",
                        "mailboxIds",
                    ],
                },
                "g",
            ],
            [
                "Thread/get",
                {
                    "accountId": jmap.account_id,
                    "#ids": {"resultOf": "g", "name": "Email/get", "path": "/list/*/threadId"},
                },
                "t",
            ],
        ]
    )
    (_, query, _), (_, got, _), (_, threads, _) = body["methodResponses"]
    assert query["ids"] == [mail["reply"], mail["report"]] and query["total"] == 2
    reply, report = got["list"]
    assert reply["threadId"] == report["threadId"] == mail["thread"]  # THR: In-Reply-To
    assert reply["keywords"] == {"$seen": True} and report["keywords"] == {}
    assert reply["hasAttachment"] is True and report["hasAttachment"] is False
    assert report["from"] == [{"name": "Alice", "email": "alice@example.org"}]
    assert report["preview"].startswith("Please look at the budget numbers")
    assert report["mailboxIds"] == {mail["inbox"]: True}
    assert threads["list"][0] == {"id": mail["thread"], "emailIds": [mail["report"], mail["reply"]]}


async def test_default_get_and_blobs_are_exact_core_bin_05(
    jmap: Jmap, mail: dict[str, Any], imap_oracle: imaplib.IMAP4
) -> None:
    got = await jmap.ok("Email/get", {"ids": [mail["reply"]], "fetchTextBodyValues": True})
    (email,) = got["list"]
    assert email["inReplyTo"] == ["report@example.org"]
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    (part_id,) = [p["partId"] for p in email["textBody"]]
    assert email["bodyValues"][part_id]["value"] == "See the attachment."  # CRLF: boundary
    (attachment,) = email["attachments"]
    assert attachment["name"] == "figures.pdf" and attachment["size"] == len(PDF)

    session = await jmap.session()
    template = session["downloadUrl"]

    async def download(blob_id: str, type_: str, name: str) -> tuple[int, bytes, Any]:
        url = (
            template.replace("{accountId}", jmap.account_id)
            .replace("{blobId}", blob_id)
            .replace("{type}", type_)
            .replace("{name}", name)
        )
        resp = await jmap.http.get(url.split("127.0.0.1:8080", 1)[1], headers=jmap.auth())
        return resp.status, await resp.read(), resp.headers

    status, data, headers = await download(attachment["blobId"], "application/pdf", "f.pdf")
    assert (status, data) == (200, PDF)
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Cache-Control"] == "private, immutable, max-age=31536000"
    status, data, _ = await download(email["blobId"], "message/rfc822", "m.eml")
    imap_oracle.select("INBOX", readonly=True)
    typ, fetched = imap_oracle.uid("FETCH", "2", "(BODY.PEEK[])")
    assert typ == "OK"
    assert isinstance(fetched[0], tuple)
    assert (status, data) == (200, fetched[0][1])  # the exact octets
    status, _, headers = await download("Gnope", "a/b", "x")
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"text": "budget"}, ["report"]),  # body text, through UID SEARCH TEXT
        ({"text": "émile"}, ["greeting"]),  # a decoded From, through the cache
        ({"body": "Überraschung"}, ["greeting"]),  # CHARSET UTF-8 with a literal
        ({"body": "budget", "inMailbox": "archive"}, []),
        ({"header": ["In-Reply-To"]}, ["reply"]),
        ({"header": ["X-Tracking", "alph"]}, ["report"]),
        ({"from": "bob@example"}, ["reply"]),
        ({"subject": "GRÜSSE"}, ["greeting"]),
        ({"hasKeyword": "$flagged"}, ["greeting"]),
        ({"notKeyword": "$seen", "inMailbox": "inbox"}, ["report"]),
        ({"someInThreadHaveKeyword": "$seen"}, ["reply", "report"]),
        ({"hasAttachment": True}, ["reply"]),
        ({"operator": "NOT", "conditions": [{"inMailbox": "inbox"}]}, ["greeting"]),
    ],
)
async def test_filters_eml_qry(
    jmap: Jmap, mail: dict[str, Any], filter_: dict[str, Any], expected: list[str]
) -> None:
    resolved = {k: mail.get(v, v) if k == "inMailbox" else v for k, v in filter_.items()}
    if "conditions" in resolved:
        resolved["conditions"] = [{"inMailbox": mail["inbox"]}]
    got = await jmap.ok("Email/query", {"filter": resolved})
    assert got["ids"] == [mail[name] for name in expected]


async def test_collapse_and_sorts(jmap: Jmap, mail: dict[str, Any]) -> None:
    got = await jmap.ok("Email/query", {"collapseThreads": True, "calculateTotal": True})
    assert got["ids"] == [mail["greeting"], mail["reply"]] and got["total"] == 2
    got = await jmap.ok("Email/query", {"sort": [{"property": "subject"}]})
    # the base subjects of report and reply are equal: the email id breaks the tie
    assert got["ids"] == [mail["greeting"], *sorted([mail["report"], mail["reply"]])]
    got = await jmap.ok("Email/query", {"sort": [{"property": "size", "isAscending": False}]})
    assert got["ids"][0] == mail["reply"]


async def test_search_snippets_snp(jmap: Jmap, mail: dict[str, Any]) -> None:
    got = await jmap.ok(
        "SearchSnippet/get",
        {"filter": {"text": "quarterly budget"}, "emailIds": [mail["report"], "nope"]},
    )
    (snippet,) = got["list"]
    assert snippet["subject"] == "<mark>Quarterly</mark> report"
    assert "<mark>budget</mark>" in snippet["preview"]
    assert got["notFound"] == ["nope"]


async def test_query_changes_after_outside_changes_core_qch_01(
    jmap: Jmap, mail: dict[str, Any], imap_oracle: imaplib.IMAP4
) -> None:
    for collapse in (False, True):
        args = {"filter": {"inMailbox": mail["inbox"]}, "collapseThreads": collapse}
        before = await jmap.ok("Email/query", args)
        n = int(collapse)  # a new conversation each time: its own Message-ID and subject
        fresh = REPORT.replace(b"<report@", f"<again{n}@".encode())
        append(
            imap_oracle, "INBOX", fresh.replace(b"Quarterly", f"Other {n}".encode()), time.time()
        )
        imap_oracle.select("INBOX")
        imap_oracle.uid("STORE", "1", "+FLAGS", "(\\Seen)")
        after = await jmap.ok("Email/query", args)
        changes = await jmap.ok(
            "Email/queryChanges", {**args, "sinceQueryState": before["queryState"]}
        )
        assert changes["newQueryState"] == after["queryState"]
        ids = [i for i in before["ids"] if i not in changes["removed"]]
        for added in sorted(changes["added"], key=lambda a: a["index"]):
            ids.insert(added["index"], added["id"])
        assert ids == after["ids"]
        assert len(after["ids"]) == len(before["ids"]) + 1
