"""Identity and EmailSubmission (RFC 8621 §6-7, SUB-01..03) against the real Dovecot and a
real aiosmtpd: what the SMTP server received is read back from the sink, and every effect on
the mailboxes is checked through the IMAP oracle."""

from __future__ import annotations

import contextlib
import dataclasses
import imaplib
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from devservers.smtp import SmtpSink
from imapjmap.config import Config, IdentityConfig, SmtpConfig, SubmissionConfig
from tests.conftest import ImapUser
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient

SUBMISSION = "urn:ietf:params:jmap:submission"
USING = [CORE, MAIL, SUBMISSION]
DOMAIN = "example.org"


# --- fixtures and helpers --------------------------------------------------------------------


def _config(user: ImapUser, tmp_path: Path, port: int, **submission: Any) -> Config:
    return dataclasses.replace(
        proxy_config(user, tmp_path),
        smtp=SmtpConfig(host="127.0.0.1", port=port, security="none", timeout=10.0),
        submission=SubmissionConfig(
            default_domain=DOMAIN,
            identities=(
                IdentityConfig(user.username, "sales@example.org", name="Sales"),
                IdentityConfig(user.username, "*@example.net"),
                IdentityConfig("someone-else", "boss@example.org"),
            ),
        ),
    )


@contextlib.asynccontextmanager
async def _client(proxy_client: ProxyClient, cfg: Config, user: ImapUser) -> AsyncIterator[Jmap]:
    async with proxy_client(cfg) as http:
        client = Jmap(http, user.username, user.password)
        await client.session()
        yield client


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
    async with _client(proxy_client, _config(imap_user, tmp_path, sink.port), imap_user) as client:
        yield client


def login_address(jmap: Jmap) -> str:
    return f"{jmap.username}@{DOMAIN}"


async def calls(jmap: Jmap, *method_calls: list[Any]) -> list[list[Any]]:
    """Run calls (accountId added); the methodResponses."""
    body = await jmap.request(
        [[name, {"accountId": jmap.account_id, **args}, cid] for name, args, cid in method_calls],
        using=USING,
    )
    responses: list[list[Any]] = body["methodResponses"]
    return responses


async def ok(jmap: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    [[response_name, response, _]] = await calls(jmap, [name, args, "c"])
    assert response_name == name, response
    result: dict[str, Any] = response
    return result


def draft(jmap: Jmap, subject: str, *, headers: str = "", body: str = "Hello.\r\n") -> bytes:
    head = headers or (f"From: Me <{login_address(jmap)}>\r\nTo: Ann <ann@example.com>\r\n")
    return (
        f"{head}Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
        f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


def append(oracle: imaplib.IMAP4, mailbox: str, raw: bytes, flags: str = r"(\Draft \Seen)") -> None:
    typ, _ = oracle.append(mailbox, flags, None, raw)
    assert typ == "OK"


async def email_id(jmap: Jmap, subject: str) -> str:
    got = await ok(jmap, "Email/query", {"filter": {"subject": subject}})
    assert len(got["ids"]) == 1, got
    return str(got["ids"][0])


async def identity_id(jmap: Jmap, email: str) -> str:
    got = await ok(jmap, "Identity/get", {"ids": None})
    ids = [i["id"] for i in got["list"] if i["email"] == email]
    assert len(ids) == 1, got
    return str(ids[0])


async def mailbox_ids(jmap: Jmap) -> dict[str, str]:
    got = await ok(jmap, "Mailbox/get", {"properties": ["name"]})
    return {m["name"]: m["id"] for m in got["list"]}


def subjects_and_flags(oracle: imaplib.IMAP4, mailbox: str) -> dict[str, set[str]]:
    oracle.select(f'"{mailbox}"', readonly=True)
    typ, data = oracle.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out: dict[str, set[str]] = {}
    for item in data:
        if isinstance(item, tuple):
            found = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert found
            subject = item[1].decode().split(":", 1)[1].strip()
            out[subject] = set(found.group(1).decode().split()) - {"\\Recent"}
    return out


async def send(
    jmap: Jmap, subject: str, raw: bytes, oracle: imaplib.IMAP4, **create: Any
) -> tuple[str, dict[str, Any]]:
    """Put ``raw`` in Drafts and create a submission for it; (email id, /set response)."""
    append(oracle, "Drafts", raw)
    mail_id = await email_id(jmap, subject)
    obj = {"identityId": await identity_id(jmap, login_address(jmap)), "emailId": mail_id}
    obj.update(create)
    return mail_id, await ok(jmap, "EmailSubmission/set", {"create": {"k1": obj}})


# --- SUB-01: envelope and bytes ----------------------------------------------------------------


async def test_sub_01_bcc_removed_and_everything_else_byte_exact(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    me = login_address(jmap)
    headers = (
        f"From: Me <{me}>\r\nTo: Ann <ann@example.com>, bob@example.com\r\n"
        'Cc: "Carl" <carl@example.com>, ANN@example.com\r\n'
        "Bcc: dora@example.com,\r\n\tEve <eve@example.com>\r\n"
        "X-Trailing:   spaces kept   \r\n"
    )
    body = "Line one\r\n.starts with a dot\r\n\r\n-- \r\nsig\r\n"
    raw = draft(jmap, "bcc strip", headers=headers, body=body)
    mail_id, result = await send(jmap, "bcc strip", raw, imap_oracle)
    created = result["created"]["k1"]
    [message] = sink.wait_for(1)
    expected = raw.replace(b"Bcc: dora@example.com,\r\n\tEve <eve@example.com>\r\n", b"")
    assert b"Bcc" not in message.raw and b"eve@" not in message.raw
    assert message.raw == expected
    assert message.mail_from == me
    assert list(message.rcpt_tos) == [
        "ann@example.com", "bob@example.com", "carl@example.com", "dora@example.com",
        "eve@example.com",
    ]  # fmt: skip
    assert created["envelope"] == {
        "mailFrom": {"email": me, "parameters": None},
        "rcptTo": [{"email": a, "parameters": None} for a in message.rcpt_tos],
    }
    assert created["undoStatus"] == "final"
    assert created["threadId"]
    assert set(created["deliveryStatus"]) == set(message.rcpt_tos)
    status = created["deliveryStatus"]["ann@example.com"]
    assert status["delivered"] == "queued" and status["displayed"] == "unknown"
    assert status["smtpReply"].startswith("250 ")
    got = await ok(jmap, "EmailSubmission/get", {"ids": [created["id"]]})
    assert got["list"][0]["emailId"] == mail_id
    assert got["list"][0]["envelope"] == created["envelope"]
    assert got["list"][0]["dsnBlobIds"] == [] and got["list"][0]["mdnBlobIds"] == []


async def test_sub_01_sender_header_and_identity_fallback(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    me = login_address(jmap)
    # Sender wins over From, but the default identity does not allow sales@: its own email
    headers = f"From: Sales <sales@example.org>\r\nSender: {me}\r\nTo: ann@example.com\r\n"
    _, result = await send(jmap, "sender", draft(jmap, "sender", headers=headers), imap_oracle)
    assert result["created"]["k1"]["envelope"]["mailFrom"]["email"] == me
    headers = "From: Sales <sales@example.org>\r\nTo: ann@example.com\r\n"
    append(imap_oracle, "Drafts", draft(jmap, "as sales", headers=headers))
    sales = await identity_id(jmap, "sales@example.org")
    result = await ok(
        jmap,
        "EmailSubmission/set",
        {"create": {"k": {"identityId": sales, "emailId": await email_id(jmap, "as sales")}}},
    )
    assert result["created"]["k"]["envelope"]["mailFrom"]["email"] == "sales@example.org"
    assert [m.mail_from for m in sink.wait_for(2)] == [me, "sales@example.org"]


async def test_sub_01_two_from_fields_are_invalid_email(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    me = login_address(jmap)
    headers = f"From: {me}\r\nFrom: {me}\r\nTo: ann@example.com\r\n"
    _, result = await send(jmap, "two from", draft(jmap, "two from", headers=headers), imap_oracle)
    assert result["notCreated"]["k1"]["type"] == "invalidEmail"
    assert result["notCreated"]["k1"]["properties"] == ["from"]
    assert sink.messages == []


async def test_explicit_envelope_and_advertised_parameters(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    me = login_address(jmap)
    envelope = {
        "mailFrom": {"email": me, "parameters": {"ENVID": "id+1=x", "RET": "HDRS"}},
        "rcptTo": [
            {"email": "zed@example.com", "parameters": {"NOTIFY": "SUCCESS,FAILURE"}},
            {"email": "yan@example.com", "parameters": None},
        ],
    }
    raw = draft(jmap, "explicit")
    _, result = await send(jmap, "explicit", raw, imap_oracle, envelope=envelope)
    assert "envelope" not in result["created"]["k1"]  # the client gave it
    [message] = sink.wait_for(1)
    assert list(message.rcpt_tos) == ["zed@example.com", "yan@example.com"]  # not To:
    assert set(message.mail_options) == {"ENVID=id+2B1+3Dx", "RET=HDRS", f"SIZE={len(raw)}"}
    assert message.rcpt_options == (("NOTIFY=SUCCESS,FAILURE",), ())
    got = await ok(jmap, "EmailSubmission/get", {"ids": [result["created"]["k1"]["id"]]})
    assert got["list"][0]["envelope"] == envelope


async def test_a_parameter_the_server_does_not_offer_is_refused_not_sent(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    envelope = {
        "mailFrom": {"email": login_address(jmap), "parameters": {"MT-PRIORITY": "3"}},
        "rcptTo": [{"email": "zed@example.com", "parameters": None}],
    }
    _, result = await send(jmap, "mt prio", draft(jmap, "mt prio"), imap_oracle, envelope=envelope)
    error = result["notCreated"]["k1"]
    assert error["type"] == "invalidProperties" and error["properties"] == ["envelope"]
    assert "MT-PRIORITY" in error["description"]
    hold = {
        "mailFrom": {"email": login_address(jmap), "parameters": {"HOLDFOR": "60"}},
        "rcptTo": [{"email": "zed@example.com", "parameters": None}],
    }
    append(imap_oracle, "Drafts", draft(jmap, "hold"))
    result = await ok(
        jmap,
        "EmailSubmission/set",
        {
            "create": {
                "k": {
                    "identityId": await identity_id(jmap, login_address(jmap)),
                    "emailId": await email_id(jmap, "hold"),
                    "envelope": hold,
                }
            }
        },
    )
    assert result["notCreated"]["k"]["type"] == "invalidProperties"
    assert sink.messages == []


# A stock aiosmtpd: no DSN, no SIZE (data_size_limit=None), no AUTH; unknown MAIL/RCPT
# parameters get 555, so anything the proxy sent that was not advertised would fail.
class _Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.received.append((
                envelope.mail_from or "", list(envelope.mail_options),
                list(envelope.rcpt_tos), envelope.original_content or b"",
            ))  # fmt: skip
        return "250 OK"


@pytest.fixture
def stock_smtp() -> Iterator[tuple[int, _Recorder]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recorder = _Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, data_size_limit=None)
    controller.start()
    yield port, recorder
    controller.stop()


async def test_parameters_not_advertised_are_not_sent(
    imap_user: ImapUser,
    tmp_path: Path,
    stock_smtp: tuple[int, _Recorder],
    imap_oracle: imaplib.IMAP4,
    proxy_client: ProxyClient,
) -> None:
    port, recorder = stock_smtp
    cfg = _config(imap_user, tmp_path, port)
    cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, auth="none"))
    async with _client(proxy_client, cfg, imap_user) as jmap:
        session = await jmap.session()
        extensions = session["accounts"][jmap.account_id]["accountCapabilities"][SUBMISSION]
        assert "SIZE" not in extensions["submissionExtensions"]
        assert "DSN" not in extensions["submissionExtensions"]
        raw = draft(jmap, "stock", body="Gr\u00fc\u00dfe\r\n")  # 8-bit: BODY=8BITMIME
        _, result = await send(jmap, "stock", raw, imap_oracle)
        assert "k1" in result["created"], result
        [(mail_from, options, rcpts, data)] = recorder.received
        assert mail_from == login_address(jmap) and rcpts == ["ann@example.com"]
        assert options == ["BODY=8BITMIME"]  # no SIZE=, no DSN parameters
        assert data == raw


class _Refuser(_Recorder):
    """Refuses MAIL FROM or the DATA with a chosen reply."""

    def __init__(self, mail_reply: str | None = None, data_reply: str | None = None) -> None:
        super().__init__()
        self.mail_reply = mail_reply
        self.data_reply = data_reply

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.data_reply or await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(
    ("mail_reply", "data_reply", "expected"),
    [
        ("553 5.7.1 <x>: Sender address rejected: not owned by user", None, "forbiddenMailFrom"),
        (None, "550 5.7.1 From address is not one of your addresses", "forbiddenFrom"),
        (None, "554 5.7.1 Message rejected as spam", "forbiddenToSend"),
        (None, "552 5.3.4 Message too big", "tooLarge"),
        ("452 4.3.1 Insufficient system storage", None, "forbiddenToSend"),
    ],
)
async def test_sub_03_smtp_refusals_map_to_set_errors(
    imap_user: ImapUser,
    tmp_path: Path,
    imap_oracle: imaplib.IMAP4,
    mail_reply: str | None,
    data_reply: str | None,
    expected: str,
    proxy_client: ProxyClient,
) -> None:
    refuser = _Refuser(mail_reply, data_reply)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(refuser, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        cfg = _config(imap_user, tmp_path, port)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, auth="none"))
        async with _client(proxy_client, cfg, imap_user) as jmap:
            raw = draft(jmap, "refusal")
            _, result = await send(jmap, "refusal", raw, imap_oracle)
            error = result["notCreated"]["k1"]
            assert error["type"] == expected
            assert (mail_reply or data_reply or "")[:9] in error["description"]
            if expected == "tooLarge":
                # smaller than the advertised SIZE, yet refused: the bound is below this size
                assert error["maxSize"] == len(raw) - 1
            assert (await ok(jmap, "EmailSubmission/get", {"ids": None}))["list"] == []
    finally:
        controller.stop()
    assert refuser.received == []


async def test_too_large_for_the_advertised_size_sub_03(
    imap_user: ImapUser, tmp_path: Path, imap_oracle: imaplib.IMAP4, proxy_client: ProxyClient
) -> None:
    recorder = _Recorder()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(recorder, hostname="127.0.0.1", port=port, data_size_limit=300)
    controller.start()
    try:
        cfg = _config(imap_user, tmp_path, port)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, auth="none"))
        async with _client(proxy_client, cfg, imap_user) as jmap:
            _, result = await send(
                jmap, "big", draft(jmap, "big", body="x" * 400 + "\r\n"), imap_oracle
            )
            assert result["notCreated"]["k1"]["type"] == "tooLarge"
            assert result["notCreated"]["k1"]["maxSize"] == 300
    finally:
        controller.stop()
    assert recorder.received == []


# --- SUB-03: refusals ----------------------------------------------------------------------


async def test_sub_03_a_refused_recipient_is_invalid_recipients_and_nothing_is_sent(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    sink.reject_recipient("bad@example.com", "550 5.1.1 <bad@example.com>: no such user")
    headers = f"From: {login_address(jmap)}\r\nTo: ann@example.com, bad@example.com\r\n"
    _, result = await send(jmap, "refused", draft(jmap, "refused", headers=headers), imap_oracle)
    error = result["notCreated"]["k1"]
    assert error["type"] == "invalidRecipients"
    assert error["invalidRecipients"] == ["bad@example.com"]
    assert "550 5.1.1" in error["description"]
    assert sink.messages == []
    assert (await ok(jmap, "EmailSubmission/get", {"ids": None}))["list"] == []


async def test_sub_03_too_many_recipients_gives_max_recipients_and_sends_nothing(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    """RFC 8621 §7.5 tooManyRecipients with maxRecipients, from the server's ``452 4.5.3``
    (RFC 5321 §4.5.3.1.10) at the first recipient beyond its limit; all or nothing."""
    sink.max_recipients = 2
    to = "ann@example.com, bob@example.com, cy@example.com"
    headers = f"From: {login_address(jmap)}\r\nTo: {to}\r\n"
    _, result = await send(jmap, "crowd", draft(jmap, "crowd", headers=headers), imap_oracle)
    error = result["notCreated"]["k1"]
    assert error["type"] == "tooManyRecipients"
    assert error["maxRecipients"] == 2
    assert "452 4.5.3" in error["description"]
    assert sink.messages == []
    sink.max_recipients = 3  # within the limit, the same recipients go out
    _, result = await send(jmap, "crowd 2", draft(jmap, "crowd 2", headers=headers), imap_oracle)
    assert "k1" in result["created"], result
    (message,) = sink.wait_for(1)
    assert len(message.rcpt_tos) == 3


async def test_sub_03_all_recipients_refused(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    sink.reject_recipient("ann@example.com")
    sink.reject_recipient("bob@example.com", "553 5.7.1 relaying denied")
    headers = f"From: {login_address(jmap)}\r\nTo: ann@example.com\r\nCc: bob@example.com\r\n"
    _, result = await send(
        jmap, "all refused", draft(jmap, "all refused", headers=headers), imap_oracle
    )
    error = result["notCreated"]["k1"]
    assert error["type"] == "invalidRecipients"
    assert error["invalidRecipients"] == ["ann@example.com", "bob@example.com"]
    assert sink.messages == []


async def test_sub_03_no_recipients(jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4) -> None:
    headers = f"From: {login_address(jmap)}\r\n"
    _, result = await send(jmap, "nobody", draft(jmap, "nobody", headers=headers), imap_oracle)
    assert result["notCreated"]["k1"]["type"] == "noRecipients"
    envelope = {"mailFrom": {"email": login_address(jmap), "parameters": None}, "rcptTo": []}
    append(imap_oracle, "Drafts", draft(jmap, "nobody 2"))
    result = await ok(
        jmap,
        "EmailSubmission/set",
        {
            "create": {
                "k": {
                    "identityId": await identity_id(jmap, login_address(jmap)),
                    "emailId": await email_id(jmap, "nobody 2"),
                    "envelope": envelope,
                }
            }
        },
    )
    assert result["notCreated"]["k"]["type"] == "noRecipients"
    assert sink.messages == []


async def test_sub_03_unknown_email_or_identity_is_invalid_properties(jmap: Jmap) -> None:
    ident = await identity_id(jmap, login_address(jmap))
    result = await ok(
        jmap,
        "EmailSubmission/set",
        {
            "create": {
                "a": {"identityId": ident, "emailId": "Mnope"},
                "b": {"identityId": "Inope", "emailId": "Mnope"},
                "c": {"identityId": ident, "emailId": "#nope"},
            }
        },
    )
    assert result["notCreated"]["a"]["properties"] == ["emailId"]
    assert result["notCreated"]["b"]["properties"] == ["identityId"]
    assert result["notCreated"]["c"]["type"] == "invalidProperties"


async def test_sub_03_forbidden_from_and_mail_from(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    headers = "From: Boss <boss@example.org>\r\nTo: ann@example.com\r\n"  # another user's
    _, result = await send(jmap, "spoof", draft(jmap, "spoof", headers=headers), imap_oracle)
    assert result["notCreated"]["k1"]["type"] == "forbiddenFrom"
    envelope = {
        "mailFrom": {"email": "boss@example.org", "parameters": None},
        "rcptTo": [{"email": "ann@example.com", "parameters": None}],
    }
    append(imap_oracle, "Drafts", draft(jmap, "spoof env"))
    result = await ok(
        jmap,
        "EmailSubmission/set",
        {
            "create": {
                "k": {
                    "identityId": await identity_id(jmap, login_address(jmap)),
                    "emailId": await email_id(jmap, "spoof env"),
                    "envelope": envelope,
                }
            }
        },
    )
    assert result["notCreated"]["k"]["type"] == "forbiddenMailFrom"
    assert sink.messages == []


async def test_sub_03_login_refused_by_the_server_is_forbidden_to_send(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    sink.require_auth = True
    sink.users.pop(jmap.username)  # the login fails: the server refuses to send for us
    _, result = await send(jmap, "no auth", draft(jmap, "no auth"), imap_oracle)
    error = result["notCreated"]["k1"]
    assert error["type"] == "forbiddenToSend"
    assert "535" in error["description"]
    assert sink.messages == []


async def test_auth_as_the_user(jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4) -> None:
    await send(jmap, "auth", draft(jmap, "auth"), imap_oracle)
    [message] = sink.wait_for(1)
    assert message.auth_user == jmap.username
    # a password login: PLAIN or LOGIN, although the sink offers XOAUTH2 too
    assert message.auth_mechanism in ("PLAIN", "LOGIN")
    assert sink.xoauth2_attempts == []


async def test_smtp_down_is_server_unavailable_without_side_effects(
    imap_user: ImapUser, tmp_path: Path, imap_oracle: imaplib.IMAP4, proxy_client: ProxyClient
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _client(proxy_client, _config(imap_user, tmp_path, port), imap_user) as jmap:
        append(imap_oracle, "Drafts", draft(jmap, "down"))
        mail_id = await email_id(jmap, "down")
        boxes = await mailbox_ids(jmap)
        before = await ok(jmap, "EmailSubmission/get", {"ids": None})
        responses = await calls(
            jmap,
            [
                "EmailSubmission/set",
                {
                    "create": {
                        "k": {
                            "identityId": await identity_id(jmap, login_address(jmap)),
                            "emailId": mail_id,
                        }
                    },
                    "onSuccessUpdateEmail": {
                        "#k": {
                            f"mailboxIds/{boxes['Drafts']}": None,
                            f"mailboxIds/{boxes['Sent']}": True,
                        }
                    },
                },
                "s",
            ],
        )
        [(name, error, call_id)] = responses
        assert (name, error["type"], call_id) == ("error", "serverUnavailable", "s")
        assert error["description"].startswith(f"SMTP connect at 127.0.0.1:{port}: ")
        assert "Connect call failed" in error["description"]
        after = await ok(jmap, "EmailSubmission/get", {"ids": None})
        assert after["list"] == []
        # the submission is stored before the send and destroyed when nothing went out:
        # the state moves, and /changes says the id is gone
        changes = await ok(jmap, "EmailSubmission/changes", {"sinceState": before["state"]})
        assert changes["created"] == [] and changes["updated"] == []
        assert "down" in subjects_and_flags(imap_oracle, "Drafts")
        assert subjects_and_flags(imap_oracle, "Sent") == {}


# --- SUB-02: the implicit Email/set ----------------------------------------------------------


async def test_sub_02_on_success_update_email_files_the_draft_in_sent_once(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    append(imap_oracle, "Drafts", draft(jmap, "to sent"))
    mail_id = await email_id(jmap, "to sent")
    boxes = await mailbox_ids(jmap)
    responses = await calls(
        jmap,
        [
            "EmailSubmission/set",
            {
                "create": {
                    "k1490": {
                        "identityId": await identity_id(jmap, login_address(jmap)),
                        "emailId": mail_id,
                    }
                },
                "onSuccessUpdateEmail": {
                    "#k1490": {
                        f"mailboxIds/{boxes['Drafts']}": None,
                        f"mailboxIds/{boxes['Sent']}": True,
                        "keywords/$draft": None,
                    }
                },
            },
            "0",
        ],
    )
    assert [r[0] for r in responses] == ["EmailSubmission/set", "Email/set"]
    assert [r[2] for r in responses] == ["0", "0"]
    assert "k1490" in responses[0][1]["created"]
    assert responses[1][1]["updated"] == {mail_id: None}
    assert len(sink.wait_for(1)) == 1
    assert subjects_and_flags(imap_oracle, "Drafts") == {}
    assert subjects_and_flags(imap_oracle, "Sent") == {"to sent": {"\\Seen"}}  # exactly once
    got = await ok(jmap, "Email/get", {"ids": [mail_id], "properties": ["mailboxIds", "keywords"]})
    assert got["list"][0]["mailboxIds"] == {boxes["Sent"]: True}
    assert got["list"][0]["keywords"] == {"$seen": True}


async def test_sub_02_on_success_destroy_email(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    append(imap_oracle, "Drafts", draft(jmap, "to destroy"))
    mail_id = await email_id(jmap, "to destroy")
    responses = await calls(
        jmap,
        [
            "EmailSubmission/set",
            {
                "create": {
                    "k": {
                        "identityId": await identity_id(jmap, login_address(jmap)),
                        "emailId": mail_id,
                    }
                },
                "onSuccessDestroyEmail": ["#k"],
            },
            "0",
        ],
    )
    assert [r[0] for r in responses] == ["EmailSubmission/set", "Email/set"]
    assert responses[1][1]["destroyed"] == [mail_id]
    assert subjects_and_flags(imap_oracle, "Drafts") == {}


async def test_sub_02_nothing_implicit_for_a_failed_create(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    sink.reject_recipient("ann@example.com")
    append(imap_oracle, "Drafts", draft(jmap, "failed"))
    mail_id = await email_id(jmap, "failed")
    responses = await calls(
        jmap,
        [
            "EmailSubmission/set",
            {
                "create": {
                    "k": {
                        "identityId": await identity_id(jmap, login_address(jmap)),
                        "emailId": mail_id,
                    }
                },
                "onSuccessDestroyEmail": ["#k"],
            },
            "0",
        ],
    )
    assert [r[0] for r in responses] == ["EmailSubmission/set"]
    assert "failed" in subjects_and_flags(imap_oracle, "Drafts")


# --- EmailSubmission get / changes / query / update / destroy --------------------------------


async def test_submission_changes_query_update_and_destroy(
    jmap: Jmap, sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    state0 = (await ok(jmap, "EmailSubmission/get", {"ids": []}))["state"]
    query0 = await ok(jmap, "EmailSubmission/query", {})
    first_email, first = await send(jmap, "q one", draft(jmap, "q one"), imap_oracle)
    second_email, second = await send(jmap, "q two", draft(jmap, "q two"), imap_oracle)
    one, two = first["created"]["k1"]["id"], second["created"]["k1"]["id"]
    changes = await ok(jmap, "EmailSubmission/changes", {"sinceState": state0})
    assert sorted(changes["created"]) == sorted([one, two])
    assert changes["updated"] == [] and changes["destroyed"] == []
    everything = await ok(jmap, "EmailSubmission/query", {"sort": [{"property": "sentAt"}]})
    assert everything["ids"] == [one, two]
    by_email = await ok(jmap, "EmailSubmission/query", {"filter": {"emailIds": [second_email]}})
    assert by_email["ids"] == [two]
    thread = first["created"]["k1"]["threadId"]
    by_thread = await ok(jmap, "EmailSubmission/query", {"filter": {"threadIds": [thread]}})
    assert by_thread["ids"] == [one]
    ident = await identity_id(jmap, login_address(jmap))
    final = await ok(
        jmap,
        "EmailSubmission/query",
        {
            "filter": {
                "operator": "AND",
                "conditions": [
                    {"identityIds": [ident]},
                    {"undoStatus": "final"},
                    {"after": "2000-01-01T00:00:00Z"},
                ],
            },
            "sort": [{"property": "emailId", "isAscending": False}],
        },
    )
    assert sorted(final["ids"]) == sorted([one, two])
    before = await ok(jmap, "EmailSubmission/query", {"filter": {"before": "2000-01-01T00:00:00Z"}})
    assert before["ids"] == []
    bad = await calls(jmap, ["EmailSubmission/query", {"filter": {"subject": "x"}}, "b"])
    assert bad[0][1]["type"] == "unsupportedFilter"

    result = await ok(
        jmap,
        "EmailSubmission/set",
        {
            "update": {one: {"undoStatus": "canceled"}, two: {"emailId": first_email}},
            "destroy": [two],
        },
    )
    assert result["notUpdated"][one]["type"] == "cannotUnsend"
    assert result["notUpdated"][two]["type"] == "willDestroy"
    assert result["destroyed"] == [two]
    assert len(sink.messages) == 2  # destroying the record does not touch the delivery
    got = await ok(jmap, "EmailSubmission/get", {"ids": [one, two]})
    assert [s["id"] for s in got["list"]] == [one] and got["notFound"] == [two]
    changes = await ok(jmap, "EmailSubmission/changes", {"sinceState": changes["newState"]})
    assert changes["destroyed"] == [two] and changes["created"] == []
    query_changes = await ok(
        jmap, "EmailSubmission/queryChanges", {"sinceQueryState": query0["queryState"]}
    )
    assert query_changes["added"] == [{"id": one, "index": 0}]
    assert two in query_changes["removed"]
    immutable = await ok(jmap, "EmailSubmission/set", {"update": {one: {"emailId": "Mx"}}})
    assert immutable["notUpdated"][one]["type"] == "invalidProperties"


# --- Identity ----------------------------------------------------------------------------------


async def test_identities_from_the_configuration(jmap: Jmap) -> None:
    got = await ok(jmap, "Identity/get", {"ids": None})
    by_email = {i["email"]: i for i in got["list"]}
    assert set(by_email) == {login_address(jmap), "sales@example.org", "*@example.net"}
    assert all(i["mayDelete"] is False for i in got["list"])
    assert by_email["sales@example.org"]["name"] == "Sales"
    assert by_email[login_address(jmap)] == {
        "id": by_email[login_address(jmap)]["id"],
        "name": "",
        "email": login_address(jmap),
        "replyTo": None,
        "bcc": None,
        "textSignature": "",
        "htmlSignature": "",
        "mayDelete": False,
    }
    again = await ok(jmap, "Identity/get", {"ids": None})
    assert again == got  # stable ids, no new state


async def test_identity_crud_forbidden_from_and_changes(jmap: Jmap) -> None:
    state0 = (await ok(jmap, "Identity/get", {"ids": []}))["state"]
    result = await ok(
        jmap,
        "Identity/set",
        {
            "create": {
                "alias": {
                    "email": "me@example.net",
                    "name": "Me",
                    "replyTo": [{"name": None, "email": "reply@example.net"}],
                    "textSignature": "-- \nme",
                },
                "spoof": {"email": "boss@example.org"},
                "bad": {"email": "not an address"},
                "badreply": {"email": "sales@example.org", "bcc": [{"email": "x"}]},
                "server": {"email": "sales@example.org", "mayDelete": True},
            }
        },
    )
    alias = result["created"]["alias"]
    assert alias["mayDelete"] is True and alias["bcc"] is None and alias["htmlSignature"] == ""
    assert result["notCreated"]["spoof"]["type"] == "forbiddenFrom"
    assert result["notCreated"]["bad"]["properties"] == ["email"]
    assert result["notCreated"]["badreply"]["properties"] == ["bcc"]
    assert result["notCreated"]["server"]["properties"] == ["mayDelete"]
    alias_id = alias["id"]
    config_id = await identity_id(jmap, "sales@example.org")
    result = await ok(
        jmap,
        "Identity/set",
        {
            "update": {
                alias_id: {"name": "Me again", "bcc": [{"email": "me@example.net"}]},
                config_id: {"email": "other@example.org"},
            },
            "destroy": [config_id],
        },
    )
    assert result["updated"] == {alias_id: None}
    assert result["notUpdated"][config_id]["type"] == "willDestroy"
    assert result["notDestroyed"][config_id]["type"] == "forbidden"
    result = await ok(jmap, "Identity/set", {"update": {config_id: {"email": "x@example.org"}}})
    assert result["notUpdated"][config_id]["properties"] == ["email"]
    got = await ok(jmap, "Identity/get", {"ids": [alias_id]})
    assert got["list"][0]["name"] == "Me again"
    assert got["list"][0]["bcc"] == [{"name": None, "email": "me@example.net"}]
    changes = await ok(jmap, "Identity/changes", {"sinceState": state0})
    assert changes["created"] == [alias_id] and changes["updated"] == []
    result = await ok(jmap, "Identity/set", {"destroy": [alias_id]})
    assert result["destroyed"] == [alias_id]
    changes = await ok(jmap, "Identity/changes", {"sinceState": changes["newState"]})
    assert changes["destroyed"] == [alias_id]


async def test_identities_any_from(
    imap_user: ImapUser, tmp_path: Path, sink: SmtpSink, proxy_client: ProxyClient
) -> None:
    cfg = _config(imap_user, tmp_path, sink.port)
    cfg = dataclasses.replace(
        cfg, submission=dataclasses.replace(cfg.submission, identities_any_from=True)
    )
    async with _client(proxy_client, cfg, imap_user) as jmap:
        result = await ok(jmap, "Identity/set", {"create": {"x": {"email": "any@else.example"}}})
        assert "x" in result["created"]


async def test_session_advertises_submission(jmap: Jmap) -> None:
    session = await jmap.session()
    assert SUBMISSION in session["capabilities"]
    assert session["primaryAccounts"][SUBMISSION] == jmap.account_id
    capability = session["accounts"][jmap.account_id]["accountCapabilities"][SUBMISSION]
    assert capability["maxDelayedSend"] == 0
    extensions = capability["submissionExtensions"]
    assert extensions["SIZE"] == ["33554432"] and extensions["DSN"] == []
    assert "AUTH" not in extensions and "PIPELINING" not in extensions
    assert (await jmap.session())["state"] == session["state"]
