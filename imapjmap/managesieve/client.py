"""A ManageSieve (RFC 5804) connection over asyncio streams: the module's only I/O.

Rule 1: the pure :mod:`imapjmap.managesieve.protocol` formats every command and parses
        every response; this module only moves octets and turns responses into results or
        errors.
Rule 2: TLS is verified as for IMAP (``imap.verify_certificates``, ``imap.ca_file``):
        ``tls`` wraps the connection at once, ``starttls`` upgrades it with STARTTLS and
        then believes only the capabilities the server repeats over TLS (RFC 5804 §2.2).
        A server that does not offer STARTTLS is refused, never used in plaintext.
Rule 3: one command at a time; a timeout, a lost connection or garbage marks the
        connection broken (:class:`ManageSieveUnavailable`), while a ``NO`` leaves it
        usable (:class:`SieveCommandFailed`, with the server's text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Final, Literal

from imapjmap.errors import (
    AuthenticationFailed,
    ManageSieveUnavailable,
    ProxyError,
    SieveCommandFailed,
)
from imapjmap.managesieve import protocol
from imapjmap.managesieve.protocol import ManageSieveProtocolError, Response

log = logging.getLogger(__name__)

_READ_SIZE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a ManageSieve server listens and how to secure the connection."""

    host: str
    port: int = 4190
    security: Literal["tls", "starttls", "none"] = "starttls"
    verify_certificates: bool = True
    ca_file: str | None = None
    timeout: float = 10.0  # seconds for connecting, and for each command


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=endpoint.ca_file)
    if not endpoint.verify_certificates:
        # only ever by explicit configuration (imap.verify_certificates = false)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ManageSieveClient:
    """A logged-in ManageSieve connection.  Open it with :meth:`connect`."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, endpoint: Endpoint
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._endpoint = endpoint
        self._parser = protocol.Reader()
        self.capabilities: dict[str, str] = {}
        self.broken = False

    @property
    def extensions(self) -> frozenset[str]:
        """The Sieve extensions the server implements (``fileinto``, ``vacation`` ...)."""
        return protocol.extensions(self.capabilities)

    @property
    def implementation(self) -> str:
        return self.capabilities.get("IMPLEMENTATION", "")

    @property
    def checks_scripts(self) -> bool:
        """CHECKSCRIPT exists from protocol version 1.0 on (RFC 5804 §2.12)."""
        return "VERSION" in self.capabilities

    @property
    def renames_scripts(self) -> bool:
        """So does RENAMESCRIPT (RFC 5804 §2.11.1)."""
        return "VERSION" in self.capabilities

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, endpoint: Endpoint, username: str, password: str) -> ManageSieveClient:
        """Open, secure (Rule 2) and log in with SASL PLAIN.

        Raises:
            ManageSieveUnavailable: unreachable, the TLS handshake failed, no STARTTLS or
                no PLAIN offered, or not a ManageSieve server.
            AuthenticationFailed: the server refused the credentials.
        """
        where = f"{endpoint.host}:{endpoint.port}"
        ctx = _ssl_context(endpoint) if endpoint.security == "tls" else None
        try:
            async with asyncio.timeout(endpoint.timeout):
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, ssl=ctx, limit=_READ_SIZE
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ManageSieveUnavailable(
                f"cannot connect to ManageSieve at {where}: {exc}"
            ) from exc
        client = cls(reader, writer, endpoint)
        try:
            greeting = await client._response("greeting")
            client._expect_ok(greeting, "greeting")
            client.capabilities = protocol.capabilities(greeting)
            if endpoint.security == "starttls":
                await client._starttls()
            await client._authenticate(username, password)
        except BaseException:
            await client.close()
            raise
        return client

    async def _starttls(self) -> None:
        if "STARTTLS" not in self.capabilities:
            raise ManageSieveUnavailable(
                "the ManageSieve server does not offer STARTTLS (sieve.security = starttls)"
            )
        self._expect_ok(await self._run(protocol.command("STARTTLS"), "STARTTLS"), "STARTTLS")
        try:
            async with asyncio.timeout(self._endpoint.timeout):
                await self._writer.start_tls(
                    _ssl_context(self._endpoint), server_hostname=self._endpoint.host
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.broken = True
            raise ManageSieveUnavailable(f"ManageSieve STARTTLS handshake failed: {exc}") from exc
        # only what the server says over TLS counts (RFC 5804 §2.2)
        repeated = await self._response("STARTTLS")
        self._expect_ok(repeated, "STARTTLS")
        self.capabilities = protocol.capabilities(repeated)

    async def _authenticate(self, username: str, password: str) -> None:
        if "PLAIN" not in protocol.sasl_mechanisms(self.capabilities):
            raise ManageSieveUnavailable("the ManageSieve server does not offer SASL PLAIN")
        message = protocol.plain_initial_response(username, password)
        response = await self._run(protocol.command("AUTHENTICATE", "PLAIN", message), "login")
        if not response.ok:
            raise AuthenticationFailed(f"ManageSieve refused the login: {response.text}")

    async def close(self) -> None:
        """LOGOUT when the connection is healthy, then close it; never raises."""
        if not self.broken:
            with contextlib.suppress(ProxyError, OSError, TimeoutError):
                await self._run(protocol.command("LOGOUT"), "LOGOUT")
        self.broken = True
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(self._endpoint.timeout):
                await self._writer.wait_closed()

    # -- commands ----------------------------------------------------------------------------

    async def list_scripts(self) -> list[tuple[str, bool]]:
        """(name, is it active) of every script, in the server's order."""
        response = await self._ok(protocol.command("LISTSCRIPTS"), "LISTSCRIPTS")
        return protocol.script_list(response)

    async def get_script(self, name: str) -> bytes | None:
        """The script's content, or None when there is no such script."""
        response = await self._run(protocol.command("GETSCRIPT", name), "GETSCRIPT")
        if response.code == "NONEXISTENT" and response.status == "NO":
            return None
        self._expect_ok(response, "GETSCRIPT")
        for line in response.lines:
            if line and isinstance(line[0], bytes):
                return line[0]
        raise ManageSieveProtocolError("GETSCRIPT answered OK without a script")

    async def put_script(self, name: str, content: bytes) -> None:
        await self._ok(protocol.command("PUTSCRIPT", name, content), "PUTSCRIPT")

    async def check_script(self, content: bytes) -> None:
        """Raises :class:`SieveCommandFailed` with the server's errors when invalid."""
        await self._ok(protocol.command("CHECKSCRIPT", content), "CHECKSCRIPT")

    async def set_active(self, name: str | None) -> None:
        """Activate ``name``; None deactivates whatever is active (``SETACTIVE ""``)."""
        await self._ok(protocol.command("SETACTIVE", name or ""), "SETACTIVE")

    async def delete_script(self, name: str) -> None:
        await self._ok(protocol.command("DELETESCRIPT", name), "DELETESCRIPT")

    async def rename_script(self, old: str, new: str) -> None:
        await self._ok(protocol.command("RENAMESCRIPT", old, new), "RENAMESCRIPT")

    # -- the wire ----------------------------------------------------------------------------

    async def _ok(self, line: bytes, what: str) -> Response:
        response = await self._run(line, what)
        self._expect_ok(response, what)
        return response

    def _expect_ok(self, response: Response, what: str) -> None:
        if response.status == "BYE":
            self.broken = True
        if not response.ok:
            raise SieveCommandFailed(what, response.status, response.code, response.text)

    async def _run(self, line: bytes, what: str) -> Response:
        if self.broken:
            raise ManageSieveUnavailable(f"{what}: the ManageSieve connection is broken")
        try:
            self._writer.write(line)
            async with asyncio.timeout(self._endpoint.timeout):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            self.broken = True
            raise ManageSieveUnavailable(f"{what}: {exc or 'timed out'}") from exc
        return await self._response(what)

    async def _response(self, what: str) -> Response:
        try:
            async with asyncio.timeout(self._endpoint.timeout):
                while (response := self._parser.next_response()) is None:
                    data = await self._reader.read(_READ_SIZE)
                    if not data:
                        raise ManageSieveUnavailable(f"{what}: the server closed the connection")
                    self._parser.feed(data)
        except (OSError, TimeoutError, ssl.SSLError, ManageSieveProtocolError) as exc:
            self.broken = True
            raise ManageSieveUnavailable(f"{what}: {exc or 'timed out'}") from exc
        except BaseException:
            self.broken = True  # cancelled mid-response: the wire is out of step
            raise
        return response
