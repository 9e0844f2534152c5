"""Looking for an account's ManageSieve server (``upstream.managesieve.server``): how often
it connects, and to whom it never gives a token.  A scripted server on loopback counts the
connections (the real servers are in tests/integration/test_vacation.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from imapjmap.config import ImapConfig, SieveConfig
from imapjmap.credentials import BearerToken
from imapjmap.imap.pool import ImapPool
from imapjmap.upstream import managesieve

GREETING = b'"IMPLEMENTATION" "Scripted"\r\n"SASL" "PLAIN"\r\n"SIEVE" "vacation"\r\nOK\r\n'


@contextlib.asynccontextmanager
async def scripted(login_ok: bool) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A ManageSieve server that answers every command OK (AUTHENTICATE: ``login_ok``)."""
    lines: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        while line := await reader.readline():
            lines.append(line)
            refused = line.startswith(b"AUTHENTICATE") and not login_ok
            writer.write(b'NO "refused"\r\n' if refused else b"OK\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], lines
    finally:
        server.close()


def pool(password: str) -> ImapPool:
    return ImapPool(ImapConfig(host="127.0.0.1", security="none"), "alice", password)


async def test_found_once_and_remembered() -> None:
    async with scripted(login_ok=True) as (port, lines):
        cfg, account = SieveConfig(port=port), pool("secret")
        found = await managesieve.server(cfg, account)
        assert found is not None and found.extensions == {"vacation"}
        assert await managesieve.server(cfg, account) == found
        assert managesieve.known(account) == found
    assert sum(line.startswith(b"AUTHENTICATE") for line in lines) == 1


async def test_a_refused_login_is_no_server_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    async with scripted(login_ok=False) as (port, lines):
        cfg, account = SieveConfig(port=port), pool("secret")
        assert await managesieve.server(cfg, account) is None
        assert await managesieve.server(cfg, account) is None  # remembered
        assert len([line for line in lines if line.startswith(b"AUTHENTICATE")]) == 1
        monkeypatch.setattr(managesieve, "NEGATIVE_SECONDS", 0.0)
        assert await managesieve.server(cfg, account) is None  # looked again
        assert len([line for line in lines if line.startswith(b"AUTHENTICATE")]) == 2


@pytest.mark.parametrize(
    ("cfg", "password"),
    [
        (SieveConfig(enabled=False), "secret"),
        (SieveConfig(), BearerToken("ya29.token")),  # an OAuth token goes to no ManageSieve
    ],
)
async def test_never_looked_for(cfg: SieveConfig, password: str) -> None:
    async with scripted(login_ok=True) as (port, lines):
        account = pool(password)
        assert (
            await managesieve.server(SieveConfig(enabled=cfg.enabled, port=port), account) is None
        )
        assert lines == []
