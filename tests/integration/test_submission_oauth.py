"""EmailSubmission for a user who logged in with an OAuth bearer token: SMTP ``AUTH XOAUTH2``
(imapjmap.smtp Rule 6; RFC 8621 §7, SUB-01, SUB-03).

The SMTP server is the real aiosmtpd sink (:class:`devservers.smtp.SmtpSink`) with its
XOAUTH2 mechanism, which behaves as Google documents (a refused token: a 334 challenge
holding a base64 JSON error, then 535).  The JMAP user logs in with ``Authorization:
Bearer`` to the Gmail emulation (:mod:`tests.gmail_emulation`), the one upstream here that
takes IMAP XOAUTH2; what the SMTP server received is read back from the sink.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from devservers.smtp import SmtpSink
from imapjmap import smtp
from imapjmap.config import SmtpConfig
from imapjmap.credentials import BearerToken
from tests.gmail_emulation import GmailEmulation, make_message
from tests.integration.conftest import CORE, MAIL, Jmap
from tests.integration.instances import ProxyClient
from tests.integration.test_gmail import BearerJmap, GmailUser, gmail_config

SUBMISSION = "urn:ietf:params:jmap:submission"
USING = [CORE, MAIL, SUBMISSION]
USER = "carol@gmail.test"
PASSWORD = "app-password-5678"
TOKEN = "ya29.first-token"
TOKEN2 = "ya29.refreshed-token"


@pytest.fixture(scope="module")
def oauth_sink() -> Iterator[SmtpSink]:
    with SmtpSink.start() as sink:
        yield sink


@pytest.fixture
def sink(oauth_sink: SmtpSink) -> SmtpSink:
    oauth_sink.reset()
    oauth_sink.users.clear()
    oauth_sink.tokens.clear()
    oauth_sink.require_auth = True
    return oauth_sink


def smtp_config(sink: SmtpSink) -> SmtpConfig:
    return SmtpConfig(host=sink.host, port=sink.port, security="none", timeout=10.0)


# --- imapjmap.smtp against the sink ------------------------------------------------------------


async def _submit(sink: SmtpSink, username: str, password: str) -> smtp.SubmitResult:
    return await smtp.submit(
        smtp_config(sink),
        username=username,
        password=password,
        mail_from=username,
        mail_params={},
        rcpts=[("ann@example.com", {})],
        message=make_message("Hi", sender=username, to="ann@example.com"),
    )


async def test_a_bearer_token_logs_in_with_xoauth2(
    sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "ya29." + "A-b_c.1~" * 250  # 2 kB, as long as Google's tokens may be
    sink.add_token(USER, token)
    result = await _submit(sink, USER, BearerToken(token))
    assert result.data_reply.code == 250
    [message] = sink.wait_for(1)
    assert (message.auth_user, message.auth_mechanism) == (USER, "XOAUTH2")
    assert sink.xoauth2_attempts == [USER]
    assert token not in caplog.text


async def test_a_refused_token_is_auth_with_the_error_challenge_read(
    sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink.add_token(USER, TOKEN2)
    with pytest.raises(smtp.SubmitRefused) as refused:
        await _submit(sink, USER, BearerToken(TOKEN))
    assert refused.value.reason == "auth"
    assert refused.value.reply is not None and refused.value.reply.code == 535
    assert "status 401" in refused.value.description  # from the 334 JSON challenge
    assert TOKEN not in str(refused.value)
    assert sink.xoauth2_attempts == [USER] and sink.messages == []
    encoded = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode()
    assert TOKEN not in caplog.text and encoded not in caplog.text


async def test_no_xoauth2_offered_is_refused_before_any_auth(sink: SmtpSink) -> None:
    sink.add_token(USER, TOKEN)
    sink.offer_xoauth2 = False
    with pytest.raises(smtp.SubmitRefused) as refused:
        await _submit(sink, USER, BearerToken(TOKEN))
    assert refused.value.reason == "auth"
    assert "XOAUTH2" in refused.value.description
    assert sink.xoauth2_attempts == [] and sink.messages == []


async def test_a_password_still_uses_plain_or_login(sink: SmtpSink) -> None:
    sink.add_user(USER, PASSWORD)
    sink.add_token(USER, PASSWORD)  # XOAUTH2 would take it too: it must not be tried
    await _submit(sink, USER, PASSWORD)
    [message] = sink.wait_for(1)
    assert message.auth_user == USER
    assert message.auth_mechanism in ("PLAIN", "LOGIN")
    assert sink.xoauth2_attempts == []


# --- EmailSubmission/set for a Bearer login ----------------------------------------------------


@pytest.fixture
async def gmail(sink: SmtpSink) -> AsyncIterator[GmailUser]:
    server = GmailEmulation()
    await server.start()
    await server.start_profile()
    account = server.add_user(USER, password=PASSWORD, token=TOKEN)
    yield GmailUser(USER, PASSWORD, server.host, server.port, TOKEN, account, server)
    await server.stop()


@pytest.fixture
async def http(
    gmail: GmailUser, sink: SmtpSink, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[TestClient[Any, Any]]:
    cfg = dataclasses.replace(gmail_config(gmail, tmp_path), smtp=smtp_config(sink))
    async with proxy_client(cfg) as client:
        yield client


async def _bearer(http: TestClient[Any, Any], token: str) -> Jmap:
    client = BearerJmap(http, "", "", token=token)
    assert (await client.session())["username"] == USER
    return client


async def _call(client: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    body = await client.request(
        [[name, {"accountId": client.account_id, **args}, "c"]], using=USING
    )
    [[response_name, response, _]] = body["methodResponses"]
    assert response_name == name, response
    result: dict[str, Any] = response
    return result


async def _submit_draft(client: Jmap, gmail: GmailUser, subject: str) -> dict[str, Any]:
    """Put a draft in [Gmail]/Drafts upstream and send it with a derived envelope (SUB-01);
    the EmailSubmission/set response."""
    drafts = gmail.account.folder("[Gmail]/Drafts")
    assert drafts is not None
    gmail.account.append(drafts, make_message(subject, sender=f"Carol <{USER}>"), ["\\Draft"])
    query = await client.ok("Email/query", {"filter": {"subject": subject}})
    [email_id] = query["ids"]
    identities = await _call(client, "Identity/get", {"ids": None})
    [identity_id] = [i["id"] for i in identities["list"] if i["email"] == USER]
    create = {"k": {"identityId": identity_id, "emailId": email_id}}
    return await _call(client, "EmailSubmission/set", {"create": create})


async def test_sub_01_a_bearer_user_sends_with_xoauth2(
    http: TestClient[Any, Any],
    gmail: GmailUser,
    sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sink.add_token(USER, TOKEN)
    client = await _bearer(http, TOKEN)
    result = await _submit_draft(client, gmail, "Via OAuth")
    created = result["created"]["k"]
    assert created["undoStatus"] == "final"
    assert created["envelope"]["mailFrom"]["email"] == USER
    [message] = sink.wait_for(1)
    assert (message.auth_user, message.auth_mechanism) == (USER, "XOAUTH2")
    assert message.mail_from == USER and message.rcpt_tos == ("bob@example.org",)
    assert message.parsed()["Subject"] == "Via OAuth"
    assert TOKEN not in caplog.text


async def test_sub_03_a_token_the_smtp_server_refuses_is_forbidden_to_send(
    http: TestClient[Any, Any], gmail: GmailUser, sink: SmtpSink
) -> None:
    sink.add_token(USER, TOKEN2)  # IMAP still takes TOKEN, the SMTP server no longer does
    client = await _bearer(http, TOKEN)
    result = await _submit_draft(client, gmail, "Expired")
    error = result["notCreated"]["k"]
    assert error["type"] == "forbiddenToSend"
    assert "OAuth token" in error["description"] and "535" in error["description"]
    assert TOKEN not in error["description"]
    assert result["created"] is None
    assert sink.xoauth2_attempts == [USER] and sink.messages == []
    # the client refreshes its token: the same account, and the new token sends (the pool's
    # token was renewed by the request that brought it)
    gmail.server.tokens[TOKEN2] = USER
    fresh = await _bearer(http, TOKEN2)
    assert fresh.account_id == client.account_id
    result = await _submit_draft(fresh, gmail, "Refreshed")
    assert "k" in result["created"], result
    [message] = sink.wait_for(1)
    assert (message.auth_user, message.auth_mechanism) == (USER, "XOAUTH2")
    assert message.parsed()["Subject"] == "Refreshed"


async def test_sub_03_no_xoauth2_at_the_smtp_server_is_forbidden_to_send(
    http: TestClient[Any, Any], gmail: GmailUser, sink: SmtpSink
) -> None:
    sink.add_token(USER, TOKEN)
    sink.offer_xoauth2 = False
    client = await _bearer(http, TOKEN)
    result = await _submit_draft(client, gmail, "No XOAUTH2")
    error = result["notCreated"]["k"]
    assert error["type"] == "forbiddenToSend"
    assert "XOAUTH2" in error["description"]
    assert sink.xoauth2_attempts == [] and sink.messages == []


async def test_an_app_password_user_still_sends_with_a_password(
    http: TestClient[Any, Any], gmail: GmailUser, sink: SmtpSink
) -> None:
    sink.add_user(USER, PASSWORD)
    client = Jmap(http, USER, PASSWORD)
    await client.session()
    result = await _submit_draft(client, gmail, "App password")
    assert "k" in result["created"], result
    [message] = sink.wait_for(1)
    assert message.auth_user == USER and message.auth_mechanism in ("PLAIN", "LOGIN")
    assert sink.xoauth2_attempts == []
