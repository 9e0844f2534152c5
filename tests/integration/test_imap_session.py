"""ImapSession against the real Dovecot: login, extensions, parsing at scale, literals,
timeouts and what the server says between commands.

The stdlib ``imaplib`` connection (``imap_oracle``) is the independent second client: it makes
outside changes and is the reference for bytes that must come back unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import imaplib
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devservers.dovecot import SPECIAL_USE_FOLDERS, DovecotServer
from devservers.samplemail import SampleMessage, encode_mutf7, seed_maildir
from imapjmap.config import ImapConfig
from imapjmap.errors import (
    AuthenticationFailed,
    ImapCommandFailed,
    ImapProtocolViolation,
    ImapUnavailable,
)
from imapjmap.imap.commands import Command
from imapjmap.imap.models import MailboxStatus
from imapjmap.imap.pool import ImapPool
from imapjmap.imap.session import ImapSession
from tests.conftest import ImapUser, SeededUser, dovecot_root
from tests.integration.relay import Relay

pytestmark = pytest.mark.dovecot

QRESYNC_ENABLED = frozenset({"CONDSTORE", "QRESYNC"})


def config(user: ImapUser, **changes: object) -> ImapConfig:
    base = ImapConfig(host=user.host, port=user.port, security="none", command_timeout=30.0)
    return dataclasses.replace(base, **changes)


@contextlib.asynccontextmanager
async def logged_in(user: ImapUser, **changes: object) -> AsyncIterator[ImapSession]:
    session = await ImapSession.connect(config(user, **changes), user.username, user.password)
    try:
        yield session
    finally:
        await session.close()


def oracle_ok(result: tuple[str, list[object]]) -> list[object]:
    typ, data = result
    assert typ == "OK", data
    return data


def oracle_bodies(oracle: imaplib.IMAP4, mailbox: str) -> dict[int, bytes]:
    """UID → BODY[] as the stdlib client reads it (the reference bytes)."""
    oracle_ok(oracle.select(mailbox, readonly=True))
    data = oracle_ok(oracle.uid("FETCH", "1:*", "(UID BODY.PEEK[])"))
    bodies: dict[int, bytes] = {}
    for item in data:
        if isinstance(item, tuple):
            match = re.search(rb"UID (\d+)", item[0])
            assert match, item[0]
            bodies[int(match.group(1))] = item[1]
    return bodies


async def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- login


async def test_wrong_password_is_authentication_failed(imap_user: ImapUser) -> None:
    cfg = config(imap_user)
    for username, password in (
        (imap_user.username, imap_user.password + "x"),
        (imap_user.username, ""),
        ("nobody-" + secrets.token_hex(4), imap_user.password),
    ):
        with pytest.raises(AuthenticationFailed):
            await ImapSession.connect(cfg, username, password)
    async with logged_in(imap_user) as session:  # no lockout, the right password still works
        assert not session.broken


async def test_unreachable_server_is_unavailable_not_a_login_failure(imap_user: ImapUser) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # bound, not listening: connection refused
        cfg = dataclasses.replace(config(imap_user), port=closed_port, connect_timeout=5.0)
        with pytest.raises(ImapUnavailable):
            await ImapSession.connect(cfg, imap_user.username, imap_user.password)


@pytest.mark.parametrize(
    "password",
    ['Grüße, "Welt" \\ ✓ パスワード', 'quoted "and" back\\slash', "{5} literal-lookalike"],
    ids=["non-ascii", "quote-and-backslash", "brace"],
)
async def test_login_with_any_password(dovecot: DovecotServer, password: str) -> None:
    user = ImapUser("pw-" + secrets.token_hex(5), password, dovecot.host, dovecot.port)
    dovecot.add_user(user.username, user.password)
    async with logged_in(user) as session:
        assert "IMAP4REV1" in session.capabilities
        await session.noop()
    with pytest.raises(AuthenticationFailed):  # and a near miss is refused
        await ImapSession.connect(config(user), user.username, password[:-1])


@pytest.fixture(scope="module")
def dovecot_without_literal_plus(dovecot: DovecotServer) -> Iterator[DovecotServer]:
    with dovecot_root() as root:
        server = DovecotServer.start(root, remove_capabilities=["LITERAL+"])
        yield server
        server.stop()


async def test_non_ascii_login_with_synchronizing_literals(
    dovecot_without_literal_plus: DovecotServer,
) -> None:
    """Without LITERAL+ each literal waits for the server's "+" continuation."""
    server = dovecot_without_literal_plus
    user = ImapUser("sync-" + secrets.token_hex(5), "Kennwort-ÄÖÜ-✓", server.host, server.port)
    server.add_user(user.username, user.password)
    async with logged_in(user) as session:
        assert "LITERAL+" not in session.capabilities
        await session.select("INBOX")
        reply = await session.execute(
            Command(("UID SEARCH CHARSET UTF-8 SUBJECT ", ""), ("Grüße".encode(),)),
            what="SEARCH",
        )
        assert reply.searches[0].ids == ()
    with pytest.raises(AuthenticationFailed):
        await ImapSession.connect(config(user), user.username, "Kennwort-AOU-?")


# --------------------------------------------------------------------------- extensions


async def test_capabilities_and_enable(dovecot: DovecotServer, imap_user: ImapUser) -> None:
    async with logged_in(imap_user) as session:
        assert session.capabilities == {c.upper() for c in dovecot.capabilities}
        assert session.enabled == QRESYNC_ENABLED
        assert session.profile.kind == "dovecot" and session.server_id == {"name": "Dovecot"}
        assert session.has("list-status") and session.has("SPECIAL-USE")
        info = await session.select("INBOX")
        assert info.highestmodseq is not None and info.highestmodseq >= 1
        assert info.uidvalidity is not None and info.uidnext == 1


async def test_qresync_is_in_force_expunges_arrive_as_vanished(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    """ENABLE QRESYNC really took effect: the server now reports VANISHED, not EXPUNGE."""
    for n in range(3):
        oracle_ok(imap_oracle.append("INBOX", "", "", f"Subject: {n}\r\n\r\nx\r\n".encode()))
    async with logged_in(imap_user) as session:
        await session.select("INBOX")
        oracle_ok(imap_oracle.select("INBOX"))
        oracle_ok(imap_oracle.uid("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)"))
        oracle_ok(imap_oracle.expunge())
        reply = await session.noop()
        assert [list(v.uids) for v in reply.vanished] == [[2]]
        assert not reply.vanished[0].earlier
        assert reply.expunged == ()


async def test_list_status_covers_every_mailbox(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4
) -> None:
    async with logged_in(seeded_user) as session:
        lists, statuses = await session.list_mailboxes()
    expected_names = {"INBOX", *(name for name, _ in SPECIAL_USE_FOLDERS), *seeded_user.counts}
    assert {e.name for e in lists} == expected_names
    assert "Reisen/Übersicht" in expected_names  # decoded from modified UTF-7
    selectable = {e.name for e in lists if not e.has("\\Noselect")}
    by_name = {s.name: s for s in statuses}
    assert set(by_name) == selectable, "one STATUS per selectable mailbox, in the same trip"
    for name, status in by_name.items():
        assert status.messages == seeded_user.counts.get(name, 0), name
        assert status.uidvalidity and status.uidnext and status.highestmodseq, status
        assert status.unseen is not None
        assert status.x_guid is not None and re.fullmatch(r"[0-9a-f]{32}", status.x_guid)
    assert len({s.x_guid for s in statuses}) == len(statuses), "mailbox GUIDs are distinct"
    # the oracle agrees on what STATUS says
    oracle_ok(imap_oracle.noop())
    typ, data = imap_oracle.status("INBOX", "(UIDNEXT UIDVALIDITY)")
    assert typ == "OK"
    raw = data[0]
    assert isinstance(raw, bytes)
    assert f"UIDVALIDITY {by_name['INBOX'].uidvalidity}".encode() in raw
    assert f"UIDNEXT {by_name['INBOX'].uidnext}".encode() in raw
    roles = {
        e.name: a for e in lists for a in e.attributes if a in dict(SPECIAL_USE_FOLDERS).values()
    }
    assert roles == dict(SPECIAL_USE_FOLDERS)


# --------------------------------------------------------------------------- parsing at scale


def tiny_messages(count: int) -> list[SampleMessage]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        SampleMessage(
            folder="INBOX",
            flags=("\\Seen",) if n % 3 == 0 else (),
            internaldate=start + timedelta(minutes=n),
            raw=f"From: a@example.test\r\nSubject: tiny {n}\r\n\r\nbody {n}\r\n".encode(),
        )
        for n in range(count)
    ]


async def test_fetch_of_thousands_of_messages_parses_completely(
    dovecot: DovecotServer, imap_user: ImapUser
) -> None:
    """Thousands of small responses, each with a literal, arrive in few large reads: the
    iterative reader must neither recurse per line nor drop or merge a response."""
    count = 3000
    messages = tiny_messages(count)
    assert seed_maildir(dovecot, imap_user.username, messages) == {"INBOX": count}
    async with logged_in(imap_user) as session:
        info = await session.select("INBOX", readonly=True)
        assert info.exists == count
        reply = await session.execute(
            Command(
                ("UID FETCH 1:* (UID FLAGS MODSEQ RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",)
            ),
            what="FETCH",
        )
        assert not session.broken
    assert len(reply.fetches) == count
    assert [f.seq for f in reply.fetches] == list(range(1, count + 1))
    assert [f.uid for f in reply.fetches] == list(range(1, count + 1))
    for record, message in zip(reply.fetches, messages, strict=True):
        subject = record.sections["BODY[HEADER.FIELDS (SUBJECT)]"]
        assert subject == f"Subject: {message.subject}\r\n\r\n".encode()
        assert ("\\Seen" in (record.flags or ())) == ("\\Seen" in message.flags)
        assert record.size == len(message.raw)
        assert record.modseq is not None


async def test_message_bodies_come_back_byte_exact(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4
) -> None:
    folders = sorted({m.folder for m in seeded_user.messages})
    async with logged_in(seeded_user) as session:
        for folder in folders:
            await session.select(folder, readonly=True)
            reply = await session.execute(Command(("UID FETCH 1:* (UID BODY.PEEK[])",)))
            ours = {f.uid: f.sections["BODY[]"] for f in reply.fetches}
            assert ours == oracle_bodies(imap_oracle, f'"{encode_mutf7(folder)}"'), folder
            written = sorted(m.raw for m in seeded_user.messages if m.folder == folder)
            assert sorted(b for b in ours.values() if b is not None) == written, folder


async def test_literal_lookalikes_in_a_body(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    """A body full of IMAP syntax: only the byte count of the literal may decide."""
    raw = (
        b"Subject: =?utf-8?q?tricky?=\r\n"
        b"\r\n"
        b"a line ending like a literal {12}\r\n"
        b"* 1 FETCH (FLAGS (\\Seen))\r\n"
        b"A001 OK done\r\n"
        b"+ continue\r\n"
        b")\r\n"
        b"8-bit: Gr\xc3\xbc\xc3\x9fe, \xe2\x9c\x93\r\n"
        b"{0}\r\n"
    )
    oracle_ok(imap_oracle.append("INBOX", "", "", raw))
    async with logged_in(imap_user) as session:
        await session.select("INBOX")
        reply = await session.execute(
            Command(("UID FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT] FLAGS)",)), what="FETCH"
        )
        (record,) = reply.fetches
        assert record.sections["BODY[]"] == raw
        assert record.sections["BODY[TEXT]"] == raw.split(b"\r\n\r\n", 1)[1]
        assert record.flags is not None and "\\Seen" not in record.flags
        assert await session.noop()  # still in step with the server
    assert oracle_bodies(imap_oracle, "INBOX") == {1: raw}


# --------------------------------------------------------------------------- failures


async def test_tagged_no_leaves_the_session_usable(imap_user: ImapUser) -> None:
    async with logged_in(imap_user) as session:
        with pytest.raises(ImapCommandFailed) as caught:
            await session.select("No such mailbox " + secrets.token_hex(3))
        assert caught.value.what == "SELECT"  # Dovecot 2.3 sends no [NONEXISTENT] here
        assert not session.broken and session.selected is None
        assert (await session.select("INBOX")).exists == 0


async def test_tagged_bad_breaks_the_session(imap_user: ImapUser) -> None:
    async with logged_in(imap_user) as session:
        with pytest.raises(ImapProtocolViolation):
            await session.execute(Command(("FETCH-THIS-IS-NOT-A-COMMAND",)))
        assert session.broken
        with pytest.raises(ImapUnavailable):
            await session.noop()


async def test_command_timeout_marks_the_session_broken(imap_user: ImapUser) -> None:
    async with Relay(imap_user.host, imap_user.port) as relay:
        user = dataclasses.replace(imap_user, port=relay.port)
        async with logged_in(user, command_timeout=0.5) as session:
            await session.noop()
            relay.stall()
            started = time.monotonic()
            with pytest.raises(ImapUnavailable, match="timed out"):
                await session.noop()
            assert 0.4 < time.monotonic() - started < 5
            assert session.broken
            relay.resume()  # the late reply must not be taken for the next command's
            started = time.monotonic()
            with pytest.raises(ImapUnavailable):
                await session.noop()
            assert time.monotonic() - started < 0.2, "a broken session fails at once"


async def test_pool_replaces_a_connection_that_timed_out(imap_user: ImapUser) -> None:
    async with Relay(imap_user.host, imap_user.port) as relay:
        cfg = config(imap_user, port=relay.port, command_timeout=0.5, pool_size=1)
        pool = ImapPool(cfg, imap_user.username, imap_user.password)
        try:
            async with pool.session("INBOX") as first:
                pass
            relay.stall()
            with pytest.raises(ImapUnavailable):
                async with pool.session("INBOX") as again:
                    assert again is first
                    await again.noop()
            relay.resume()
            async with pool.session("INBOX") as fresh:
                assert fresh is not first
                assert (await fresh.noop()).tagged.status == "OK"
        finally:
            await pool.aclose()


async def test_connection_closed_by_the_server_while_idle(
    dovecot: DovecotServer, imap_user: ImapUser
) -> None:
    """A connection the server dropped between commands is broken at once: the next
    command fails fast (not after command_timeout) and the pool opens a new one."""
    cfg = config(imap_user, command_timeout=30.0, pool_size=1)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    try:
        async with pool.session("INBOX") as first:
            pass
        dovecot.doveadm("kick", imap_user.username)
        await wait_until(lambda: first.broken)
        started = time.monotonic()
        with pytest.raises(ImapUnavailable):
            await first.noop()
        assert time.monotonic() - started < 1
        async with asyncio.timeout(10), pool.session("INBOX") as second:
            assert second is not first
            await second.noop()
    finally:
        await pool.aclose()


async def test_closed_while_idling_leaves_no_unretrieved_error(imap_user: ImapUser) -> None:
    """A push watcher stopped in IDLE closes its session: the IDLE then fails as the
    connection goes, with nobody awaiting it; asyncio must not log "Future exception was
    never retrieved" for it."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        session = await ImapSession.connect(
            config(imap_user), imap_user.username, imap_user.password
        )
        await session.select("INBOX", readonly=True)
        await session.idle_start()
        closed = session.closed
        await session.close()
        await wait_until(closed.is_set)
        del session
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c["message"] for c in reported] == []


# --------------------------------------------------------------------------- unsolicited data


async def test_append_by_another_client_shows_in_the_next_reply(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    async with logged_in(imap_user) as session:
        info = await session.select("INBOX")
        assert info.exists == 0
        oracle_ok(imap_oracle.append("INBOX", "", "", b"Subject: one\r\n\r\n1\r\n"))
        oracle_ok(imap_oracle.append("INBOX", "", "", b"Subject: two\r\n\r\n2\r\n"))
        reply = await session.noop()
        assert reply.exists == 2
        fetched = await session.execute(Command(("UID FETCH 1:* (UID)",)), what="FETCH")
        assert [f.uid for f in fetched.fetches] == [1, 2]


async def test_notifications_between_commands_are_kept(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    """RFC 5465 NOTIFY: the server speaks while no command runs; nothing is lost."""
    async with logged_in(imap_user) as session:
        assert session.has("NOTIFY")
        await session.execute(
            Command(("NOTIFY SET (personal (MessageNew MessageExpunge))",)), what="NOTIFY"
        )
        assert session.take_unsolicited().statuses == ()
        oracle_ok(imap_oracle.append("Sent", "", "", b"Subject: sent\r\n\r\nx\r\n"))
        oracle_ok(imap_oracle.append("Sent", "", "", b"Subject: sent\r\n\r\ny\r\n"))
        seen: list[int] = []

        def sent_count() -> bool:
            seen.extend(s.messages or 0 for s in session.take_unsolicited().statuses)
            return 2 in seen

        await wait_until(sent_count)
        assert not session.broken
        assert (await session.noop()).tagged.status == "OK"


async def test_many_sequential_commands_stay_in_step(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    """Tags, literals and replies stay paired over many commands on one connection."""
    for n in range(20):
        oracle_ok(imap_oracle.append("INBOX", "", "", f"Subject: {n}\r\n\r\n{n}\r\n".encode()))
    async with logged_in(imap_user) as session:
        await session.select("INBOX")
        for n in range(1, 21):
            reply = await session.execute(
                Command((f"UID FETCH {n} (UID BODY.PEEK[TEXT])",)), what="FETCH"
            )
            (record,) = reply.fetches
            assert record.uid == n
            assert record.sections["BODY[TEXT]"] == f"{n - 1}\r\n".encode()


# ------------------------------------------- LIST-STATUS with a mailbox selected (engine Rule 5)


def oracle_status(oracle: imaplib.IMAP4, name: str) -> dict[str, int]:
    data = oracle_ok(oracle.status(name, "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"))
    raw = data[0]
    assert isinstance(raw, bytes)
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", raw)}


def as_dict(status: MailboxStatus) -> dict[str, int | None]:
    return {
        "MESSAGES": status.messages,
        "UIDNEXT": status.uidnext,
        "UIDVALIDITY": status.uidvalidity,
        "HIGHESTMODSEQ": status.highestmodseq,
    }


async def test_list_status_of_the_selected_mailbox_is_never_stale(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    """Dovecot answers the selected mailbox's STATUS from the session's view, stale until the
    session syncs.  ``list_mailboxes(sync_selected=True)`` pipelines a NOOP behind the LIST:
    whatever the NOOP reports leaves that STATUS out (the caller asks again), so what is
    returned is always what a second client sees — after another client's APPEND, flag
    change, EXPUNGE, and delete-and-recreate of the selected mailbox."""
    oracle_ok(imap_oracle.create("Anchor"))
    oracle_ok(imap_oracle.append("Anchor", None, None, b"Subject: one\r\n\r\n1\r\n"))
    oracle_ok(imap_oracle.append("Anchor", None, None, b"Subject: two\r\n\r\n2\r\n"))

    async def listed() -> dict[str, int | None] | None:
        _, statuses = await session.list_mailboxes(sync_selected=True)
        got = [s for s in statuses if s.name == "Anchor"]
        return as_dict(got[0]) if got else None

    async with logged_in(imap_user) as session:
        await session.select("Anchor", readonly=True)
        assert await listed() == oracle_status(imap_oracle, "Anchor"), "nothing changed"
        changes = [
            lambda: imap_oracle.append("Anchor", None, None, b"Subject: 3\r\n\r\n3\r\n"),
            lambda: imap_oracle.uid("STORE", "1", "+FLAGS", "(\\Flagged)"),
            lambda: imap_oracle.uid("STORE", "2", "+FLAGS", "(\\Deleted)"),
            lambda: imap_oracle.expunge(),
        ]
        oracle_ok(imap_oracle.select("Anchor"))
        for change in changes:
            oracle_ok(change())
            first = await listed()
            truth = oracle_status(imap_oracle, "Anchor")
            assert first in (None, truth), "left out (changed), or current"
            assert await listed() == truth, "the next LIST finds the view current"
        oracle_ok(imap_oracle.close())
        old_guid = (await session.status("Anchor", "X-GUID")).x_guid
        oracle_ok(imap_oracle.delete("Anchor"))
        oracle_ok(imap_oracle.create("Anchor"))
        appended = oracle_ok(
            imap_oracle.append("Anchor", None, None, b"Subject: new\r\n\r\nnew\r\n")
        )
        _, statuses = await session.list_mailboxes(sync_selected=True)
        (recreated,) = [s for s in statuses if s.name == "Anchor"]
        # compared with what the APPEND said, not with a STATUS: right after this, Dovecot
        # can answer other sessions' STATUS of the recreated Maildir with NO [SERVERBUG]
        # ("duplicate transaction log sequence") for some seconds, as with any client that
        # had the old mailbox open (which is why the refresh keeps INBOX selected)
        code = re.search(rb"APPENDUID (\d+) (\d+)", bytes(appended[0]))  # type: ignore[arg-type]
        assert code is not None, appended
        assert recreated.uidvalidity == int(code[1])
        assert (recreated.messages, recreated.uidnext) == (1, int(code[2]) + 1)
        assert recreated.x_guid != old_guid
        assert session.selected is None, "the dead view was left"
        assert (await session.noop()).tagged.status == "OK"
