"""The ManageSieve client against Dovecot's managesieve: STARTTLS verified as for IMAP,
SASL PLAIN, and what it does with servers that are not what they should be."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme

from devservers.dovecot import DovecotServer
from imapjmap.errors import AuthenticationFailed, ManageSieveUnavailable, SieveCommandFailed
from imapjmap.managesieve.client import Endpoint, ManageSieveClient
from tests.conftest import dovecot_root

USERNAME, PASSWORD = "sieve-tls", secrets.token_urlsafe(12)


@dataclasses.dataclass(frozen=True)
class TlsSieve:
    server: DovecotServer
    ca_file: str

    def endpoint(self, **changes: object) -> Endpoint:
        base = Endpoint("127.0.0.1", self.server.sieve_port, "starttls", ca_file=self.ca_file)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_sieve() -> Iterator[TlsSieve]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    with dovecot_root() as root:
        ca_file, cert_file, key_file = root / "ca.pem", root / "cert.pem", root / "key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)
        with DovecotServer.start(root / "dovecot", tls=(cert_file, key_file), sieve=True) as server:
            server.add_user(USERNAME, PASSWORD)
            yield TlsSieve(server, str(ca_file))


async def test_starttls_verified_then_the_capabilities_said_over_tls(tls_sieve: TlsSieve) -> None:
    client = await ManageSieveClient.connect(tls_sieve.endpoint(), USERNAME, PASSWORD)
    try:
        assert client._writer.get_extra_info("ssl_object") is not None
        # the capabilities repeated over TLS replaced the plaintext ones (no STARTTLS now)
        assert "STARTTLS" not in client.capabilities
        assert "vacation" in client.extensions
        await client.put_script("s", b"keep;\r\n")
        assert await client.list_scripts() == [("s", False)]
        with pytest.raises(SieveCommandFailed) as refused:
            await client.put_script("t", b"nonsense;\r\n")
        assert "nonsense" in refused.value.text
        assert not client.broken  # a NO leaves the connection usable
        await client.delete_script("s")
    finally:
        await client.close()


async def test_an_untrusted_certificate_is_refused(tls_sieve: TlsSieve) -> None:
    with pytest.raises(ManageSieveUnavailable, match="STARTTLS handshake failed"):
        await ManageSieveClient.connect(tls_sieve.endpoint(ca_file=None), USERNAME, PASSWORD)


async def test_a_wrong_password_is_an_authentication_failure(tls_sieve: TlsSieve) -> None:
    with pytest.raises(AuthenticationFailed):
        await ManageSieveClient.connect(tls_sieve.endpoint(), USERNAME, "wrong")


async def test_tls_required_but_no_starttls_offered_is_refused() -> None:
    """A server that does not offer STARTTLS is never used in plaintext instead."""
    async with fake_server(b'"IMPLEMENTATION" "x"\r\n"SASL" "PLAIN"\r\nOK\r\n') as port:
        with pytest.raises(ManageSieveUnavailable, match="does not offer STARTTLS"):
            await ManageSieveClient.connect(Endpoint("127.0.0.1", port), USERNAME, PASSWORD)


@pytest.mark.parametrize(
    "greeting", [b"* OK [CAPABILITY IMAP4rev1] ready\r\n", b"220 mail.example.org ESMTP\r\n"]
)
async def test_another_protocol_is_refused_at_once(greeting: bytes) -> None:
    """An IMAP or SMTP server on the port is told apart by its greeting, not by a timeout."""
    async with fake_server(greeting) as port:
        endpoint = Endpoint("127.0.0.1", port, "none", timeout=30.0)
        async with asyncio.timeout(5):
            with pytest.raises(ManageSieveUnavailable, match="not ManageSieve"):
                await ManageSieveClient.connect(endpoint, USERNAME, PASSWORD)


@contextlib.asynccontextmanager
async def fake_server(greeting: bytes) -> AsyncIterator[int]:
    """A server that sends ``greeting`` and then waits without a word."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
