"""A Dovecot with Pigeonhole for the VacationResponse and SieveScript tests: ManageSieve on
its own port, Sieve run at LMTP delivery, replies sent to a recording SMTP sink; users on
it, and the proxy in front of it."""

from __future__ import annotations

import dataclasses
import imaplib
import secrets
import shutil
import smtplib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devservers.dovecot import DovecotServer
from devservers.smtp import SmtpSink
from imapjmap.config import SieveConfig, SubmissionConfig
from imapjmap.managesieve.client import Endpoint, ManageSieveClient
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient

FILTER = b'require "fileinto";\r\nif header :contains "subject" "invoice" { fileinto "Bills"; }\r\n'
DOMAIN = "example.org"  # the users' address domain (the proxy's submission.default_domain)
MAX_SCRIPT_SIZE = 16 * 1024  # the server's limit (Pigeonhole's sieve_max_script_size)


@dataclasses.dataclass(frozen=True)
class SieveWorld:
    dovecot: DovecotServer
    outbox: SmtpSink  # where the server's vacation replies go


@pytest.fixture(scope="module")
def sieve_world() -> Iterator[SieveWorld]:
    """A Dovecot of its own with ManageSieve and Sieve in LMTP, sending through a sink."""
    outbox = SmtpSink.start()
    root = Path(tempfile.mkdtemp(prefix="imapjmap-sieve-"))
    try:
        extra = (
            f"submission_host = 127.0.0.1:{outbox.port}\n"
            f"plugin {{\n  sieve_max_script_size = {MAX_SCRIPT_SIZE}\n"
            # as a real installation: mail that names none of the user's addresses (the
            # script's :addresses, the account's identities) gets no reply
            "  sieve_vacation_dont_check_recipient = no\n}\n"
        )
        with DovecotServer.start(root, sieve=True, extra_conf=extra) as dovecot:
            yield SieveWorld(dovecot, outbox)
    finally:
        outbox.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class User:
    username: str
    password: str
    host: str
    port: int
    world: SieveWorld

    def imap(self) -> imaplib.IMAP4:
        return self.world.dovecot.connect(self.username, self.password)

    def deliver(self, sender: str, subject: str) -> None:
        """One message over LMTP, which runs the user's active Sieve script."""
        raw = (
            f"From: {sender}\r\nTo: {self.username}@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}@{DOMAIN}>\r\n\r\nHello.\r\n"
        ).encode()
        with smtplib.LMTP(self.host, self.world.dovecot.lmtp_port, timeout=30) as lmtp:
            lmtp.sendmail(sender, [self.username], raw)

    async def other_client(self) -> ManageSieveClient:
        """Another ManageSieve client of the same user (the oracle, and an outside writer)."""
        endpoint = Endpoint(self.host, self.world.dovecot.sieve_port, "none")
        return await ManageSieveClient.connect(endpoint, self.username, self.password)


@pytest.fixture
def user(sieve_world: SieveWorld, request: pytest.FixtureRequest) -> User:
    username = f"vac-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    sieve_world.dovecot.add_user(username, password)
    return User(username, password, sieve_world.dovecot.host, sieve_world.dovecot.port, sieve_world)


@pytest.fixture
async def jmap(user: User, tmp_path: Path, proxy_client: ProxyClient) -> AsyncIterator[Jmap]:
    cfg = dataclasses.replace(
        proxy_config(user, tmp_path),
        sieve=SieveConfig(port=user.world.dovecot.sieve_port),
        submission=SubmissionConfig(default_domain=DOMAIN),  # the identity user@DOMAIN
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, user.username, user.password)
        await client.session()
        yield client
