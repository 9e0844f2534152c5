"""The session's ``submissionExtensions`` probe (RFC 8621 §7 ``submissionExtensions``,
``smtp`` Rule 5): clients that fetch the session at once share one probe of the SMTP
server, whether it answers (the real aiosmtpd sink) or not.

A counting TCP relay stands in front of the server, so the test sees how many connections
the probes made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from devservers import SmtpSink
from imapjmap import smtp
from imapjmap.config import SmtpConfig

CLIENTS = 20


class _Relay:
    """Accepts on a free loopback port, counts connections, and relays each to ``target``
    (or, with no target, closes it at once: a server that hangs up)."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.target is None:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def _relay(target: tuple[str, int] | None) -> AsyncIterator[_Relay]:
    async with _Relay(target) as relay:
        yield relay


def _cfg(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, security="none", auth="none", timeout=5.0)


async def test_sessions_fetched_at_once_share_one_probe_sub_ext(smtp_sink: SmtpSink) -> None:
    async with _relay((smtp_sink.host, smtp_sink.port)) as relay:
        cfg = _cfg(relay.port)
        answers = await asyncio.gather(*(smtp.ehlo_extensions(cfg) for _ in range(CLIENTS)))
        assert relay.connections == 1
        assert all(a == answers[0] for a in answers)
        assert answers[0]["DSN"] == [] and "PIPELINING" not in answers[0]
        assert await smtp.ehlo_extensions(cfg) == answers[0]  # learnt: no connection more
        assert relay.connections == 1


async def test_an_unreachable_server_is_probed_once_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _relay(None) as relay:
        cfg = _cfg(relay.port)
        with caplog.at_level(logging.WARNING, logger=smtp.__name__):
            answers = await asyncio.gather(*(smtp.ehlo_extensions(cfg) for _ in range(CLIENTS)))
        assert answers == [{}] * CLIENTS
        assert relay.connections == 1
        warnings = [r for r in caplog.records if "cannot learn" in r.getMessage()]
        assert len(warnings) == 1
        assert await smtp.ehlo_extensions(cfg) == {}  # within the minute: not probed again
        assert relay.connections == 1


async def test_a_caller_that_goes_away_leaves_the_probe_to_the_others(
    smtp_sink: SmtpSink,
) -> None:
    async with _relay((smtp_sink.host, smtp_sink.port)) as relay:
        cfg = _cfg(relay.port)
        first = asyncio.create_task(smtp.ehlo_extensions(cfg))
        await asyncio.sleep(0)  # its probe is out
        others = [asyncio.create_task(smtp.ehlo_extensions(cfg)) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        answers = await asyncio.gather(*others)
        assert all(a and a["DSN"] == [] for a in answers)
        assert relay.connections == 1
