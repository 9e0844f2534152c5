"""Every /get answers a duplicated id once (CORE-GET-02), on each upstream: the message is
APPENDed by a second plain IMAP client, then asked for twice, known and unknown ids alike."""

from __future__ import annotations

import imaplib
import time
from typing import Any

from tests.integration.conftest import CORE, MAIL, Jmap

SUBMISSION = "urn:ietf:params:jmap:submission"
BLOB = "urn:ietf:params:jmap:blob"

MESSAGE = (
    b"From: Ann <ann@example.org>\r\nTo: Bob <bob@example.org>\r\n"
    b"Subject: twice\r\nMessage-ID: <twice@example.org>\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nAsked for twice.\r\n"
)


async def _get(jmap: Jmap, name: str, ids: list[str], using: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {"ids": ids}
    if not name.startswith("PushSubscription/"):
        args["accountId"] = jmap.account_id
    body = await jmap.request([[name, args, "g"]], using=using)
    response_name, response, _ = body["methodResponses"][0]
    assert response_name == name, response
    return dict(response)


def _ids(response: dict[str, Any]) -> list[str]:
    return [obj["id"] for obj in response["list"]]


async def test_a_duplicated_id_is_answered_once_core_get_02(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    typ, _ = imap_oracle.append("INBOX", None, imaplib.Time2Internaldate(time.time()), MESSAGE)
    assert typ == "OK"
    mail = [CORE, MAIL]
    query = await jmap.ok("Email/query", {})
    (email_id,) = query["ids"]
    got = await jmap.ok("Email/get", {"ids": [email_id], "properties": ["threadId"]})
    thread_id = got["list"][0]["threadId"]
    inbox = (await jmap.ok("Mailbox/query", {"filter": {"role": "inbox"}}))["ids"][0]
    identities = await _get(jmap, "Identity/get", [], [CORE, MAIL, SUBMISSION])
    assert identities["list"] == []  # ids: [] gives an empty list (CORE-GET-02)
    known = {
        "Mailbox/get": (inbox, mail),
        "Email/get": (email_id, mail),
        "Thread/get": (thread_id, mail),
        "Blob/get": ("G" + email_id, [CORE, MAIL, BLOB]),
    }
    for name, (id_, using) in known.items():
        response = await _get(jmap, name, [id_, "Xnone", id_, "Xnone", id_], using)
        assert _ids(response) == [id_], name
        assert response["notFound"] == ["Xnone"], name
    unknown_only = {
        "Identity/get": [CORE, MAIL, SUBMISSION],
        "EmailSubmission/get": [CORE, MAIL, SUBMISSION],
        "PushSubscription/get": [CORE],
    }
    for name, using in unknown_only.items():
        response = await _get(jmap, name, ["Xnone", "Ynone", "Xnone"], using)
        assert response["list"] == [], name
        assert response["notFound"] == ["Xnone", "Ynone"], name
