"""The session's ``submissionExtensions`` probe (RFC 8621 §7 ``submissionExtensions``,
``smtp`` Rule 5): clients that fetch the session at once share one probe of the SMTP
server, whether it answers (the real aiosmtpd sink) or not.

The relay of the IMAP tests stands in front of the server, so the test sees how many
connections the probes made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from devservers import SmtpSink
from imapjmap import smtp
from imapjmap.config import SmtpConfig
from tests.integration.relay import Relay

CLIENTS = 20


@contextlib.asynccontextmanager
async def _hangs_up() -> AsyncIterator[list[int]]:
    """A server on a free loopback port that closes every connection at once; yields
    ``[port, connections so far]``."""
    seen = [0, 0]

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[1] += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    seen[0] = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()


def _cfg(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, security="none", auth="none", timeout=5.0)


async def test_sessions_fetched_at_once_share_one_probe_sub_ext(smtp_sink: SmtpSink) -> None:
    async with Relay(smtp_sink.host, smtp_sink.port) as relay:
        cfg = _cfg(relay.port)
        answers = await asyncio.gather(*(smtp.ehlo_extensions(cfg) for _ in range(CLIENTS)))
        assert relay.accepted == 1
        assert all(a == answers[0] for a in answers)
        assert answers[0]["DSN"] == [] and "PIPELINING" not in answers[0]
        assert await smtp.ehlo_extensions(cfg) == answers[0]  # learnt: no connection more
        assert relay.accepted == 1


async def test_an_unreachable_server_is_probed_once_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _hangs_up() as seen:
        cfg = _cfg(seen[0])
        with caplog.at_level(logging.WARNING, logger=smtp.__name__):
            answers = await asyncio.gather(*(smtp.ehlo_extensions(cfg) for _ in range(CLIENTS)))
        assert answers == [{}] * CLIENTS
        assert seen[1] == 1
        warnings = [r for r in caplog.records if "cannot learn" in r.getMessage()]
        assert len(warnings) == 1
        assert await smtp.ehlo_extensions(cfg) == {}  # within the minute: not probed again
        assert seen[1] == 1


async def test_a_caller_that_goes_away_leaves_the_probe_to_the_others(
    smtp_sink: SmtpSink,
) -> None:
    async with Relay(smtp_sink.host, smtp_sink.port) as relay:
        cfg = _cfg(relay.port)
        first = asyncio.create_task(smtp.ehlo_extensions(cfg))
        await asyncio.sleep(0)  # its probe is out
        others = [asyncio.create_task(smtp.ehlo_extensions(cfg)) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        answers = await asyncio.gather(*others)
        assert all(a and a["DSN"] == [] for a in answers)
        assert relay.accepted == 1
