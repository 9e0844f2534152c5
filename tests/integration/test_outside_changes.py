"""Changes made by other IMAP clients while a JMAP client works on the same account.

The sequence of an outside report (Dovecot, fresh account): client A creates mailbox X;
JMAP sees it; client B appends a message to X; JMAP sees it; JMAP sets ``$seen`` and
``$flagged``, then unsets ``$seen``; B logs out; A creates mailbox Y.  Y must be in the
very next ``Mailbox/get`` (RFC 8621 §2, MBX-01: the Mailbox objects are the account's
mailboxes; without a push listener every request asks the upstream), and within the push
latency when a listener is open.  Run on every upstream, the Gmail emulation included
(``tests/integration/test_gmail.py``).  Every IMAP call runs in a thread, so the proxy
keeps working meanwhile as it would beside real clients.
"""

from __future__ import annotations

import asyncio
import imaplib
import time
from collections.abc import Callable
from typing import Any

import pytest

from imapjmap.imap.session import ImapSession
from tests.conftest import ImapUser
from tests.integration.conftest import Jmap
from tests.integration.pushkit import open_events

MESSAGE = (
    b"From: B <b@example.org>\r\nTo: a@example.org\r\nSubject: from b\r\n"
    b"Message-ID: <from-b@example.org>\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nhello\r\n"
)
PUSH_LATENCY = 3.0  # seconds: NOTIFY, or the LIST-STATUS comparison without it


async def names(jmap: Jmap) -> dict[str, str]:
    got = await jmap.ok("Mailbox/get", {"ids": None, "properties": ["name"]})
    return {box["name"]: box["id"] for box in got["list"]}


async def ok(call: Callable[..., tuple[str, Any]], *args: Any) -> None:
    typ, data = await asyncio.to_thread(call, *args)
    assert typ == "OK", data


async def within(seconds: float, what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` every 250 ms (as the reporting client did) until it is truthy."""
    deadline = time.monotonic() + seconds
    while not (found := await check()):
        assert time.monotonic() < deadline, f"{what}: not seen within {seconds} s"
        await asyncio.sleep(0.25)
    return found


async def another_client_creates_mailboxes(
    jmap: Jmap, connect: Callable[[], imaplib.IMAP4], *, push: bool
) -> None:
    """The reported sequence; see the module docstring."""
    wait = PUSH_LATENCY if push else 0.0  # without push: the very next request
    a = await asyncio.to_thread(connect)
    try:
        await ok(a.create, "X")
        x = await within(wait, "X", lambda: _id_of(jmap, "X"))
        b = await asyncio.to_thread(connect)
        await ok(b.append, "X", "", imaplib.Time2Internaldate(time.time()), MESSAGE)

        async def in_x() -> list[str]:
            got = await jmap.ok("Email/query", {"filter": {"inMailbox": x}})
            return list(got["ids"])

        (email,) = await within(wait, "the message in X", in_x)
        both = {"keywords/$seen": True, "keywords/$flagged": True}
        for patch in (both, {"keywords/$seen": None}):
            got = await jmap.ok("Email/set", {"update": {email: patch}})
            assert got["updated"] == {email: None}, got
        await asyncio.to_thread(b.logout)
        await ok(a.create, "Y")
        await within(wait, "Y", lambda: _id_of(jmap, "Y"))
        got = await jmap.ok("Email/get", {"ids": [email], "properties": ["keywords"]})
        assert got["list"][0]["keywords"] == {"$flagged": True}
    finally:
        await asyncio.to_thread(a.logout)


async def _id_of(jmap: Jmap, name: str) -> str | None:
    return (await names(jmap)).get(name)


@pytest.mark.parametrize("push", [False, True], ids=["requests", "push"])
async def test_mailbox_created_by_another_client_is_seen_at_once_mbx_01(
    jmap: Jmap, imap_user: ImapUser, push: bool
) -> None:
    if push:
        events = await open_events(jmap)
        await events.next()
    await another_client_creates_mailboxes(jmap, imap_user.connect, push=push)
    if push:
        events.resp.close()


async def test_a_request_does_not_join_a_refresh_that_listed_before_it_came_mbx_01(
    jmap: Jmap, imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request arriving while a refresh runs may share that run only if the run's LIST
    has not gone out yet.  Here the first request's run is held right after its LIST;
    another client creates Y; a second request comes: it must list again, not take the
    first run's answer (which cannot show Y) for its own."""
    await names(jmap)  # the first sync is done
    listed, release = asyncio.Event(), asyncio.Event()
    original = ImapSession.list_mailboxes

    async def held(session: ImapSession, **kwargs: Any) -> Any:
        result = await original(session, **kwargs)
        if not listed.is_set():
            listed.set()
            await release.wait()
        return result

    monkeypatch.setattr(ImapSession, "list_mailboxes", held)
    first = asyncio.create_task(names(jmap))
    await asyncio.wait_for(listed.wait(), 10)
    a = await asyncio.to_thread(imap_user.connect)
    try:
        await ok(a.create, "Y")
    finally:
        await asyncio.to_thread(a.logout)
    second = asyncio.create_task(names(jmap))
    await asyncio.sleep(0.2)  # the second request is waiting on the held run
    assert not second.done()
    release.set()
    assert "Y" not in await first  # listed before Y existed: right for the first request
    assert "Y" in await second
