"""Several upstream providers in one instance (README "Several upstream servers").

Two real Dovecots, each with users of its own domain: the session ``dovecot`` is the
default upstream (top-level [imap] and [smtp]), a second Dovecot of this module serves
``b.example`` (an ``[[upstreams]]`` entry), each with an SMTP sink of its own.  A plain
``imaplib`` connection to the right server is the oracle; the other server is checked to
have seen nothing.
"""

from __future__ import annotations

import dataclasses
import imaplib
import logging
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from devservers.smtp import SmtpSink
from imapjmap.config import Config, ImapConfig, SmtpConfig, UpstreamConfig
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.pushkit import external_append, open_events, wait_watching

SUBMISSION = "urn:ietf:params:jmap:submission"
USING = [CORE, MAIL, SUBMISSION]

pytestmark = pytest.mark.dovecot


@pytest.fixture(scope="module")
def dovecot_b() -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    with dovecot_root("dovecot-b") as root:
        server = DovecotServer.start(root)
        yield server
        server.stop()


@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[SmtpSink, SmtpSink]]:
    a, b = SmtpSink.start(require_auth=True), SmtpSink.start(require_auth=True)
    yield a, b
    a.stop()
    b.stop()


def _user(server: DovecotServer, domain: str) -> ImapUser:
    username = f"u{secrets.token_hex(4)}@{domain}"
    password = secrets.token_urlsafe(12)
    server.add_user(username, password)
    return ImapUser(username, password, server.host, server.port)


def _imap(server: DovecotServer) -> ImapConfig:
    return ImapConfig(
        host=server.host, port=server.port, security="none", pool_size=2, connect_timeout=3.0
    )


def _smtp(sink: SmtpSink) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=sink.port, security="none", timeout=10.0)


def _config(
    a: ImapUser,
    tmp_path: Path,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    *,
    default: bool = True,
) -> Config:
    entry = UpstreamConfig(("b.example",), _imap(dovecot_b), "b", _smtp(sinks[1]))
    cfg = dataclasses.replace(proxy_config(a, tmp_path), smtp=_smtp(sinks[0]), upstreams=(entry,))
    return cfg if default else dataclasses.replace(cfg, default_upstream=False)


async def _ok(jmap: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    body = await jmap.request([[name, {"accountId": jmap.account_id, **args}, "c"]], USING)
    [[response_name, response, _]] = body["methodResponses"]
    assert response_name == name, response
    result: dict[str, Any] = response
    return result


def _append(user: ImapUser, subject: str, mailbox: str = "INBOX") -> None:
    raw = (
        f"From: {user.username}\r\nTo: ann@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(6)}@example.org>\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()
    client = user.connect()
    try:
        typ, _ = client.append(mailbox, r"(\Seen)", None, raw)
        assert typ == "OK"
    finally:
        client.logout()


def _flags(user: ImapUser, mailbox: str = "INBOX") -> dict[str, set[str]]:
    """Subject -> flags of every message in ``mailbox``, as the user's own server says."""
    client = user.connect()
    try:
        client.select(mailbox, readonly=True)
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        out: dict[str, set[str]] = {}
        for item in data:
            if isinstance(item, tuple):
                found = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                assert found
                subject = item[1].decode().split(":", 1)[1].strip()
                out[subject] = set(found.group(1).decode().split()) - {"\\Recent"}
        return out
    finally:
        client.logout()


def _login_refused(server: DovecotServer, user: ImapUser) -> bool:
    try:
        imaplib.IMAP4(server.host, server.port, timeout=10).login(user.username, user.password)
    except imaplib.IMAP4.error:
        return True
    return False


async def test_users_of_two_upstreams_work_side_by_side(
    dovecot: DovecotServer,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """Each login reaches its own domain's IMAP and SMTP servers, and nothing of it the
    other's: Mailbox/get, Email/query, Email/set (checked over IMAP on the right server)
    and EmailSubmission/set (at the right SMTP sink)."""
    alice, bob = _user(dovecot, "a.example"), _user(dovecot_b, "b.example")
    for sink, user in zip(sinks, (alice, bob), strict=True):
        sink.reset()
        sink.require_auth = True
        sink.add_user(user.username, user.password)
    assert _login_refused(dovecot, bob) and _login_refused(dovecot_b, alice)
    _append(alice, "for alice")
    _append(bob, "for bob")
    async with proxy_client(_config(alice, tmp_path, dovecot_b, sinks)) as http:
        a, b = Jmap(http, alice.username, alice.password), Jmap(http, bob.username, bob.password)
        sessions = [await a.session(), await b.session()]
        assert a.account_id != b.account_id
        assert b.account_id not in sessions[0]["accounts"]
        ready = await (await http.get("/readyz")).json()
        assert ready["status"] == "ready", ready
        assert set(ready["checks"]["upstreams"]) == {"default", "b"}
        assert [s["username"] for s in sessions] == [alice.username, bob.username]
        for jmap, user in ((a, alice), (b, bob)):
            boxes = await _ok(jmap, "Mailbox/get", {"properties": ["name", "role"]})
            inbox = next(m for m in boxes["list"] if m["role"] == "inbox")
            found = await _ok(
                jmap,
                "Email/query",
                {"filter": {"inMailbox": inbox["id"]}, "collapseThreads": False},
            )
            got = await _ok(jmap, "Email/get", {"ids": found["ids"], "properties": ["subject"]})
            mine = "for alice" if user is alice else "for bob"
            assert [e["subject"] for e in got["list"]] == [mine]
            updated = await _ok(
                jmap,
                "Email/set",
                {"update": {found["ids"][0]: {"keywords/$flagged": True}}},
            )
            assert found["ids"][0] in updated["updated"]
        assert _flags(alice) == {"for alice": {"\\Seen", "\\Flagged"}}
        assert _flags(bob) == {"for bob": {"\\Seen", "\\Flagged"}}

        for jmap, user in ((a, alice), (b, bob)):
            subject = f"sent by {user.username}"
            draft = (
                f"From: {user.username}\r\nTo: ann@example.com\r\nSubject: {subject}\r\n"
                "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHi.\r\n"
            ).encode()
            client = user.connect()
            assert client.append("Drafts", r"(\Draft)", None, draft)[0] == "OK"
            client.logout()
            found = await _ok(jmap, "Email/query", {"filter": {"subject": subject}})
            identities = await _ok(jmap, "Identity/get", {"ids": None})
            [identity] = [i["id"] for i in identities["list"] if i["email"] == user.username]
            created = await _ok(
                jmap,
                "EmailSubmission/set",
                {"create": {"k": {"identityId": identity, "emailId": found["ids"][0]}}},
            )
            assert "k" in created["created"], created
        [to_a], [to_b] = sinks[0].wait_for(1), sinks[1].wait_for(1)
        assert to_a.mail_from == alice.username and to_b.mail_from == bob.username
        assert len(sinks[0].wait_for(1)) == 1 and len(sinks[1].wait_for(1)) == 1


async def test_an_mdn_goes_to_the_login_s_own_smtp_server_mdn_01(
    dovecot: DovecotServer,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """RFC 9007 §2.1: MDN/send submits the report like EmailSubmission does, so a login of
    an ``[[upstreams]]`` entry sends it through that entry's SMTP server, not the default's."""
    alice, bob = _user(dovecot, "a.example"), _user(dovecot_b, "b.example")
    for sink, user in zip(sinks, (alice, bob), strict=True):
        sink.reset()
        sink.require_auth = True
        sink.add_user(user.username, user.password)
    asking = (
        f"From: carol@example.net\r\nTo: {bob.username}\r\nSubject: please ack\r\n"
        "Message-ID: <ack.b@example.net>\r\nDisposition-Notification-To: carol@example.net\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHi.\r\n"
    ).encode()
    client = bob.connect()
    assert client.append("INBOX", None, None, asking)[0] == "OK"
    client.logout()
    async with proxy_client(_config(alice, tmp_path, dovecot_b, sinks)) as http:
        b = Jmap(http, bob.username, bob.password)
        await b.session()
        found = await _ok(b, "Email/query", {"filter": {"subject": "please ack"}})
        identities = await _ok(b, "Identity/get", {"ids": None})
        [identity] = [i["id"] for i in identities["list"] if i["email"] == bob.username]
        body = await b.request(
            [
                [
                    "MDN/send",
                    {
                        "accountId": b.account_id,
                        "identityId": identity,
                        "send": {
                            "k": {
                                "forEmailId": found["ids"][0],
                                "disposition": {
                                    "actionMode": "manual-action",
                                    "sendingMode": "mdn-sent-manually",
                                    "type": "displayed",
                                },
                            }
                        },
                    },
                    "c",
                ]
            ],
            [*USING, "urn:ietf:params:jmap:mdn"],
        )
        [name, sent, _] = body["methodResponses"][0]
        assert name == "MDN/send" and "k" in sent["sent"], sent
    [report] = sinks[1].wait_for(1)
    assert report.rcpt_tos == ("carol@example.net",)
    assert sinks[0].wait_for(0) == []


async def test_a_login_no_upstream_serves_is_refused_with_401(
    dovecot: DovecotServer,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    proxy_client: ProxyClient,
) -> None:
    """Without a default upstream, a login of another domain (even a real one of the
    first server) goes nowhere: 401, and the log says why without the password."""
    caplog.set_level(logging.INFO, logger="imapjmap")
    alice = _user(dovecot, "a.example")
    cfg = _config(alice, tmp_path, dovecot_b, sinks, default=False)
    async with proxy_client(cfg) as http:
        jmap = Jmap(http, alice.username, alice.password)
        resp = await http.get("/.well-known/jmap", headers=jmap.auth())
        assert resp.status == 401
        assert "Basic" in resp.headers["WWW-Authenticate"]
        assert "no mail server is configured for this login's domain" in await resp.text()
        bob = _user(dovecot_b, "b.example")
        await Jmap(http, bob.username, bob.password).session()  # the entry's users are served
    said = [r.getMessage() for r in caplog.records if "no upstream serves" in r.getMessage()]
    assert said == [f"login of {alice.username!r} refused: no upstream serves its domain"]
    assert alice.password not in caplog.text


async def test_a_login_moved_to_another_upstream_is_another_account(
    dovecot: DovecotServer,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """The same login name on two servers (its domain moved to an [[upstreams]] entry, the
    cache kept) is two accounts: nothing cached from the first is served for the second."""
    name, password = f"u{secrets.token_hex(4)}@b.example", secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    dovecot_b.add_user(name, password)
    on_a = ImapUser(name, password, dovecot.host, dovecot.port)
    client = on_a.connect()
    assert client.create("OnlyOnA")[0] == "OK"
    client.logout()
    _append(on_a, "cached from a")
    first = dataclasses.replace(_config(on_a, tmp_path, dovecot_b, sinks), upstreams=())
    async with proxy_client(first) as http:
        jmap = Jmap(http, name, password)
        await jmap.session()
        boxes = await _ok(jmap, "Mailbox/get", {"properties": ["name"]})
        assert "OnlyOnA" in {m["name"] for m in boxes["list"]}
        await _ok(jmap, "Email/query", {})
        id_on_a = jmap.account_id
    async with proxy_client(_config(on_a, tmp_path, dovecot_b, sinks)) as http:
        jmap = Jmap(http, name, password)
        await jmap.session()
        assert jmap.account_id != id_on_a
        boxes = await _ok(jmap, "Mailbox/get", {"properties": ["name"]})
        assert "OnlyOnA" not in {m["name"] for m in boxes["list"]}
        assert (await _ok(jmap, "Email/query", {}))["ids"] == []
        _, stale = (await jmap.request([["Mailbox/get", {"accountId": id_on_a}, "c"]]))[
            "methodResponses"
        ][0][:2]
        assert stale == {"type": "accountNotFound"}


async def test_one_upstream_down_leaves_the_other_s_users_served(
    dovecot: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """Stopping one upstream's Dovecot: its users get 503 (a new login) or
    serverUnavailable (a logged-in one); the other upstream's users are served as before,
    and /readyz says which upstream is down without taking the instance out (200)."""
    ensure_dovecot_installed()
    with dovecot_root("dovecot-down") as root:
        doomed = DovecotServer.start(root)
        try:
            alice, bob = _user(dovecot, "a.example"), _user(doomed, "b.example")
            carol = _user(doomed, "b.example")
            _append(alice, "still here")
            async with proxy_client(_config(alice, tmp_path, doomed, sinks)) as http:
                a, b = (
                    Jmap(http, alice.username, alice.password),
                    Jmap(http, bob.username, bob.password),
                )
                await a.session()
                await b.session()
                await _ok(b, "Mailbox/get", {"properties": ["name"]})
                doomed.stop()

                body = await b.request([["Mailbox/get", {"accountId": b.account_id}, "c"]])
                [[name, error, _]] = body["methodResponses"]
                assert (name, error["type"]) == ("error", "serverUnavailable"), body
                carol_auth = Jmap(http, carol.username, carol.password).auth()
                assert (await http.get("/.well-known/jmap", headers=carol_auth)).status == 503

                found = await _ok(a, "Email/query", {"filter": {"subject": "still here"}})
                assert len(found["ids"]) == 1
                resp = await http.get("/readyz")
                ready = await resp.json()
                assert resp.status == 200 and ready["status"] == "degraded", ready
                assert ready["checks"]["upstreams"]["default"]["ok"]
                assert not ready["checks"]["upstreams"]["b"]["ok"]
        finally:
            doomed.stop()


async def test_push_watches_each_login_on_its_own_upstream_core_push_01(
    dovecot: DovecotServer,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """An APPEND on the second upstream reaches its user's EventSource: the watcher logs in
    to that user's server (NOTIFY there), not the default's."""
    alice, bob = _user(dovecot, "a.example"), _user(dovecot_b, "b.example")
    async with proxy_client(_config(alice, tmp_path, dovecot_b, sinks)) as http:
        jmap = Jmap(http, bob.username, bob.password)
        await jmap.session()
        events = await open_events(jmap)
        await events.next()
        await wait_watching(jmap)
        oracle = bob.connect()
        try:
            await external_append(oracle, "pushed on b")
        finally:
            oracle.logout()
        while True:
            event = await events.next(timeout=10)
            if "Email" in event.data["changed"].get(jmap.account_id, {}):
                break
        found = await _ok(jmap, "Email/query", {"filter": {"subject": "pushed on b"}})
        assert len(found["ids"]) == 1
        events.resp.close()


async def test_readyz_is_503_only_when_every_upstream_is_down(
    dovecot: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    with socket.socket() as one, socket.socket() as two:
        one.bind(("127.0.0.1", 0))
        two.bind(("127.0.0.1", 0))
        closed = [int(one.getsockname()[1]), int(two.getsockname()[1])]
    alice = _user(dovecot, "a.example")
    cfg = _config(alice, tmp_path, dovecot, sinks)
    cfg = dataclasses.replace(
        cfg,
        imap=dataclasses.replace(cfg.imap, port=closed[0]),
        upstreams=(
            dataclasses.replace(
                cfg.upstreams[0], imap=dataclasses.replace(cfg.upstreams[0].imap, port=closed[1])
            ),
        ),
    )
    async with proxy_client(cfg) as http:
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "not ready", body
        checks = body["checks"]
        assert not checks["imap"]["ok"]
        assert [c["ok"] for c in checks["upstreams"].values()] == [False, False]


@pytest.mark.cyrus
async def test_a_cyrus_default_and_a_dovecot_entry_side_by_side(
    cyrus: CyrusServer,
    dovecot_b: DovecotServer,
    sinks: tuple[SmtpSink, SmtpSink],
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """Two makes of server at once: a plain login ("carol", no domain) goes to the default
    upstream, Cyrus; a b.example login to the entry's Dovecot.  Each sees its own mail and
    its writes land on its own server."""
    carol = ImapUser(
        f"carol-{secrets.token_hex(4)}", secrets.token_urlsafe(12), cyrus.host, cyrus.port
    )
    cyrus.add_user(carol.username, carol.password)
    bob = _user(dovecot_b, "b.example")
    _append(carol, "for carol")
    _append(bob, "for bob")
    async with proxy_client(_config(carol, tmp_path, dovecot_b, sinks)) as http:
        for user in (carol, bob):
            jmap = Jmap(http, user.username, user.password)
            await jmap.session()
            found = await _ok(jmap, "Email/query", {})
            got = await _ok(jmap, "Email/get", {"ids": found["ids"], "properties": ["subject"]})
            mine = "for carol" if user is carol else "for bob"
            assert [e["subject"] for e in got["list"]] == [mine]
            await _ok(jmap, "Email/set", {"update": {found["ids"][0]: {"keywords/$flagged": True}}})
        assert _flags(carol) == {"for carol": {"\\Seen", "\\Flagged"}}
        assert _flags(bob) == {"for bob": {"\\Seen", "\\Flagged"}}
