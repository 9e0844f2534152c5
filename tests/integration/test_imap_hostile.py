"""ImapSession against a broken or hostile server (failure injection: a scripted server on
loopback, since no real server misbehaves on request): a refusing greeting, a literal too
big to buffer, bytes that are not IMAP, a stray tagged line between commands.

What must hold (imapjmap.imap.session Rule 2, imapjmap.imap.framing Rule 3): the proxy never
waits out a timeout for what it can already tell is wrong, never buffers without bound, and
a connection whose stream position is lost is closed and never used again.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from imapjmap.config import ImapConfig
from imapjmap.errors import ImapProtocolViolation, ImapUnavailable
from imapjmap.imap.session import ImapSession

# what the scripted server answers to a command line (its tag filled in), or None: nothing
Script = Callable[[bytes], bytes | None]


def logs_in(then: Script) -> Script:
    """CAPABILITY and LOGIN succeed; every later command goes to ``then``."""

    def answer(line: bytes) -> bytes | None:
        verb = line.split(b" ")[1].upper() if b" " in line else b""
        if verb == b"CAPABILITY":
            return b"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n"
        if verb == b"LOGIN":
            return b"{tag} OK logged in\r\n"
        if verb == b"LOGOUT":
            return b"* BYE bye\r\n{tag} OK done\r\n"
        return then(line)

    return answer


@asynccontextmanager
async def scripted(greeting: bytes, script: Script) -> AsyncIterator[ImapConfig]:
    """A server on a free loopback port that sends ``greeting``, then answers each command
    line by ``script``; yields the config that reaches it."""
    writers: list[asyncio.StreamWriter] = []
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)  # awaited at the end, so none is cancelled mid-read
        writer.write(greeting)
        while line := await reader.readline():
            line = line.rstrip(b"\r\n")
            answer = script(line)
            if answer is not None:
                writer.write(answer.replace(b"{tag}", line.split(b" ")[0]))
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield ImapConfig(
            host="127.0.0.1", port=port, security="none", command_timeout=20, connect_timeout=20
        )
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_a_greeting_that_says_bye_fails_at_once() -> None:
    """A server that refuses the connection (``* BYE`` greeting) is unavailable at once, not
    after the connect timeout."""
    async with scripted(b"* BYE Too many connections\r\n", logs_in(lambda _: None)) as cfg:
        started = time.monotonic()
        with pytest.raises(ImapUnavailable, match="Too many connections"):
            await ImapSession.connect(cfg, "alice", "pw")
        assert time.monotonic() - started < 5


async def test_a_greeting_that_is_not_imap_fails_at_once() -> None:
    async with scripted(b"SSH-2.0-OpenSSH_9.2\r\n", logs_in(lambda _: None)) as cfg:
        started = time.monotonic()
        with pytest.raises(ImapUnavailable, match="not an IMAP response"):
            await ImapSession.connect(cfg, "alice", "pw")
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "answer",
    [
        # a literal announced far beyond the framer's limit: refused before any byte of it
        b"* 1 FETCH (BODY[] {99999999999}\r\n",
        # not an IMAP response at all
        b"HTTP/1.1 400 Bad Request\r\n",
        # a continuation request for a command that has no literal
        b"+ send more\r\n",
    ],
    ids=["huge literal", "not imap", "unasked continuation"],
)
async def test_a_reply_that_cannot_be_framed_breaks_and_closes_the_connection(
    answer: bytes,
) -> None:
    async with scripted(b"* OK ready\r\n", logs_in(lambda _: answer)) as cfg:
        session = await ImapSession.connect(cfg, "alice", "pw")
        started = time.monotonic()
        with pytest.raises(ImapProtocolViolation):
            await session.noop()
        assert time.monotonic() - started < 5, "must not wait for the command timeout"
        assert session.broken
        async with asyncio.timeout(5):
            await session.closed.wait()  # the proxy hung up: the stream position is lost


async def test_a_stray_tagged_line_between_commands_closes_the_connection() -> None:
    """Between commands only untagged responses may arrive (RFC 3501 §5.3): a tagged line
    nobody waits for means the two sides disagree about the stream."""
    stray = logs_in(lambda _: b"{tag} OK done\r\nX9 OK stray\r\n")
    async with scripted(b"* OK ready\r\n", stray) as cfg:
        session = await ImapSession.connect(cfg, "alice", "pw")
        await session.noop()
        async with asyncio.timeout(5):
            await session.closed.wait()
        assert session.broken
        with pytest.raises(ImapUnavailable):
            await session.noop()


async def test_untagged_responses_between_commands_are_kept() -> None:
    """Unasked untagged responses, one with a literal, are queued for watchers."""
    unasked = logs_in(lambda _: b"{tag} OK done\r\n* 3 EXISTS\r\n* 1 FETCH (BODY[] {3}\r\nabc)\r\n")
    async with scripted(b"* OK ready\r\n", unasked) as cfg:
        session = await ImapSession.connect(cfg, "alice", "pw")
        try:
            await session.noop()
            exists: list[int] = []
            bodies: list[bytes | None] = []
            async with asyncio.timeout(5):
                while not bodies:
                    await session.events.wait()
                    reply = session.take_unsolicited()
                    exists += [reply.exists] if reply.exists is not None else []
                    bodies += [f.sections.get("BODY[]") for f in reply.fetches]
            assert (exists, bodies) == ([3], [b"abc"])
            assert not session.broken
        finally:
            await session.close()


async def test_closing_while_idle_leaves_no_unretrieved_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A push watcher stopped while idling closes its session without IDLE's DONE: the
    command that will never complete must not be reported by asyncio as "Future exception
    was never retrieved" once the connection is gone."""
    idles = logs_in(lambda line: b"+ idling\r\n" if line.endswith(b" IDLE") else None)
    async with scripted(b"* OK ready\r\n", idles) as cfg:
        session = await ImapSession.connect(cfg, "alice", "pw")
        await session.idle_start()
        await session.close()
        async with asyncio.timeout(5):
            await session.closed.wait()
    del session
    gc.collect()
    assert "never retrieved" not in caplog.text
