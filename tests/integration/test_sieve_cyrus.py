"""SieveScript and VacationResponse against Cyrus's ManageSieve (timsieved) and lmtpd.

The requirement ids are those of test_sieve_scripts (SIEVE-*) and test_vacation (VAC-*).
Cyrus is the second server behind the same code: its ManageSieve speaks the same protocol
with other words (its own extensions, its own error texts), and its lmtpd runs the script.

The vacation answers real mail here as on Dovecot: this module's Cyrus sends what Sieve
sends to an SMTP sink of its own (``smtp_backend: host``), and the reply is read there.
Two things make Cyrus 3.6 answer, both checked on this very package:

* its idea of the user's address is ``userid@defaultdomain`` (``internal`` unless
  configured; a Sieve ``envelope "to"`` test reads ``user@internal`` whatever the LMTP
  RCPT TO said), and its vacation answers only mail whose To/Cc/Bcc holds that address or
  one of the script's ``:addresses``: the proxy names the account's identities there;
* it sends through ``smtp_backend``: ``sendmail`` (the default) runs the ``sendmail``
  program with ``-bs`` and speaks SMTP to it on its standard input, so that program must
  be a real MTA's sendmail; ``host`` connects to ``smtp_host``.

Cyrus says why a reply failed only in syslog, which its fixture catches
(:meth:`CyrusServer.log`): a missing reply shows what lmtpd logged, and the reply tests
check that it logged no Sieve error.  It logs nothing when it declines to answer (mail not
addressed to the user, an automatic message, a sender answered within ``:days``).
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import smtplib
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.smtp import ReceivedMessage, SmtpSink
from imapjmap.config import SieveConfig, SubmissionConfig
from imapjmap.managesieve.client import Endpoint, ManageSieveClient
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.sievekit import FILTER

pytestmark = pytest.mark.cyrus

SIEVE = "urn:ietf:params:jmap:sieve"
VACATION = "urn:ietf:params:jmap:vacationresponse"
USING = [CORE, MAIL, SIEVE, VACATION]
DOMAIN = "example.org"  # the proxy's submission.default_domain: user@DOMAIN is an identity


@dataclasses.dataclass(frozen=True)
class SieveCyrus:
    server: CyrusServer
    outbox: SmtpSink  # where Cyrus sends what Sieve sends


@pytest.fixture(scope="module")
def sieve_cyrus() -> Iterator[SieveCyrus]:
    """A Cyrus of this module's own, whose Sieve replies go to an SMTP sink."""
    outbox = SmtpSink.start()
    root = Path(tempfile.mkdtemp(prefix="imapjmap-cyrus-sieve-"))
    try:
        with CyrusServer.start(root, smtp=(outbox.host, outbox.port)) as server:
            yield SieveCyrus(server, outbox)
    finally:
        outbox.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class CyrusUser:
    username: str
    password: str
    host: str
    port: int
    server: CyrusServer
    outbox: SmtpSink

    @property
    def address(self) -> str:
        return f"{self.username}@{DOMAIN}"

    def deliver(self, sender: str, subject: str, to: str | None = None) -> None:
        """One message over LMTP (RCPT TO the bare userid), which runs the active script."""
        raw = (
            f"From: {sender}\r\nTo: {to or self.address}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}@{DOMAIN}>\r\n\r\nHello.\r\n"
        ).encode()
        with smtplib.LMTP(self.host, self.server.lmtp_port, timeout=30) as lmtp:
            lmtp.sendmail(sender, [self.username], raw)

    def replies_to(self, sender: str, wait: float = 0.0) -> list[ReceivedMessage]:
        """What the server sent to ``sender`` (after ``wait`` seconds)."""
        time.sleep(wait)
        return [m for m in self.outbox.messages if sender in m.rcpt_tos]

    def wait_for_reply(self, sender: str) -> ReceivedMessage:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = self.replies_to(sender)
            if found:
                return found[0]
            time.sleep(0.05)
        said = "\n".join(line for line in self.server.log() if "/lmtp[" in line)
        raise AssertionError(f"no vacation reply to {sender}; Cyrus's lmtpd said:\n{said}")

    def sieve_errors(self) -> list[str]:
        """What lmtpd logged as going wrong in this user's Sieve (a reply it could not send
        says ``sieve runtime error for USER ...: Vacation: Internal Error``)."""
        return [
            line
            for line in self.server.log()
            if "sieve" in line.lower() and "error" in line.lower() and self.username in line
        ]

    async def other_client(self) -> ManageSieveClient:
        endpoint = Endpoint(self.host, self.server.sieve_port, "none")
        return await ManageSieveClient.connect(endpoint, self.username, self.password)

    async def scripts(self) -> dict[str, tuple[bool, bytes | None]]:
        client = await self.other_client()
        try:
            return {n: (a, await client.get_script(n)) for n, a in await client.list_scripts()}
        finally:
            await client.close()


@pytest.fixture
def cyrus_user(sieve_cyrus: SieveCyrus) -> CyrusUser:
    cyrus = sieve_cyrus.server
    username, password = f"sieve-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    cyrus.add_user(username, password)
    cyrus.connect(username, password).logout()  # its mailboxes exist from the first login
    return CyrusUser(username, password, cyrus.host, cyrus.port, cyrus, sieve_cyrus.outbox)


@pytest.fixture
async def cyrus_jmap(
    cyrus_user: CyrusUser, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    cfg = proxy_config(cyrus_user, tmp_path)
    cfg = dataclasses.replace(
        cfg,
        sieve=SieveConfig(port=cyrus_user.server.sieve_port),
        submission=SubmissionConfig(default_domain=DOMAIN),
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, cyrus_user.username, cyrus_user.password)
        await client.session()
        yield client


async def ok(jmap: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    body = await jmap.request([[name, {"accountId": jmap.account_id, **args}, "c"]], using=USING)
    response_name, response, _ = body["methodResponses"][0]
    assert response_name == name, response
    result: dict[str, Any] = response
    return result


async def upload(jmap: Jmap, content: bytes) -> str:
    resp = await jmap.http.post(
        f"/jmap/upload/{jmap.account_id}/",
        data=content,
        headers={**jmap.auth(), "Content-Type": "application/sieve"},
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["blobId"])


async def test_session_names_cyrus_and_its_extensions_sieve_01(cyrus_jmap: Jmap) -> None:
    session = await cyrus_jmap.session()
    sieve = session["accounts"][cyrus_jmap.account_id]["accountCapabilities"][SIEVE]
    assert "timsieved" in sieve["implementation"]
    assert {"vacation", "include", "fileinto"} <= set(sieve["sieveExtensions"])


async def test_a_filter_made_through_jmap_files_delivered_mail_sieve_05(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.create("Bills")[0] == "OK"
    response = await ok(
        cyrus_jmap,
        "SieveScript/set",
        {
            "create": {"f": {"name": "bills", "blobId": await upload(cyrus_jmap, FILTER)}},
            "onSuccessActivateScript": "#f",
        },
    )
    assert response["updated"] == {response["created"]["f"]["id"]: {"isActive": True}}
    cyrus_user.deliver("bob@example.org", "an invoice")
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])


async def test_cyrus_refusal_is_invalid_sieve_sieve_04(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    blob = await upload(cyrus_jmap, b"bogus;\r\n")
    error = (await ok(cyrus_jmap, "SieveScript/validate", {"blobId": blob}))["error"]
    assert error["type"] == "invalidSieve" and "line 1" in error["description"]
    response = await ok(cyrus_jmap, "SieveScript/set", {"create": {"a": {"blobId": blob}}})
    assert response["notCreated"]["a"]["type"] == "invalidSieve"
    assert await cyrus_user.scripts() == {}


async def test_vacation_beside_another_clients_script_vac_07(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    client = await cyrus_user.other_client()
    try:
        await client.put_script("mine", FILTER)
        await client.set_active("mine")
    finally:
        await client.close()
    on = {"isEnabled": True, "subject": "Away", "textBody": "Back soon."}
    assert (await ok(cyrus_jmap, "VacationResponse/set", {"update": {"singleton": on}}))[
        "updated"
    ] == {"singleton": None}
    got = (await ok(cyrus_jmap, "VacationResponse/get", {}))["list"][0]
    assert got["isEnabled"] is True and got["textBody"] == "Back soon."
    scripts = await cyrus_user.scripts()
    assert [name for name, (active, _) in scripts.items() if active] == ["jmap-main"]
    off = {"isEnabled": False}
    await ok(cyrus_jmap, "VacationResponse/set", {"update": {"singleton": off}})
    scripts = await cyrus_user.scripts()
    assert scripts["mine"] == (True, FILTER)


async def vacation_set(jmap: Jmap, **props: Any) -> None:
    response = await ok(jmap, "VacationResponse/set", {"update": {"singleton": props}})
    assert response["updated"] == {"singleton": None}, response


async def test_cyrus_answers_once_per_sender_vac_04(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    await vacation_set(cyrus_jmap, isEnabled=True, subject="Away", textBody="Back on Monday.")
    sender = f"bob-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(sender, "hello")
    reply = cyrus_user.wait_for_reply(sender)
    assert reply.mail_from == "<>"  # a null reverse-path (RFC 5230 §5.2)
    parsed = reply.parsed()
    assert parsed["Subject"] == "Away" and parsed["To"].addresses[0].addr_spec == sender
    # from the address the message was sent to: the identity the script names
    assert parsed["From"].addresses[0].addr_spec == cyrus_user.address
    assert parsed["Auto-Submitted"].startswith("auto-replied")
    assert "Back on Monday." in parsed.get_content()
    cyrus_user.deliver(sender, "hello again")
    assert len(cyrus_user.replies_to(sender, wait=1.0)) == 1  # not twice within :days
    other = f"carol-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(other, "hi")
    cyrus_user.wait_for_reply(other)  # every sender hears once
    assert cyrus_user.sieve_errors() == []


async def test_cyrus_answers_mail_to_the_identities_only_vac_04(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    """RFC 5230 §4.5: no reply to mail that names none of the user's addresses (a list, a
    Bcc), and none to an automatic message (RFC 3834)."""
    await vacation_set(cyrus_jmap, isEnabled=True, textBody="away")
    sender = f"dan-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(sender, "to a list", to=f"list@{DOMAIN}")
    auto = f"eve-{secrets.token_hex(4)}@example.net"
    raw = (
        f"From: {auto}\r\nTo: {cyrus_user.address}\r\nSubject: receipt\r\n"
        "Auto-Submitted: auto-generated\r\n\r\nDone.\r\n"
    ).encode()
    with smtplib.LMTP(cyrus_user.host, cyrus_user.server.lmtp_port, timeout=30) as lmtp:
        lmtp.sendmail(auto, [cyrus_user.username], raw)
    time.sleep(1.0)
    assert cyrus_user.replies_to(sender) == [] and cyrus_user.replies_to(auto) == []
    cyrus_user.deliver(sender, "to you")  # the same sender, writing to the user: answered
    cyrus_user.wait_for_reply(sender)


async def test_cyrus_no_reply_outside_the_dates_nor_once_disabled_vac_05(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    await vacation_set(cyrus_jmap, isEnabled=True, subject="Away", textBody="away")
    before = f"frank-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(before, "are you there")
    cyrus_user.wait_for_reply(before)
    senders = []
    for dates in (
        {"fromDate": "2098-01-01T00:00:00Z"},  # not yet
        {"fromDate": None, "toDate": "2000-01-01T00:00:00Z"},  # over
        {"isEnabled": False, "toDate": None},
    ):
        await vacation_set(cyrus_jmap, **dates)
        sender = f"gina-{secrets.token_hex(4)}@example.net"
        cyrus_user.deliver(sender, "are you there")
        senders.append(sender)
    time.sleep(1.0)
    assert [cyrus_user.replies_to(sender) for sender in senders] == [[], [], []]
    scripts = await cyrus_user.scripts()
    assert [name for name, (active, _) in scripts.items() if active] == []


async def test_cyrus_renames_the_active_filter_sieve_10(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.create("Bills")[0] == "OK"
    keep = await upload(cyrus_jmap, b"keep;\r\n")
    created = await ok(
        cyrus_jmap,
        "SieveScript/set",
        {
            "create": {
                "f": {"name": "bills", "blobId": await upload(cyrus_jmap, FILTER)},
                "o": {"name": "other", "blobId": keep},
            },
            "onSuccessActivateScript": "#f",
        },
    )
    bills, other = created["created"]["f"]["id"], created["created"]["o"]["id"]
    renamed = await ok(cyrus_jmap, "SieveScript/set", {"update": {bills: {"name": "invoices"}}})
    assert renamed["updated"] == {bills: None}
    scripts = await cyrus_user.scripts()
    assert scripts["invoices"] == (True, FILTER) and "bills" not in scripts
    (got,) = (await ok(cyrus_jmap, "SieveScript/get", {"ids": [bills]}))["list"]
    assert (got["name"], got["isActive"]) == ("invoices", True)
    cyrus_user.deliver("bob@example.org", "an invoice")
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])
    clash = await ok(cyrus_jmap, "SieveScript/set", {"update": {bills: {"name": "other"}}})
    assert clash["notUpdated"][bills] == {
        "type": "alreadyExists",
        "description": "a script is named 'other' already",
        "existingId": other,
    }


async def test_cyrus_vacation_through_the_main_script_beside_a_filter_vac_07(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    """With another client's filter active, Cyrus runs the included vacation script (an
    RFC 6609 ``include :personal`` of a script its ManageSieve stored) and then that filter
    for the same message: a reply goes out and the message is filed."""
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.create("Bills")[0] == "OK"
    client = await cyrus_user.other_client()
    try:
        await client.put_script("mine", FILTER)
        await client.set_active("mine")
    finally:
        await client.close()
    await vacation_set(cyrus_jmap, isEnabled=True, subject="Away", textBody="Back soon.")
    sender = f"hank-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(sender, "your invoice")
    reply = cyrus_user.wait_for_reply(sender).parsed()
    assert reply["Subject"] == "Away" and "Back soon." in reply.get_content()
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])
        assert imap.select("INBOX", readonly=True) == ("OK", [b"0"])  # filed, not kept too
    cyrus_user.deliver(sender, "another invoice")
    assert len(cyrus_user.replies_to(sender, wait=1.0)) == 1  # :days holds through include
    await vacation_set(cyrus_jmap, isEnabled=False)
    later = f"ida-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(later, "a third invoice")
    assert cyrus_user.replies_to(later, wait=1.0) == []
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"3"])  # the filter alone runs
    assert (await cyrus_user.scripts())["mine"] == (True, FILTER)
    assert cyrus_user.sieve_errors() == []


async def test_cyrus_html_reply_is_multipart_alternative_vac_06(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    await vacation_set(
        cyrus_jmap, isEnabled=True, textBody="Away.", htmlBody="<p>Away <b>now</b>.</p>"
    )
    sender = f"ivy-{secrets.token_hex(4)}@example.net"
    cyrus_user.deliver(sender, "hello")
    parsed = cyrus_user.wait_for_reply(sender).parsed()
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Auto-Submitted"].startswith("auto-replied")
    parts = {part.get_content_type(): part.get_content() for part in parsed.iter_parts()}
    assert "<b>now</b>" in parts["text/html"] and "Away." in parts["text/plain"]


async def test_cyrus_does_not_retry_a_reply_it_could_not_send_vac_04(
    sieve_cyrus: SieveCyrus, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """What the README says of Cyrus: it records the sender even when the SMTP server is
    unreachable, so that sender gets no reply within ``:days``; another sender is tried."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unreachable = probe.getsockname()[1]  # closed again: nothing listens there
    root = Path(tempfile.mkdtemp(prefix="imapjmap-cyrus-nosmtp-"))
    try:
        with CyrusServer.start(root, smtp=("127.0.0.1", unreachable)) as server:
            if not server.log():
                pytest.skip("Cyrus's syslog cannot be caught here (needs root and unshare)")
            username, password = f"sieve-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
            user = CyrusUser(
                username, password, server.host, server.port, server, sieve_cyrus.outbox
            )
            server.add_user(user.username, user.password)
            server.connect(user.username, user.password).logout()
            cfg = dataclasses.replace(
                proxy_config(user, tmp_path),
                sieve=SieveConfig(port=server.sieve_port),
                submission=SubmissionConfig(default_domain=DOMAIN),
            )
            async with proxy_client(cfg) as http:
                jmap = Jmap(http, user.username, user.password)
                await jmap.session()
                await vacation_set(jmap, isEnabled=True, textBody="away")

            def failures(expected: int) -> list[str]:
                deadline = time.monotonic() + 10
                while len(user.sieve_errors()) < expected and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)  # any line that would follow
                return user.sieve_errors()

            first = f"jo-{secrets.token_hex(4)}@example.net"
            user.deliver(first, "one")
            (error,) = failures(1)
            assert "Vacation: Internal Error" in error
            user.deliver(first, "two")  # the same sender: not tried again
            second = f"kim-{secrets.token_hex(4)}@example.net"
            user.deliver(second, "three")  # another sender: tried, and fails too
            assert len(failures(2)) == 2
            tried = [line for line in server.log() if "can't connect to host" in line]
            assert len(tried) == 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
