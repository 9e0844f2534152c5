"""TLS to the upstream IMAP server, against a Dovecot with a certificate from a private CA.

The instance has three IMAP listeners: implicit TLS (``tls_port``), plain with STARTTLS on
127.0.0.1 (``port``; Dovecot treats a connection from its own address as secured), and
plain with STARTTLS on 127.0.0.2, where the client's address differs from the server's, so
Dovecot advertises ``LOGINDISABLED`` until TLS is up — as a real server on the network does.
The certificate names 127.0.0.1 and 127.0.0.2 only, not ``localhost``.
"""

from __future__ import annotations

import base64
import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from devservers.dovecot import DovecotServer
from imapjmap.config import ImapConfig
from imapjmap.errors import AuthenticationFailed, ImapUnavailable
from imapjmap.imap.session import ImapSession
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import MAIL, proxy_config
from tests.integration.instances import ProxyClient

pytestmark = pytest.mark.dovecot

USERNAME, PASSWORD = "tls-user", "tls-Pässword"
OTHER_ADDRESS = "127.0.0.2"


@dataclasses.dataclass(frozen=True)
class TlsDovecot:
    server: DovecotServer
    ca_file: str
    other_port: int  # plain + STARTTLS on OTHER_ADDRESS

    def config(self, **changes: Any) -> ImapConfig:
        base = ImapConfig(host="127.0.0.1", port=self.server.tls_port, security="tls")
        return dataclasses.replace(base, **changes)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls_dovecot(dovecot: DovecotServer) -> Iterator[TlsDovecot]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", OTHER_ADDRESS)
    with dovecot_root() as root:
        ca_file, cert_file, key_file = root / "ca.pem", root / "cert.pem", root / "key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)
        other_port = _free_port(OTHER_ADDRESS)
        extra = (
            "disable_plaintext_auth = yes\n"
            "service imap-login {\n"
            f"  inet_listener imap_other {{\n    address = {OTHER_ADDRESS}\n"
            f"    port = {other_port}\n  }}\n"
            "}\n"
        )
        server = DovecotServer.start(root / "dovecot", tls=(cert_file, key_file), extra_conf=extra)
        server.add_user(USERNAME, PASSWORD)
        yield TlsDovecot(server, str(ca_file), other_port)
        server.stop()


async def login(cfg: ImapConfig) -> ImapSession:
    return await ImapSession.connect(cfg, USERNAME, PASSWORD)


def tls_version(session: ImapSession) -> str | None:
    ssl_object = session._proto.transport.get_extra_info("ssl_object")
    return None if ssl_object is None else str(ssl_object.version())


# --------------------------------------------------------------------------- implicit TLS


async def test_tls_with_the_ca_configured_connects(tls_dovecot: TlsDovecot) -> None:
    session = await login(tls_dovecot.config(ca_file=tls_dovecot.ca_file))
    try:
        assert tls_version(session) in ("TLSv1.2", "TLSv1.3")
        assert session.enabled == {"CONDSTORE", "QRESYNC"}
        assert (await session.select("INBOX")).uidvalidity
    finally:
        await session.close()


async def test_certificates_are_verified_by_default(tls_dovecot: TlsDovecot) -> None:
    cfg = tls_dovecot.config()
    assert cfg.verify_certificates and cfg.ca_file is None  # the defaults
    with pytest.raises(ImapUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await login(cfg)


async def test_the_host_name_is_verified(tls_dovecot: TlsDovecot) -> None:
    """The certificate is from the trusted CA but does not name ``localhost``."""
    cfg = tls_dovecot.config(host="localhost", ca_file=tls_dovecot.ca_file)
    with pytest.raises(ImapUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await login(cfg)


async def test_verification_can_be_turned_off(tls_dovecot: TlsDovecot) -> None:
    for host in ("127.0.0.1", "localhost"):  # neither the CA nor the name is checked
        session = await login(tls_dovecot.config(host=host, verify_certificates=False))
        try:
            assert tls_version(session) is not None
            await session.noop()
        finally:
            await session.close()


async def test_tls_to_a_plaintext_port_is_unavailable(tls_dovecot: TlsDovecot) -> None:
    cfg = tls_dovecot.config(port=tls_dovecot.server.port, ca_file=tls_dovecot.ca_file)
    with pytest.raises(ImapUnavailable):
        await login(cfg)


# --------------------------------------------------------------------------- STARTTLS


async def test_starttls_connects_and_rereads_capabilities(tls_dovecot: TlsDovecot) -> None:
    """Before TLS the server says LOGINDISABLED; the capabilities after STARTTLS allow LOGIN.

    Only a client that discards what it learnt before TLS (RFC 3501 §6.2.1, RFC 9051
    §6.2.1) gets to log in here.
    """
    cfg = tls_dovecot.config(
        host=OTHER_ADDRESS,
        port=tls_dovecot.other_port,
        security="starttls",
        ca_file=tls_dovecot.ca_file,
    )
    session = await login(cfg)
    try:
        assert tls_version(session) is not None
        assert "LOGINDISABLED" not in session.capabilities
        assert "STARTTLS" not in session.capabilities
        assert session.enabled == {"CONDSTORE", "QRESYNC"}
        await session.noop()
    finally:
        await session.close()
    # the same listener without TLS: the password is not sent at all
    with pytest.raises(AuthenticationFailed, match="refuses LOGIN"):
        await login(dataclasses.replace(cfg, security="none"))


async def test_starttls_verifies_the_certificate(tls_dovecot: TlsDovecot) -> None:
    cfg = tls_dovecot.config(port=tls_dovecot.server.port, security="starttls", ca_file=None)
    with pytest.raises(ImapUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await login(cfg)
    session = await login(dataclasses.replace(cfg, ca_file=tls_dovecot.ca_file))
    try:
        assert tls_version(session) is not None
    finally:
        await session.close()


async def test_starttls_without_server_support_does_not_fall_back(imap_user: ImapUser) -> None:
    """The session Dovecot has no TLS at all: STARTTLS is required, so no login happens."""
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="starttls")
    with pytest.raises(ImapUnavailable, match="STARTTLS"):
        await ImapSession.connect(cfg, imap_user.username, imap_user.password)


# --------------------------------------------------------------------------- through HTTP


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize("trusted", [True, False], ids=["ca-configured", "untrusted"])
async def test_http_upstream_tls_failure_is_503_not_401(
    tls_dovecot: TlsDovecot, tmp_path: Path, trusted: bool, proxy_client: ProxyClient
) -> None:
    user = ImapUser(USERNAME, PASSWORD, "127.0.0.1", tls_dovecot.server.tls_port)
    imap = tls_dovecot.config(ca_file=tls_dovecot.ca_file if trusted else None)
    cfg = dataclasses.replace(proxy_config(user, tmp_path), imap=imap)
    async with proxy_client(cfg) as http:
        resp = await http.get("/.well-known/jmap", headers=basic(USERNAME, PASSWORD))
        if trusted:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert body["username"] == USERNAME
            assert MAIL in body["primaryAccounts"]
        else:
            assert resp.status == 503, await resp.text()
            assert resp.content_type == "application/problem+json"
            assert "WWW-Authenticate" not in resp.headers
            problem = await resp.json()
            assert problem["status"] == 503
            # what the client needs to know, and nothing about certificates or passwords
            assert PASSWORD not in await resp.text()
