"""MDN/send and MDN/parse (RFC 9007) against the real Dovecot and Cyrus and a real aiosmtpd:
the report is read back from the SMTP sink, the ``$mdnsent`` keyword through the IMAP
oracle.

Requirement ids (RFC 9007; the numbers are this module's):

- MDN-01 The session advertises ``urn:ietf:params:jmap:mdn`` (``{}``) in the session and the
  account.
- MDN-02 MDN/send sends one ``multipart/report; report-type=disposition-notification``
  (RFC 8098) to the Disposition-Notification-To address, with a null MAIL FROM, its
  ``Disposition`` and ``Original-Message-ID`` fields as asked; ``sent`` holds the
  properties the server set.
- MDN-03 The Email gets ``$mdnsent`` (in IMAP), with the ``onSuccessUpdateEmail`` patch, in
  the implicit Email/set that follows; a second MDN/send for it is ``mdnAlreadySent`` and
  sends nothing.
- MDN-04 MDN/parse reads a sent report back (disposition, recipients, original message id,
  the Email it is about); unknown blobs are ``notFound``, blobs that are not MDNs
  ``notParsable``; too many ids is ``requestTooLarge``.
- MDN-05 Bad input gets the RFC's errors: an Email that does not exist or asks for no
  receipt is ``notFound``; a bad MDN object or a server-set property is
  ``invalidProperties``; a ``finalRecipient`` the user may not send as is ``forbiddenFrom``;
  bad arguments are ``invalidArguments``.
- MDN-06 ``includeOriginalMessage`` puts the original message in a third part.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devservers.smtp import SmtpSink
from tests.conftest import BACKENDS, ImapServer, ImapUser
from tests.integration.conftest import CORE, MAIL, Jmap
from tests.integration.instances import ProxyClient
from tests.integration.test_submission import (
    SUBMISSION,
    _config,
    append,
    email_id,
    identity_id,
    login_address,
)

MDN = "urn:ietf:params:jmap:mdn"
USING = [CORE, MAIL, SUBMISSION, MDN]


@pytest.fixture(params=["dovecot", "cyrus"])
def imap_backend(request: pytest.FixtureRequest) -> ImapServer:
    """Both servers (the SMTP sink is Dovecot's, which keeps the tests off the automatic
    parametrisation of ``imap_backend``)."""
    server: ImapServer = request.getfixturevalue(BACKENDS[request.param])
    return server


@pytest.fixture
def sink(smtp_sink: SmtpSink, imap_user: ImapUser) -> SmtpSink:
    smtp_sink.reset()
    smtp_sink.add_user(imap_user.username, imap_user.password)
    smtp_sink.require_auth = True
    return smtp_sink


@pytest.fixture
async def jmap(
    imap_user: ImapUser, tmp_path: Path, sink: SmtpSink, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    async with proxy_client(_config(imap_user, tmp_path, sink.port)) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        yield client


DISPLAYED = {"actionMode": "manual-action", "sendingMode": "mdn-sent-manually", "type": "displayed"}


def asking(subject: str, *, notify: str = "Bob <bob@example.net>") -> bytes:
    dnt = f"Disposition-Notification-To: {notify}\r\n" if notify else ""
    return (
        f"From: Bob <bob@example.net>\r\nTo: Me <me@example.org>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n{dnt}"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nPlease confirm.\r\n"
    ).encode()


async def run(jmap: Jmap, *calls: tuple[str, dict[str, Any]]) -> list[list[Any]]:
    body = await jmap.request(
        [
            [name, {"accountId": jmap.account_id, **args}, f"c{i}"]
            for i, (name, args) in enumerate(calls)
        ],
        using=USING,
    )
    responses: list[list[Any]] = body["methodResponses"]
    return responses


async def mdn_send(jmap: Jmap, send: dict[str, Any], **args: Any) -> list[list[Any]]:
    identity = await identity_id(jmap, login_address(jmap))
    return await run(jmap, ("MDN/send", {"identityId": identity, "send": send, **args}))


def flags(oracle: imaplib.IMAP4, subject: str) -> set[str]:
    oracle.select("INBOX", readonly=True)
    typ, data = oracle.uid("SEARCH", "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0], data
    typ, data = oracle.uid("FETCH", data[0].split()[-1].decode(), "(FLAGS)")
    assert typ == "OK"
    found = re.search(rb"FLAGS \(([^)]*)\)", data[0] if isinstance(data[0], bytes) else b"")
    assert found, data
    return {f.lower() for f in found.group(1).decode().split()}


def notification_fields(raw: bytes) -> dict[str, str]:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    part = next(
        p for p in message.walk() if p.get_content_type() == "message/disposition-notification"
    )
    payload = part.get_payload()
    block = payload[0] if isinstance(payload, list) else email.message_from_string(payload)
    return {k.lower(): str(v) for k, v in block.items()}


async def test_a_receipt_is_sent_once_and_parses_back(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    """MDN-01, MDN-02, MDN-03, MDN-04."""
    session = await jmap.session()
    assert session["capabilities"][MDN] == {}
    assert session["accounts"][jmap.account_id]["accountCapabilities"][MDN] == {}
    append(imap_oracle, "INBOX", asking("please ack"), flags="()")
    target = await email_id(jmap, "please ack")

    responses = await mdn_send(
        jmap,
        {"k1": {"forEmailId": target, "disposition": DISPLAYED}},
        onSuccessUpdateEmail={"#k1": {"keywords/$seen": True}},
    )
    [[name, sent, _], [implicit, updated, _]] = responses
    assert name == "MDN/send", sent
    assert sent["notSent"] is None
    shown = sent["sent"]["k1"]
    assert shown["finalRecipient"] == f"rfc822; {login_address(jmap)}"
    assert shown["originalMessageId"] == "<please.ack@example.net>"
    assert shown["subject"] and shown["textBody"] and shown["reportingUA"]
    assert "disposition" not in shown and "forEmailId" not in shown  # the client's own
    assert implicit == "Email/set" and target in updated["updated"], updated

    [received] = sink.wait_for(1)
    assert received.mail_from in ("", "<>")  # RFC 8098 §3: a null reverse-path
    assert received.rcpt_tos == ("bob@example.net",)
    parsed = received.parsed()
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "disposition-notification"
    assert str(parsed["To"]) == "bob@example.net"
    assert login_address(jmap) in str(parsed["From"])
    fields = notification_fields(received.raw)
    assert fields["disposition"] == "manual-action/MDN-sent-manually; displayed"
    assert fields["original-message-id"] == "<please.ack@example.net>"
    assert fields["final-recipient"] == f"rfc822; {login_address(jmap)}"
    assert [p.get_content_type() for p in parsed.iter_parts()] == [
        "text/plain",
        "message/disposition-notification",
    ]
    assert {"$mdnsent", "\\seen"} <= flags(imap_oracle, "please ack")

    [[name, again, _]] = await mdn_send(
        jmap, {"k2": {"forEmailId": target, "disposition": DISPLAYED}}
    )
    assert name == "MDN/send" and again["sent"] is None
    assert again["notSent"]["k2"]["type"] == "mdnAlreadySent"
    assert len(sink.messages) == 1

    # the report, filed in the mailbox, read back with MDN/parse
    append(imap_oracle, "INBOX", received.raw, flags="()")
    got = await run(jmap, ("Email/query", {"filter": {"header": ["Content-Type", "report"]}}))
    [mdn_email] = got[0][1]["ids"]
    blobs = await run(jmap, ("Email/get", {"ids": [mdn_email, target], "properties": ["blobId"]}))
    mdn_blob, original_blob = (e["blobId"] for e in blobs[0][1]["list"])
    [[name, parsed_back, _]] = await run(
        jmap, ("MDN/parse", {"blobIds": [mdn_blob, original_blob, "Bnope"]})
    )
    assert name == "MDN/parse", parsed_back
    report = parsed_back["parsed"][mdn_blob]
    assert report["forEmailId"] == target
    assert report["disposition"] == DISPLAYED
    assert report["originalMessageId"] == "<please.ack@example.net>"
    assert report["finalRecipient"] == f"rfc822; {login_address(jmap)}"
    assert report["subject"] == shown["subject"]
    assert report["textBody"].strip() == shown["textBody"].strip()
    assert report["includeOriginalMessage"] is False
    assert parsed_back["notParsable"] == [original_blob]
    assert parsed_back["notFound"] == ["Bnope"]


async def test_bad_input_gets_the_rfc_errors(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    """MDN-05, MDN-06, MDN-04 (requestTooLarge)."""
    append(imap_oracle, "INBOX", asking("no receipt", notify=""), flags="()")
    append(imap_oracle, "INBOX", asking("with original"), flags="()")
    silent = await email_id(jmap, "no receipt")
    wanted = await email_id(jmap, "with original")
    [[name, result, _]] = await mdn_send(
        jmap,
        {
            "none": {"forEmailId": silent, "disposition": DISPLAYED},
            "ghost": {"forEmailId": "Mnope", "disposition": DISPLAYED},
            "mode": {"forEmailId": wanted, "disposition": {**DISPLAYED, "type": "read"}},
            "server": {"forEmailId": wanted, "disposition": DISPLAYED, "mdnGateway": "x"},
            "typo": {"forEmailId": wanted, "disposition": DISPLAYED, "subjct": "x"},
            "field": {
                "forEmailId": wanted,
                "disposition": DISPLAYED,
                "extensionFields": {"Disposition": "x"},
            },
            "injected": {
                "forEmailId": wanted,
                "disposition": DISPLAYED,
                "extensionFields": {"X-Note": "a\r\nBcc: eve@example.net"},
            },
            "subject": {"forEmailId": wanted, "disposition": DISPLAYED, "subject": "a\nBcc: x"},
            "other": {
                "forEmailId": wanted,
                "disposition": DISPLAYED,
                "finalRecipient": "rfc822; boss@example.com",
            },
        },
    )
    assert name == "MDN/send" and result["sent"] is None, result
    types = {k: v["type"] for k, v in result["notSent"].items()}
    assert types == {
        "none": "notFound",
        "ghost": "notFound",
        "mode": "invalidProperties",
        "server": "invalidProperties",
        "typo": "invalidProperties",
        "field": "invalidProperties",
        "injected": "invalidProperties",
        "subject": "invalidProperties",
        "other": "forbiddenFrom",
    }
    assert sink.messages == []  # nothing was sent, and no implicit Email/set followed

    [[name, result, _], [implicit, _, _]] = await mdn_send(
        jmap,
        {
            "k": {
                "forEmailId": wanted,
                "disposition": {**DISPLAYED, "type": "processed"},
                "includeOriginalMessage": True,
                "extensionFields": {"X-Note": "kept"},
            }
        },
    )
    assert name == "MDN/send" and implicit == "Email/set", result
    [received] = sink.wait_for(1)
    parts = [p.get_content_type() for p in received.parsed().iter_parts()]
    assert parts == ["text/plain", "message/disposition-notification", "message/rfc822"]
    assert b"Subject: with original" in received.raw
    assert notification_fields(received.raw)["x-note"] == "kept"

    identity = await identity_id(jmap, login_address(jmap))
    bad_calls = [
        ("MDN/send", {"send": {}}),
        ("MDN/send", {"identityId": identity}),
        ("MDN/send", {"identityId": "Inope", "send": {}}),
        ("MDN/send", {"identityId": identity, "send": [], "x": 1}),
        ("MDN/send", {"identityId": identity, "send": {}, "onSuccessUpdateEmail": []}),
        ("MDN/parse", {}),
        ("MDN/parse", {"blobIds": "B1"}),
    ]
    for method, args in bad_calls:
        [[name, error, _]] = await run(jmap, (method, args))
        assert (name, error["type"]) == ("error", "invalidArguments"), (method, args, error)
    session = await jmap.session()
    most = session["capabilities"][CORE]["maxObjectsInGet"]
    too_many = [f"B{i}" for i in range(most + 1)]
    [[name, error, _]] = await run(jmap, ("MDN/parse", {"blobIds": too_many}))
    assert (name, error["type"]) == ("error", "requestTooLarge")
