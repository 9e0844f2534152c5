"""The account's Sieve scripts over ManageSieve: :mod:`imapjmap.upstream.sieve` implemented
with :mod:`imapjmap.managesieve.client`.

The server is the configured one (``[sieve]``), by default the IMAP host on port 4190; the
login is the IMAP login's, and TLS is checked as for IMAP.  Whether an account has one is
found by logging in once; the answer is kept with the account's IMAP pool (a new password
makes a new pool, and so a new look), a "no" only for :data:`NEGATIVE_SECONDS`, so a
ManageSieve service started later is found without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Final

from imapjmap.config import SieveConfig
from imapjmap.credentials import BearerToken
from imapjmap.errors import AuthenticationFailed, SieveCommandFailed, UpstreamUnavailable
from imapjmap.imap.pool import ImapPool
from imapjmap.managesieve.client import Endpoint, ManageSieveClient
from imapjmap.upstream.sieve import SieveServer

log = logging.getLogger(__name__)

NEGATIVE_SECONDS: Final = 300.0
# seconds the look may take: a firewall that drops the port must not hold a session fetch
# for the whole imap.connect_timeout
LOOK_TIMEOUT: Final = 3.0
_found: weakref.WeakKeyDictionary[ImapPool, tuple[float, SieveServer | None]] = (
    weakref.WeakKeyDictionary()
)


def endpoint(cfg: SieveConfig, pool: ImapPool, timeout: float | None = None) -> Endpoint:
    imap = pool.imap_config
    host, port, security = cfg.where(imap)
    return Endpoint(
        host,
        port,
        security,
        verify_certificates=imap.verify_certificates,
        ca_file=imap.ca_file,
        timeout=imap.connect_timeout if timeout is None else min(timeout, imap.connect_timeout),
    )


def server_of(client: ManageSieveClient) -> SieveServer:
    caps = client.capabilities
    redirects = caps.get("MAXREDIRECTS", "")
    return SieveServer(
        implementation=client.implementation,
        extensions=client.extensions,
        notify_methods=tuple(caps.get("NOTIFY", "").lower().split()),
        max_redirects=int(redirects) if redirects.isdigit() else None,
    )


class ManageSieveScripts:
    """:class:`~imapjmap.upstream.sieve.SieveScripts` over one logged-in client."""

    __slots__ = ("_client", "server")

    def __init__(self, client: ManageSieveClient) -> None:
        self._client = client
        self.server = server_of(client)

    async def scripts(self) -> list[tuple[str, bool]]:
        return await self._client.list_scripts()

    async def script(self, name: str) -> bytes | None:
        return await self._client.get_script(name)

    async def put(self, name: str, content: bytes) -> None:
        await self._client.put_script(name, content)

    async def check(self, content: bytes) -> None:
        if self._client.checks_scripts:
            await self._client.check_script(content)
            return
        # before ManageSieve 1.0 only PUTSCRIPT compiles: under a name nobody uses
        probe = f"imapjmap-check-{time.monotonic_ns()}"
        await self._client.put_script(probe, content)
        await self._client.delete_script(probe)

    async def activate(self, name: str | None) -> None:
        await self._client.set_active(name)

    async def delete(self, name: str) -> None:
        await self._client.delete_script(name)

    async def rename(self, old: str, new: str) -> None:
        if self._client.renames_scripts:
            await self._client.rename_script(old, new)
            return
        # before ManageSieve 1.0, as RFC 5804 §2.11.1 tells such clients: copy, keep the
        # copy active if the original was, then delete the original
        content = await self._client.get_script(old)
        if content is None:
            raise SieveCommandFailed("RENAMESCRIPT", "NO", "NONEXISTENT", f"no script {old!r}")
        await self._client.put_script(new, content)
        if (old, True) in await self._client.list_scripts():
            await self._client.set_active(new)
        await self._client.delete_script(old)


@contextlib.asynccontextmanager
async def session(
    cfg: SieveConfig, pool: ImapPool, timeout: float | None = None
) -> AsyncIterator[ManageSieveScripts]:
    """A logged-in ManageSieve session as the pool's user, closed after the block."""
    client = await ManageSieveClient.connect(
        endpoint(cfg, pool, timeout), pool.username, pool.login_password()
    )
    try:
        scripts = ManageSieveScripts(client)
        _found[pool] = (time.monotonic(), scripts.server)
        yield scripts
    finally:
        await client.close()


def known(pool: ImapPool) -> SieveServer | None:
    """What the last look found, without looking."""
    found = _found.get(pool)
    return None if found is None else found[1]


async def server(cfg: SieveConfig, pool: ImapPool) -> SieveServer | None:
    """What the account's ManageSieve server offers; None without one (remembered)."""
    if not cfg.enabled or isinstance(pool.login_password(), BearerToken):
        # an OAuth login has no password to give a ManageSieve server, and its token must
        # not go to a port nobody asked for
        _found[pool] = (time.monotonic(), None)
        return None
    seen = _found.get(pool)
    if seen is not None and (seen[1] is not None or time.monotonic() - seen[0] < NEGATIVE_SECONDS):
        return seen[1]
    found: SieveServer | None = None
    try:
        async with session(cfg, pool, LOOK_TIMEOUT) as scripts:
            found = scripts.server
    except (UpstreamUnavailable, AuthenticationFailed) as exc:
        log.info("no ManageSieve for %s: %s", pool.username, exc)
    _found[pool] = (time.monotonic(), found)
    return found
