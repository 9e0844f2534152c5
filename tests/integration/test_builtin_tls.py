"""Built-in TLS (``server.tls_certificate`` / ``server.tls_key``) in a real ``imapjmap serve``.

A small install needs no reverse proxy: the listener speaks TLS itself, a client that
insists on https (jmapc) works against it, SIGHUP loads a renewed certificate for new
connections, and a broken renewal keeps the old one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jmapc
import pytest
import trustme
from jmapc.methods import MailboxGet, MailboxGetResponse

from imapjmap import cli
from imapjmap.config import CacheConfig, Config, ImapConfig, ServerConfig, to_toml
from tests.conftest import SeededUser

pytestmark = pytest.mark.dovecot

START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tls:
    cert: Path
    key: Path

    def issue(self, ca: trustme.CA) -> None:
        """Write a certificate for 127.0.0.1 from ``ca`` over the configured files."""
        issued = ca.issue_cert("127.0.0.1")
        self.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        self.key.write_bytes(issued.private_key_pem.bytes())


@dataclass
class Served:
    process: asyncio.subprocess.Process
    port: int
    config: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{self.log()}"
            await asyncio.sleep(0.05)


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _get(port: int, context: ssl.SSLContext, path: str, headers: dict[str, str]) -> int:
    """One GET on a new connection (a new TLS handshake); the status."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def _auth(user: SeededUser) -> dict[str, str]:
    raw = f"{user.username}:{user.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _config(user: SeededUser, tmp_path: Path, tls: Tls) -> tuple[Path, int]:
    """A configuration file with built-in TLS on a free port; its path and the port."""
    port = _free_port()
    cfg = Config(
        imap=ImapConfig(host=user.host, port=user.port, security="none"),
        server=ServerConfig(
            listen=f"127.0.0.1:{port}",
            base_url=f"https://127.0.0.1:{port}",
            tls_certificate=str(tls.cert),
            tls_key=str(tls.key),
        ),
        cache=CacheConfig(path=str(tmp_path / "cache.sqlite3")),
    )
    config = tmp_path / "imapjmap.toml"
    config.write_text(to_toml(cfg))
    return config, port


async def _spawn(config: Path, stdout: Any) -> asyncio.subprocess.Process:
    """``imapjmap serve --config FILE`` in a process of its own, output to ``stdout``."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imapjmap", "serve", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serve(user: SeededUser, tmp_path: Path, tls: Tls) -> AsyncIterator[Served]:
    config, port = _config(user, tmp_path, tls)
    log_path = tmp_path / "proxy.log"
    with log_path.open("wb") as log_file:
        process = await _spawn(config, log_file)
    served = Served(process, port, config, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on" not in served.log():
            if process.returncode is not None or time.monotonic() > deadline:
                pytest.fail(f"the proxy did not start:\n{served.log()}")
            await asyncio.sleep(0.05)
        yield served
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_the_listener_speaks_tls_and_a_https_only_client_works(
    seeded_user: SeededUser, tmp_path: Path
) -> None:
    ca = trustme.CA()
    tls = Tls(tmp_path / "cert.pem", tmp_path / "key.pem")
    tls.issue(ca)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve(seeded_user, tmp_path, tls) as served:
        assert "with TLS" in served.log()

        def talk() -> tuple[Any, Any]:
            client = jmapc.Client.create_with_password(
                host=f"127.0.0.1:{served.port}",
                user=seeded_user.username,
                password=seeded_user.password,
            )
            client.requests_session.verify = str(ca_file)
            client.requests_session.trust_env = False
            got = client.request(MailboxGet(ids=None), raise_errors=True, single_response=True)
            return client.jmap_session, got

        session, got = await asyncio.to_thread(talk)
        assert session.api_url == f"https://127.0.0.1:{served.port}/jmap/api/"
        assert isinstance(got, MailboxGetResponse) and got.data
        # plain http on the TLS port gets no JMAP answer
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), 10)
        writer.close()
        assert b"urn:ietf:params:jmap" not in answer
        # the health command finds the TLS listener at the configured address
        assert await asyncio.to_thread(cli.main, ["health", "--config", str(served.config)]) == 0


async def test_sighup_loads_a_renewed_certificate_and_keeps_the_old_one_on_a_bad_file(
    seeded_user: SeededUser, tmp_path: Path
) -> None:
    first, renewed = trustme.CA(), trustme.CA()
    tls = Tls(tmp_path / "cert.pem", tmp_path / "key.pem")
    tls.issue(first)
    auth = _auth(seeded_user)
    async with serve(seeded_user, tmp_path, tls) as served:
        trusts_first, trusts_renewed = _client_context(first), _client_context(renewed)
        path = "/.well-known/jmap"
        assert await asyncio.to_thread(_get, served.port, trusts_first, path, auth) == 200

        tls.issue(renewed)
        served.process.send_signal(signal.SIGHUP)
        await served.wait_log("TLS certificate")
        assert "loaded again" in served.log()
        assert await asyncio.to_thread(_get, served.port, trusts_renewed, path, auth) == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(_get, served.port, trusts_first, path, auth)

        # a renewal gone wrong: a key that is not the certificate's
        tls.key.write_bytes(first.issue_cert("127.0.0.1").private_key_pem.bytes())
        served.process.send_signal(signal.SIGHUP)
        await served.wait_log("not reloaded")
        assert "previous one stays" in served.log()
        assert await asyncio.to_thread(_get, served.port, trusts_renewed, path, auth) == 200
        assert served.process.returncode is None


async def test_an_unusable_certificate_stops_the_start_with_one_line(
    seeded_user: SeededUser, tmp_path: Path
) -> None:
    tls = Tls(tmp_path / "cert.pem", tmp_path / "key.pem")
    tls.cert.write_text("not a certificate\n")
    tls.key.write_text("not a key\n")
    config, _ = _config(seeded_user, tmp_path, tls)
    process = await _spawn(config, asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    text = out.decode()
    assert process.returncode == 1, text
    assert "cannot use server.tls_certificate" in text
    assert "Traceback" not in text and "listening" not in text
